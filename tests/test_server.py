"""The aiohttp service, against a real server on 127.0.0.1 and a real aiohttp client."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from helpers import PHRASES, SR, phrases_signal, silence, speech_like

from ser_sdk.audio import float_to_pcm16, load_audio
from ser_sdk.engine import EmotionEngine
from ser_sdk.events import LABELS, EmotionEvent, ReplyAdvice, SessionEndEvent, SessionState
from ser_sdk.model import EmotionModel
from ser_sdk.plugin import Plugin
from ser_sdk.server import _StreamConnection, create_app

FRAME_MS = 20


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def model(model_dir: Path) -> EmotionModel:
    return EmotionModel.load(model_dir)


def encode(samples: np.ndarray, rate: int = SR, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


def pcm_frames(samples: np.ndarray, rate: int = SR, channels: int = 1) -> list[bytes]:
    """Interleaved PCM16 frames of 20 ms, as a live client sends them."""
    pcm = float_to_pcm16(samples)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    step = rate * FRAME_MS // 1000
    return [pcm[start : start + step].tobytes() for start in range(0, len(pcm), step)]


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(samples, SR, rate).astype(np.float32)


class Recorder(Plugin):
    """Remembers what the engine delivered, and marks session ends."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.emotions: list[EmotionEvent] = []
        self.ended = asyncio.Event()

    async def on_emotion(self, event: EmotionEvent, state: SessionState) -> None:
        self.emotions.append(event)

    async def on_session_end(self, event: SessionEndEvent, state: SessionState) -> None:
        self.ended.set()


class Calm(Plugin):
    """Adds one tone instruction to every reply, and notes how many utterances the state held."""

    name = "calm"

    async def adapt_reply(self, advice: ReplyAdvice, state: SessionState) -> ReplyAdvice:
        return advice.model_copy(
            update={
                "tone_instructions": [*advice.tone_instructions, "Be calm."],
                "hints": {**advice.hints, "utterances": state.utterances},
            }
        )


Serve = Callable[..., Awaitable[tuple[TestClient, EmotionEngine]]]


