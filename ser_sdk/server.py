"""The HTTP and WebSocket service (aiohttp): one engine, many clients.

Endpoints:

- ``GET /healthz``: liveness, the model id and the number of open sessions;
- ``GET /v1/info``: the model, VAD, engine settings, plugins and limits;
- ``POST /v1/classify``: the body is one audio file (anything libsndfile reads),
  the answer its scores as a whole clip (no VAD);
- ``GET /v1/stream``: a WebSocket carrying one live session. The client sends
  binary PCM16 little-endian frames (``sample_rate`` and ``channels`` query
  parameters, default 16000 and 1) and optional JSON text messages:
  ``{"type": "end"}`` flushes the session, sends its last events and closes;
  ``{"type": "reply", "text": ..., "id": ...}`` is answered with a
  ``reply.advice`` message from the plugins' ``adapt_reply`` chain. The server
  sends every event of the session as one JSON text message. A malformed
  message or a bad audio frame is answered with ``{"type": "error", ...}`` and
  the session goes on; a frame over ``max_frame_bytes`` closes the socket with
  code 1009 (message too big). However the socket ends, the session is closed
  gracefully: its last utterance is still classified and plugins see it.

Every error body is JSON: ``{"error": "<ErrorType>", "message": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import __version__
from .audio import SAMPLE_RATE, load_audio
from .errors import (
    AudioError,
    AudioFormatError,
    ConfigError,
    SerError,
    SessionClosedError,
)
from .events import ReplyAdvice

if TYPE_CHECKING:
    from .config import SdkConfig
    from .engine import EmotionEngine, Session

logger = logging.getLogger("ser_sdk.server")

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest ``/v1/classify`` body: about 13 minutes of 16 kHz PCM16 WAV, far beyond a sensible clip."""
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
"""Largest WebSocket message: 10 s of 48 kHz stereo PCM16 fits with room to spare."""
MAX_CONTROL_CHARS = 64 * 1024

ENGINE_KEY = web.AppKey("engine", object)
SOCKETS_KEY = web.AppKey("websockets", weakref.WeakSet)
LIMITS_KEY = web.AppKey("limits", dict)


def error_body(error: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "message": message, **extra}


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response(error_body(error, message), status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn aiohttp's plain-text HTTP errors and unexpected failures into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(
            error_body(type(exc).__name__, exc.reason), status=exc.status, headers=_allow_header(exc)
        )
    except Exception as exc:
        logger.exception("%s %s failed", request.method, request.path)
        return json_error(500, type(exc).__name__, "internal server error")


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


# --------------------------------------------------------------------------- plain HTTP


async def healthz(request: web.Request) -> web.Response:
    engine = _engine(request.app)
    return web.json_response(
        {"status": "ok", "model_id": engine.model_id, "open_sessions": len(engine.sessions)}
    )