@pytest.fixture
async def serve(model: EmotionModel) -> AsyncIterator[Serve]:
    """Start a real server (127.0.0.1, a free port) around a fresh engine and return a client for it."""
    clients: list[TestClient] = []

    async def start(plugins: tuple[Plugin, ...] = (), **limits: Any) -> tuple[TestClient, EmotionEngine]:
        engine = EmotionEngine(model, plugins=plugins)
        client = TestClient(TestServer(create_app(engine, **limits), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, engine

    yield start
    for client in clients:
        await client.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition that the server reaches on its own schedule."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def collect(ws: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every JSON message until the server closes the socket."""

    async def read() -> list[dict[str, Any]]:
        messages = []
        async for message in ws:
            assert message.type == WSMsgType.TEXT, message
            messages.append(json.loads(message.data))
        return messages

    return await asyncio.wait_for(read(), timeout)


# --------------------------------------------------------------------------- plain HTTP


async def test_health_and_info(serve: Serve, model: EmotionModel) -> None:
    client, _ = await serve(plugins=(Calm(),))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "model_id": model.model_id, "open_sessions": 0}
    info = await (await client.get("/v1/info")).json()
    assert info["model_id"] == model.model_id
    assert info["labels"] == list(LABELS)
    assert info["model"]["temperature"] == model.info.temperature
    assert info["vad"]["frame_ms"] == 30
    assert info["plugins"] == ["calm"]
    assert info["limits"]["max_upload_bytes"] > 0


async def test_classify_a_synthetic_clip_like_the_model_does(serve: Serve, model: EmotionModel) -> None:
    client, _ = await serve()
    clip = np.stack([speech_like(1.6, seed=3), speech_like(1.6, seed=4)], axis=1)
    body = encode(clip, rate=44100, fmt="FLAC")
    response = await client.post("/v1/classify", data=body, headers={"Content-Type": "audio/flac"})
    assert response.status == 200
    result = await response.json()
    expected = model.classify([load_audio(body)])[0]
    assert result["label"] == expected.label
    assert result["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert result["scores"] == pytest.approx(expected.as_dict(), abs=1e-6)
    assert result["duration"] == pytest.approx(len(clip) / 44100, abs=0.001)
    assert result["model_id"] == model.model_id


async def test_classify_a_real_clip(
    serve: Serve, model: EmotionModel, cremad_clips: dict[str, list[Path]]
) -> None:
    client, _ = await serve()
    path = cremad_clips["angry"][0]
    response = await client.post("/v1/classify", data=path.read_bytes())
    assert response.status == 200
    result = await response.json()
    assert result["label"] in LABELS
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    expected = model.classify([load_audio(path)])[0]
    assert result["scores"] == pytest.approx(expected.as_dict(), abs=1e-6)


async def test_classify_refuses_oversized_uploads(serve: Serve) -> None:
    client, _ = await serve(max_upload_bytes=10_000)
    body = encode(speech_like(1.0))  # 32 kB of PCM16
    response = await client.post("/v1/classify", data=body)
    assert response.status == 413
    error = await response.json()
    assert error["error"] == "PayloadTooLarge"
    assert str(len(body)) in error["message"] and "10000" in error["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield body[:6000]
        yield body[6000:10_001]

    response = await client.post("/v1/classify", data=chunked())
    assert response.status == 413
    assert (await response.json())["error"] == "PayloadTooLarge"
    # The service is still there for well-sized uploads.
    response = await client.post("/v1/classify", data=encode(speech_like(0.25)))
    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "error", "phrase"),
    [
        (b"this is not audio at all", "AudioDecodeError", "not a recognised audio format"),
        (b"", "EmptyAudioError", "empty"),
        (encode(speech_like(2.0), fmt="FLAC")[:300], "AudioDecodeError", "upload"),
        (encode(np.zeros(0, dtype=np.float32)), "EmptyAudioError", "no audio"),
    ],
    ids=["text", "empty-body", "truncated-flac", "zero-frames"],
)
async def test_classify_rejects_bad_audio_with_a_typed_error(
    serve: Serve, body: bytes, error: str, phrase: str
) -> None:
    client, _ = await serve()
    response = await client.post("/v1/classify", data=body)
    assert response.status == 400
    result = await response.json()
    assert result["error"] == error
    assert phrase in result["message"]


async def test_http_errors_are_json(serve: Serve) -> None:
    client, _ = await serve()
    response = await client.get("/v1/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"] == "HTTPNotFound"
    response = await client.get("/v1/classify")
    assert response.status == 405
    assert (await response.json())["error"] == "HTTPMethodNotAllowed"
    assert "POST" in response.headers["Allow"]


# --------------------------------------------------------------------------- WebSocket stream


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 2)])
async def test_stream_delivers_every_event_in_order(serve: Serve, rate: int, channels: int) -> None:
    client, engine = await serve()
    signal = phrases_signal() if rate == SR else resample(phrases_signal(), rate)
    async with client.ws_connect(f"/v1/stream?sample_rate={rate}&channels={channels}") as ws:
        for frame in pcm_frames(signal, rate, channels):
            await ws.send_bytes(frame)
        await ws.send_json({"type": "end"})
        messages = await collect(ws)
    types = [message["type"] for message in messages]
    assert types[0] == "session.start" and messages[0]["sample_rate"] == rate
    assert types[-1] == "session.end"
    assert types.count("speech.start") == types.count("utterance") == len(PHRASES)
    emotions = [message for message in messages if message["type"] == "emotion"]
    assert len(emotions) == len(PHRASES)
    for event, (start, end) in zip(emotions, PHRASES, strict=True):
        assert start - 0.45 <= event["start"] <= start + 0.2
        assert end - 0.2 <= event["end"] <= end + 0.45
        assert event["label"] in LABELS
        assert sum(event["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    assert len({message["session_id"] for message in messages}) == 1
    assert messages[-1]["utterances"] == len(PHRASES)
    assert engine.sessions == ()


async def test_stream_a_real_conversation(serve: Serve, cremad_clips: dict[str, list[Path]]) -> None:
    client, _ = await serve()
    clips = [load_audio(cremad_clips[label][5]) for label in ("angry", "neutral")]
    signal = np.concatenate([silence(0.5), clips[0], silence(1.2), clips[1], silence(1.2)])
    bounds = [(0.5, 0.5 + len(clips[0]) / SR)]
    bounds.append((bounds[0][1] + 1.2, bounds[0][1] + 1.2 + len(clips[1]) / SR))
    async with client.ws_connect("/v1/stream") as ws:
        for frame in pcm_frames(signal):
            await ws.send_bytes(frame)
        await ws.send_json({"type": "end"})
        messages = await collect(ws)
    emotions = [message for message in messages if message["type"] == "emotion"]
    assert emotions, [message["type"] for message in messages]
    for clip_start, clip_end in bounds:  # each clip's speech is heard and classified
        inside = [e for e in emotions if e["start"] < clip_end and e["end"] > clip_start]
        assert inside
        assert all(clip_start - 0.5 <= e["start"] and e["end"] <= clip_end + 0.5 for e in inside)


async def test_malformed_control_messages_answer_errors_and_the_session_goes_on(serve: Serve) -> None:
    client, _ = await serve()
    async with client.ws_connect("/v1/stream") as ws:
        await ws.send_str("this is not json")
        await ws.send_str("[1, 2, 3]")
        await ws.send_json({"type": "dance"})
        await ws.send_json({"type": "reply", "id": "r1"})
        await ws.send_str("x" * 70_000)
        await ws.send_bytes(b"\x01")  # half a sample: kept until its other byte arrives
        await ws.send_bytes(b"\x00")
        for frame in pcm_frames(phrases_signal()):
            await ws.send_bytes(frame)
        await ws.send_json({"type": "reply", "id": "r2", "text": "Sure, let me check."})
        await ws.send_json({"type": "end"})
        messages = await collect(ws)
    errors = [message for message in messages if message["type"] == "error"]
    assert [error["error"] for error in errors] == ["InvalidMessage"] * 5
    assert "not valid JSON" in errors[0]["message"]
    assert "expected a JSON object" in errors[1]["message"]
    assert "unknown message type 'dance'" in errors[2]["message"]
    assert errors[3]["id"] == "r1" and "'text'" in errors[3]["message"]
    assert "limited to" in errors[4]["message"]
    advice = next(message for message in messages if message["type"] == "reply.advice")
    assert advice["id"] == "r2"
    assert advice["advice"]["text"] == "Sure, let me check."
    assert advice["advice"]["applied_by"] == []
    assert [m["type"] for m in messages].count("emotion") == len(PHRASES)
    assert messages[-1]["type"] == "session.end"


async def test_reply_goes_through_the_plugin_chain_after_the_speech_is_scored(serve: Serve) -> None:
    recorder = Recorder()
    client, _ = await serve(plugins=(recorder, Calm()))
    async with client.ws_connect("/v1/stream") as ws:
        for frame in pcm_frames(phrases_signal()):
            await ws.send_bytes(frame)
        await ws.send_json({"type": "reply", "id": 7, "text": "Hello!"})
        reply = None
        async for message in ws:
            data = json.loads(message.data)
            if data["type"] == "reply.advice":
                reply = data
                break
        await ws.send_json({"type": "end"})
        await collect(ws)
    assert reply is not None and reply["id"] == 7
    assert reply["advice"]["tone_instructions"] == ["Be calm."]
    assert reply["advice"]["applied_by"] == ["calm"]
    # The reply waited until every phrase the VAD had closed was scored and in the state.
    assert reply["advice"]["hints"] == {"utterances": len(PHRASES)}


async def test_oversized_frame_closes_with_1009_and_the_session_ends(serve: Serve) -> None:
    recorder = Recorder()
    client, engine = await serve(plugins=(recorder,), max_frame_bytes=4096)
    async with client.ws_connect("/v1/stream") as ws:
        await ws.send_bytes(b"\x00" * 640)
        await ws.send_bytes(b"\x00" * 5000)
        message = await asyncio.wait_for(ws.receive(), 10)
        while message.type == WSMsgType.TEXT:  # session.start may come first
            message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009
    await asyncio.wait_for(recorder.ended.wait(), 10)
    await until(lambda: engine.sessions == ())


async def test_audio_for_a_session_the_engine_closed_ends_the_receive_loop(model: EmotionModel) -> None:
    """Audio arriving after the engine closed the session (shutdown) ends the loop instead of raising."""
    engine = EmotionEngine(model)
    session = engine.session()
    await session.start()
    await engine.close()
    assert session.closed
    connection = _StreamConnection(None, session)  # type: ignore[arg-type]  # the socket is not used
    assert await connection._audio(b"\x00" * 640) is False


async def test_client_going_away_still_classifies_the_last_utterance(serve: Serve) -> None:
    recorder = Recorder()
    client, engine = await serve(plugins=(recorder,))
    speech = np.concatenate([silence(0.5), speech_like(1.5, seed=9)])  # no trailing silence
    ws = await client.ws_connect("/v1/stream")
    for frame in pcm_frames(speech):
        await ws.send_bytes(frame)
    await ws.close()
    await asyncio.wait_for(recorder.ended.wait(), 20)
    assert len(recorder.emotions) == 1
    assert recorder.emotions[0].end == pytest.approx(2.0, abs=0.05)
    await until(lambda: engine.sessions == ())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sample_rate=abc", "not an integer"),
        ("sample_rate=1000", "unsupported sample rate"),
        ("channels=0", "channel"),
    ],
)
async def test_stream_rejects_bad_parameters_before_upgrading(serve: Serve, query: str, message: str) -> None:
    client, _ = await serve()
    response = await client.get(f"/v1/stream?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "AudioFormatError"
    assert message in body["message"]


async def test_server_shutdown_closes_sockets_and_sessions_gracefully(model: EmotionModel) -> None:
    recorder = Recorder()
    engine = EmotionEngine(model, plugins=(recorder,))
    client = TestClient(TestServer(create_app(engine), host="127.0.0.1"))
    await client.start_server()
    try:
        ws = await client.ws_connect("/v1/stream")
        for frame in pcm_frames(np.concatenate([silence(0.4), speech_like(1.2)])):  # still talking
            await ws.send_bytes(frame)
        # Messages are handled in order, so once the reply is back all the audio has been fed.
        await ws.send_json({"type": "reply", "text": "One moment."})
        while json.loads((await asyncio.wait_for(ws.receive(), 10)).data)["type"] != "reply.advice":
            pass
        closing = asyncio.create_task(client.server.close())  # the app's shutdown and cleanup
        types = []
        message = await asyncio.wait_for(ws.receive(), 10)
        while message.type == WSMsgType.TEXT:
            types.append(json.loads(message.data)["type"])
            message = await asyncio.wait_for(ws.receive(), 10)
        await asyncio.wait_for(closing, 20)
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 1001  # going away
        assert recorder.ended.is_set()
        assert len(recorder.emotions) == 1  # the open utterance was flushed and classified
        assert engine.sessions == ()
    finally:
        await client.close()