async def info(request: web.Request) -> web.Response:
    engine = _engine(request.app)
    classifier = engine.classifier
    model_info = getattr(classifier, "info", None)
    return web.json_response(
        {
            "version": __version__,
            "model_id": engine.model_id,
            "labels": list(getattr(classifier, "labels", ())),
            "model": model_info.model_dump(mode="json") if model_info is not None else None,
            "vad": engine.vad_config.model_dump(mode="json"),
            "engine": engine.config.model_dump(mode="json"),
            "plugins": [plugin.name for plugin in engine.plugins],
            "limits": request.app[LIMITS_KEY],
        }
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge(request.content_length, limit)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise _TooLarge(None, limit)
    return bytes(body)


class _TooLarge(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(f"the upload is {said}; the limit is {limit} bytes")


async def classify(request: web.Request) -> web.Response:
    engine = _engine(request.app)
    limit = request.app[LIMITS_KEY]["max_upload_bytes"]
    try:
        body = await _read_body(request, limit)
    except _TooLarge as exc:
        # Say so and close: the rest of an oversized body is not worth reading.
        response = json_error(413, "PayloadTooLarge", str(exc))
        response.force_close()
        return response
    name = request.query.get("filename") or "upload"
    try:
        samples = await asyncio.to_thread(load_audio, _Named(body, name))
        scores = await engine.classify(samples)
    except AudioError as exc:
        return json_error(400, type(exc).__name__, str(exc))
    except SerError as exc:
        logger.error("classify failed: %s", exc)
        return json_error(503, type(exc).__name__, str(exc))
    return web.json_response(
        {
            "label": scores.label,
            "confidence": scores.confidence,
            "scores": scores.as_dict(),
            "duration": len(samples) / SAMPLE_RATE,
            "model_id": engine.model_id,
        }
    )


class _Named:
    """A binary file object with a name, so decode errors name the upload."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self.name = name

    def read(self) -> bytes:
        return self._data


# --------------------------------------------------------------------------- WebSocket


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise AudioFormatError(f"query parameter {name}={raw!r} is not an integer") from None


class _StreamConnection:
    """One WebSocket client and its session: audio in, events and answers out."""

    def __init__(self, ws: web.WebSocketResponse, session: Session) -> None:
        self.ws = ws
        self.session = session
        self._send_lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any] | str) -> None:
        """Send one JSON message; after the client has gone, quietly nothing."""
        text = payload if isinstance(payload, str) else json.dumps(payload)
        async with self._send_lock:
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:  # closing transport
                logger.debug("session %s: could not send to the client: %s", self.session.session_id, exc)

    async def error(self, error: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", **error_body(error, message, **extra)})

    async def pump_events(self) -> None:
        """Forward every session event, in order, until ``session.end``."""
        async for event in self.session.events():
            await self.send(event.model_dump_json())

    async def receive(self) -> None:
        """Handle client messages until it ends the session or goes away."""
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                if not await self._audio(message.data):
                    return
            elif message.type == WSMsgType.TEXT:
                if await self._control(message.data):
                    return
            elif message.type == WSMsgType.ERROR:
                logger.info("session %s: WebSocket error: %s", self.session.session_id, self.ws.exception())
                return

    async def _audio(self, data: bytes) -> bool:
        """Feed one frame; False once the session is closed (the engine was closed under it)."""
        try:
            await self.session.feed(data)
        except SessionClosedError:
            return False
        except AudioError as exc:
            await self.error(type(exc).__name__, str(exc))
        return True

    async def _control(self, text: str) -> bool:
        """Handle one control message; True when the client asked to end."""
        if len(text) > MAX_CONTROL_CHARS:
            await self.error(
                "InvalidMessage", f"control messages are limited to {MAX_CONTROL_CHARS} characters"
            )
            return False
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.error("InvalidMessage", f"not valid JSON: {exc}")
            return False
        if not isinstance(message, dict):
            await self.error("InvalidMessage", f"expected a JSON object, got {type(message).__name__}")
            return False
        kind = message.get("type")
        if kind == "end":
            return True
        if kind == "reply":
            await self._reply(message)
            return False
        await self.error(
            "InvalidMessage", f"unknown message type {kind!r} (expected 'end' or 'reply')", received=kind
        )
        return False

    async def _reply(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        text = message.get("text")
        if not isinstance(text, str):
            await self.error("InvalidMessage", "a reply message needs a string 'text'", id=request_id)
            return
        advice = await self.session.adapt_reply(ReplyAdvice(text=text))
        await self.send({"type": "reply.advice", "id": request_id, "advice": advice.model_dump(mode="json")})


async def stream(request: web.Request) -> web.StreamResponse:
    engine = _engine(request.app)
    try:
        sample_rate = _int_param(request, "sample_rate", 16000)
        channels = _int_param(request, "channels", 1)
        session = engine.session(
            sample_rate=sample_rate,
            channels=channels,
            metadata={"remote": request.remote, "transport": "websocket"},
        )
    except AudioError as exc:
        return json_error(400, type(exc).__name__, str(exc))
    except SessionClosedError as exc:
        return json_error(503, type(exc).__name__, str(exc))

    ws = web.WebSocketResponse(max_msg_size=request.app[LIMITS_KEY]["max_frame_bytes"], heartbeat=30.0)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    connection = _StreamConnection(ws, session)
    try:
        await session.start()
    except SerError as exc:
        await connection.error(type(exc).__name__, str(exc))
        await ws.close(code=WSCloseCode.INTERNAL_ERROR)
        return ws
    pump = asyncio.create_task(connection.pump_events(), name=f"ser-sdk-ws-{session.session_id}")
    try:
        await connection.receive()
    finally:
        # Shielded: even when the handler is cancelled (client gone, server stopping),
        # the last utterance is classified, plugins see the end, and the events go out.
        await asyncio.shield(_finish(connection, pump))
    return ws


async def _finish(connection: _StreamConnection, pump: asyncio.Task[None]) -> None:
    try:
        await connection.session.close()
        await pump
    except Exception:
        logger.exception("session %s did not close cleanly", connection.session.session_id)
    finally:
        if not connection.ws.closed:
            await connection.ws.close()


# --------------------------------------------------------------------------- application


def _engine(app: web.Application) -> EmotionEngine:
    return app[ENGINE_KEY]  # type: ignore[return-value]


def create_app(
    engine: EmotionEngine,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> web.Application:
    """The service around ``engine``. The app owns it: it starts with the app and closes with it."""
    if max_upload_bytes < 1 or max_frame_bytes < 1:
        raise ConfigError("max_upload_bytes and max_frame_bytes must be positive")
    # client_max_size backs up the streaming check in classify() for any other body read.
    app = web.Application(middlewares=[_json_errors], client_max_size=max_upload_bytes)
    app[ENGINE_KEY] = engine
    app[SOCKETS_KEY] = weakref.WeakSet()
    app[LIMITS_KEY] = {"max_upload_bytes": max_upload_bytes, "max_frame_bytes": max_frame_bytes}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/info", info)
    app.router.add_post("/v1/classify", classify)
    app.router.add_get("/v1/stream", stream)
    app.on_startup.append(_start_engine)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_close_engine)
    return app


async def _start_engine(app: web.Application) -> None:
    await _engine(app).start()  # load the model before the first request, fail fast if it cannot


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS_KEY]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _close_engine(app: web.Application) -> None:
    await _engine(app).close()


def run(
    config: SdkConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    source: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM close the sessions gracefully, then the engine).

    ``source`` (the config file's name) prefixes plugin config errors;
    ``announce`` receives a line saying where the service listens.
    """
    from .config import SdkConfig
    from .engine import EmotionEngine

    config = config if config is not None else SdkConfig()
    engine = EmotionEngine.from_config(config, source=source)
    app = create_app(engine, max_upload_bytes=max_upload_bytes, max_frame_bytes=max_frame_bytes)
    access_log = logging.getLogger("ser_sdk.server.access")
    web.run_app(
        app,
        host=host,
        port=port,
        print=(lambda _: announce(f"serving on http://{host}:{port} (Ctrl-C to stop)")) if announce else None,
        access_log=access_log,
    )
