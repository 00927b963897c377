from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import unused_port
from helpers import ScriptedClassifier, voiced_bursts
from pydantic import ValidationError
from ser_sdk_webhooks import (
    Outbox,
    RetryConfig,
    WebhooksPlugin,
    compute_signature,
    sign,
    verify_signature,
)
from ser_sdk_webhooks.cli import register
from ser_sdk_webhooks.dispatcher import backoff_delay

from ser_sdk.events import EmotionEvent, EmotionScores, Event
from ser_sdk.testing import RecordingContext

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-tests"


# ----------------------------------------------------------------------------- a real receiver


@dataclass
class Received:
    event_id: str
    event_type: str
    body: bytes


class Receiver:
    """An aiohttp server on 127.0.0.1 that checks every signature, like a careful production receiver.

    ``script`` answers each verified request (default: 204); ``unique`` keeps the
    first body per ``X-SER-Event-Id``, which is how a receiver drops duplicates.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or unused_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.requests: list[Received] = []
        self.unique: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.script: Callable[[Received, int], Any] = lambda received, n: 204
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not verify_signature(SECRET, request.headers.get("X-SER-Signature"), body):
            self.bad_signatures += 1
            return web.Response(status=401)
        assert request.headers["Content-Type"] == "application/json"
        received = Received(request.headers["X-SER-Event-Id"], request.headers["X-SER-Event-Type"], body)
        self.requests.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = self.script(received, len(self.requests))
            if asyncio.iscoroutine(answer):
                answer = await answer
            if isinstance(answer, web.StreamResponse):
                return answer
            if 200 <= answer < 300 and received.event_id not in self.unique:
                self.unique[received.event_id] = json.loads(body)
            return web.Response(status=answer)
        finally:
            self.in_flight -= 1
            self._changed.set()

    async def _moved(self, request: web.Request) -> web.Response:
        self.requests.append(Received("moved", "moved", await request.read()))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        app.router.add_post("/moved", self._moved)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        await eventually(condition, timeout, self._changed)


async def eventually(
    condition: Callable[[], Any], timeout: float = 10.0, changed: asyncio.Event | None = None
) -> Any:
    """Wait until ``condition()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        if changed is None:
            await asyncio.sleep(0.05)
            continue
        changed.clear()
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=0.1)
        finally:
            waiter.cancel()
    return result


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()
    assert server.bad_signatures == 0, "every request must carry a valid signature"


def config(outbox: Path, url: str, **overrides: Any) -> dict[str, Any]:
    endpoint = {
        "url": url,
        "secret": SECRET,
        "events": ["moderation.flag"],
        "allow_private_network": True,
        "timeout_s": 2.0,
    }
    endpoint.update(overrides.pop("endpoint", {}))
    return {
        "outbox": str(outbox),
        "endpoints": [endpoint],
        "retry": {"max_attempts": 8, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "jitter": 0.5},
        "drain_timeout_s": 5.0,
        **overrides,
    }


async def started(cfg: dict[str, Any]) -> WebhooksPlugin:
    plugin = WebhooksPlugin(cfg)
    await plugin.start(RecordingContext())
    return plugin


def flag(session_id: str = "call-1", **extra: Any) -> Event:
    """An event of a type the endpoints subscribe to (plugins publish subclasses of Event)."""

    class Flag(Event):
        severity: str = "high"
        reason: str = "shouting"

    return Flag(type="moderation.flag", session_id=session_id, **extra)


def pending_rows(path: Path, state: str = "pending") -> list:
    outbox = Outbox(path)
    try:
        return outbox.deliveries(state)  # type: ignore[arg-type]
    finally:
        outbox.close()


# ----------------------------------------------------------------------------- signatures


def test_signature_verification() -> None:
    body = b'{"type":"moderation.flag"}'
    header = sign(SECRET, body)
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature("other-secret", header, body)
    assert not verify_signature(SECRET, None, body)
    assert not verify_signature(SECRET, "garbage", body)
    assert not verify_signature(SECRET, "t=abc,v1=00", body)

    old = sign(SECRET, body, timestamp=int(time.time()) - 301)
    assert not verify_signature(SECRET, old, body)
    assert verify_signature(SECRET, old, body, tolerance_s=600)

    # The documented recipe, by hand: HMAC-SHA256 over b"<t>." + body.
    import hashlib
    import hmac

    t = 1_700_000_000
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, timestamp=t) == f"t={t},v1={expected}"
    # Several v1 entries (secret rotation): any one valid signature is enough.
    rotated = f"t={t},v1={compute_signature('old', t, body)},v1={expected}"
    assert verify_signature(SECRET, rotated, body, now=t + 10)


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    retry = RetryConfig(backoff_base_s=1.0, backoff_max_s=30.0, jitter=0.5)
    assert [backoff_delay(n, retry, rng=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_delay(3, retry, rng=lambda: 1.0) == 2.0
    assert backoff_delay(10_000, retry, rng=lambda: 0.0) == 30.0


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
    ],
)
def test_private_literal_addresses_are_refused_at_config_time(tmp_path: Path, url: str) -> None:
    cfg = config(tmp_path / "o.sqlite", url, endpoint={"allow_private_network": False})
    with pytest.raises(ValidationError, match="allow_private_network"):
        WebhooksPlugin(cfg)
    WebhooksPlugin(config(tmp_path / "o.sqlite", url))  # allowed when the endpoint says so


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    good = config(tmp_path / "o.sqlite", "https://hooks.example.com/ser")
    WebhooksPlugin(good)
    with pytest.raises(ValidationError, match="retries"):
        WebhooksPlugin({**good, "retries": 3})
    with pytest.raises(ValidationError, match="http:// or https://"):
        WebhooksPlugin(config(tmp_path / "o.sqlite", "ftp://hooks.example.com/"))
    with pytest.raises(ValidationError, match="events"):
        WebhooksPlugin(config(tmp_path / "o.sqlite", "https://hooks.example.com/", endpoint={"events": []}))
    with pytest.raises(ValidationError, match="secret"):
        WebhooksPlugin(config(tmp_path / "o.sqlite", "https://hooks.example.com/", endpoint={"secret": ""}))
    with pytest.raises(ValidationError, match="endpoints"):
        WebhooksPlugin({"outbox": str(tmp_path / "o.sqlite"), "endpoints": []})
    twice = {**good, "endpoints": good["endpoints"] * 2}
    with pytest.raises(ValidationError, match="distinct name"):
        WebhooksPlugin(twice)
    assert SECRET not in repr(WebhooksPlugin(good).config)


# ----------------------------------------------------------------------------- delivery


async def test_delivers_chosen_events_signed(tmp_path: Path, receiver: Receiver) -> None:
    plugin = await started(config(tmp_path / "outbox.sqlite", receiver.url))
    scores = EmotionScores.from_probs([0.9, 0.0, 0.0, 0.1])
    ignored = EmotionEvent(
        session_id="call-1",
        start=0.0,
        end=1.0,
        label="angry",
        confidence=0.9,
        scores=scores,
        model_id="m",
    )
    event = flag()
    await plugin.on_event(ignored)  # not subscribed
    await plugin.on_event(event)
    await receiver.wait_for(lambda: event.event_id in receiver.unique)
    await plugin.stop()

    assert [r.event_type for r in receiver.requests] == ["moderation.flag"]
    assert receiver.requests[0].event_id == event.event_id
    assert receiver.unique[event.event_id] == event.model_dump(mode="json")
    assert receiver.unique[event.event_id]["severity"] == "high"
    assert pending_rows(tmp_path / "outbox.sqlite") == []


async def test_retries_after_server_errors_with_the_same_id_and_body(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = lambda received, n: 500 if n <= 3 else 200
    plugin = await started(config(tmp_path / "outbox.sqlite", receiver.url))
    event = flag()
    await plugin.on_event(event)
    await receiver.wait_for(lambda: event.event_id in receiver.unique)
    await plugin.stop()

    assert len(receiver.requests) == 4
    assert {r.event_id for r in receiver.requests} == {event.event_id}
    assert len({r.body for r in receiver.requests}) == 1
    assert pending_rows(tmp_path / "outbox.sqlite") == []


async def test_receiver_down_then_up(tmp_path: Path) -> None:
    receiver = Receiver()  # not listening yet
    outbox = tmp_path / "outbox.sqlite"
    plugin = await started(config(outbox, receiver.url))
    events = [flag(f"call-{i}") for i in range(3)]
    for event in events:
        await plugin.on_event(event)

    rows = await eventually(
        lambda: (rows := pending_rows(outbox)) and min(r.attempts for r in rows) >= 1 and rows
    )
    assert all("Connect" in (row.last_error or "") for row in rows)
    await receiver.start()
    try:
        await receiver.wait_for(lambda: len(receiver.unique) == 3)
        await plugin.stop()
    finally:
        await receiver.stop()
    assert set(receiver.unique) == {event.event_id for event in events}
    assert receiver.bad_signatures == 0
    assert pending_rows(outbox) == []


RESTART_SCRIPT = """
import asyncio, json, logging, sys
from ser_sdk_webhooks import WebhooksPlugin

class Context:
    logger = logging.getLogger("restart")
    async def publish(self, event): pass
    def session_state(self, session_id): return None

async def main():
    plugin = WebhooksPlugin(json.loads(sys.argv[1]))
    await plugin.start(Context())  # pending deliveries from the earlier process go out now
    await plugin.stop()            # waits up to drain_timeout_s for them

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}", "HF_HUB_OFFLINE": "1"}


async def test_a_new_process_delivers_what_an_earlier_one_left(tmp_path: Path) -> None:
    receiver = Receiver()  # down while the first process runs
    outbox = tmp_path / "outbox.sqlite"
    cfg = config(outbox, receiver.url, drain_timeout_s=0.3)
    plugin = await started(cfg)
    events = [flag(f"call-{i}") for i in range(3)]
    for event in events:
        await plugin.on_event(event)
    await plugin.stop()  # gives up after drain_timeout_s, leaving the events in SQLite
    assert {row.event_id for row in pending_rows(outbox)} == {event.event_id for event in events}

    await receiver.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RESTART_SCRIPT,
            json.dumps({**cfg, "drain_timeout_s": 10.0}),
            env=_env(),
            cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
    finally:
        await receiver.stop()
    assert set(receiver.unique) == {event.event_id for event in events}
    assert receiver.bad_signatures == 0
    assert pending_rows(outbox) == []


async def test_duplicates_are_suppressed_by_event_id(tmp_path: Path, receiver: Receiver) -> None:
    async def slow_first(received: Received, n: int) -> int:
        if n == 1:  # processed, but the answer comes after the sender's timeout
            await asyncio.sleep(1.0)
        return 200

    receiver.script = slow_first
    plugin = await started(config(tmp_path / "outbox.sqlite", receiver.url, endpoint={"timeout_s": 0.3}))
    event = flag()
    await plugin.on_event(event)
    await plugin.on_event(event)  # the same event offered twice is queued once
    await receiver.wait_for(lambda: len(receiver.requests) >= 2 and receiver.in_flight == 0)
    await plugin.stop()

    assert [r.event_id for r in receiver.requests] == [event.event_id, event.event_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert list(receiver.unique) == [event.event_id]
    assert pending_rows(tmp_path / "outbox.sqlite") == []


async def test_dead_letter_after_max_attempts(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script = lambda received, n: web.Response(status=503, text="maintenance")
    outbox = tmp_path / "outbox.sqlite"
    cfg = config(outbox, receiver.url)
    cfg["retry"]["max_attempts"] = 3
    plugin = await started(cfg)
    event = flag()
    await plugin.on_event(event)
    await receiver.wait_for(lambda: len(receiver.requests) == 3)
    await plugin.stop()

    assert pending_rows(outbox) == []
    dead = pending_rows(outbox, "dead")
    assert [(row.event_id, row.attempts) for row in dead] == [(event.event_id, 3)]
    assert dead[0].last_error is not None and "503" in dead[0].last_error
    assert "maintenance" in dead[0].last_error
    assert len(receiver.requests) == 3


async def test_loopback_hostname_is_refused_at_delivery_time(tmp_path: Path, receiver: Receiver) -> None:
    # "localhost" passes the config check (it is a name), but resolves to 127.0.0.1 when delivering.
    url = f"http://localhost:{receiver.port}/hooks"
    outbox = tmp_path / "outbox.sqlite"
    cfg = config(outbox, url, endpoint={"allow_private_network": False})
    cfg["retry"]["max_attempts"] = 2
    plugin = await started(cfg)
    event = flag()
    await plugin.on_event(event)

    dead = await eventually(lambda: pending_rows(outbox, "dead"))
    await plugin.stop()
    assert receiver.requests == []
    assert "loopback" in (dead[0].last_error or "")
    assert "allow_private_network" in (dead[0].last_error or "")


async def test_redirects_are_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script = lambda received, n: web.Response(status=307, headers={"Location": "/moved"})
    outbox = tmp_path / "outbox.sqlite"
    cfg = config(outbox, receiver.url)
    cfg["retry"]["max_attempts"] = 1
    plugin = await started(cfg)
    await plugin.on_event(flag())
    await receiver.wait_for(lambda: len(receiver.requests) == 1 and receiver.in_flight == 0)
    await plugin.stop()
    assert [r.event_id for r in receiver.requests if r.event_id == "moved"] == []
    assert "307" in (pending_rows(outbox, "dead")[0].last_error or "")


async def test_concurrency_is_limited_per_endpoint(tmp_path: Path, receiver: Receiver) -> None:
    async def slow(received: Received, n: int) -> int:
        await asyncio.sleep(0.15)
        return 200

    receiver.script = slow
    plugin = await started(config(tmp_path / "outbox.sqlite", receiver.url, endpoint={"max_concurrency": 2}))
    for i in range(6):
        await plugin.on_event(flag(f"call-{i}"))
    await receiver.wait_for(lambda: len(receiver.unique) == 6)
    await plugin.stop()
    assert receiver.max_in_flight == 2


# ----------------------------------------------------------------------------- command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ser_sdk_webhooks", *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_register_adds_the_webhooks_commands(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="ser-sdk")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webhooks", "flush", "--config", "ser.yaml", "--timeout", "5"])
    assert args.timeout == 5.0 and callable(args.func)
    args = parser.parse_args(["webhooks", "status", "--config", "ser.yaml"])
    assert args.config == Path("ser.yaml") and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["webhooks"])


async def test_status_and_flush_commands(tmp_path: Path) -> None:
    receiver = Receiver()  # down while events are queued
    outbox = tmp_path / "outbox.sqlite"
    cfg = config(outbox, receiver.url)
    cfg["retry"]["max_attempts"] = 1
    cfg["endpoints"].append({**cfg["endpoints"][0], "name": "patient", "events": ["*"]})
    config_file = tmp_path / "ser.yaml"
    config_file.write_text(yaml.safe_dump({"plugins": {"webhooks": cfg}}))

    plugin = await started(cfg)
    event = flag()
    await plugin.on_event(event)
    await plugin.stop()

    def status() -> dict[str, Any]:
        result = _cli("status", "--config", str(config_file), "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    report = await asyncio.to_thread(status)
    by_endpoint = {item["endpoint"]: item for item in report["endpoints"]}
    assert by_endpoint[receiver.url]["dead"] == 1  # one attempt allowed, and it failed
    assert by_endpoint["patient"]["dead"] == 1
    assert [item["event_id"] for item in report["dead"]] == [event.event_id, event.event_id]

    text = await asyncio.to_thread(_cli, "status", "--config", str(config_file), cwd=tmp_path)
    assert text.returncode == 0 and event.event_id in text.stdout and "dead" in text.stdout

    requeued = await asyncio.to_thread(_cli, "requeue", "--config", str(config_file), cwd=tmp_path)
    assert requeued.returncode == 0, requeued.stderr
    await receiver.start()
    try:
        flushed = await asyncio.to_thread(
            _cli, "flush", "--config", str(config_file), "--timeout", "20", cwd=tmp_path
        )
    finally:
        await receiver.stop()
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert "left pending 0" in flushed.stdout
    assert len(receiver.requests) == 2  # one per endpoint
    assert receiver.bad_signatures == 0
    report = await asyncio.to_thread(status)
    assert all(item["pending"] == 0 and item["dead"] == 0 for item in report["endpoints"])


def test_commands_report_an_outbox_that_is_not_a_database(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite"
    outbox.write_bytes(b"not a database, just bytes" * 100)
    config_file = tmp_path / "ser.yaml"
    config_file.write_text(yaml.safe_dump({"plugins": {"webhooks": config(outbox, "http://127.0.0.1:9/")}}))
    for command in ("status", "requeue"):
        result = _cli(command, "--config", str(config_file), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert f"cannot open the webhook outbox {outbox}" in result.stderr


def test_commands_report_a_bad_config(tmp_path: Path) -> None:
    config_file = tmp_path / "ser.yaml"
    config_file.write_text(yaml.safe_dump({"plugins": {"webhooks": {"endpoints": [{"url": "x"}]}}}))
    result = _cli("status", "--config", str(config_file), cwd=tmp_path)
    assert result.returncode == 2
    assert "plugins.webhooks.endpoints.0" in result.stderr


# ----------------------------------------------------------------------------- through the engine


async def test_moderation_flags_from_the_engine_arrive_at_the_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    from ser_sdk_moderation import ModerationFlagEvent, ModerationPlugin

    from ser_sdk import EmotionEngine, load_config
    from ser_sdk.plugins import load_plugins

    outbox = tmp_path / "outbox.sqlite"
    config_file = tmp_path / "ser.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {"plugins": {"moderation": {"threshold": 0.6}, "webhooks": config(outbox, receiver.url)}}
        )
    )
    sdk = load_config(config_file)
    plugins = load_plugins(
        sdk.plugins, available={"moderation": ModerationPlugin, "webhooks": WebhooksPlugin}
    )
    engine = EmotionEngine(ScriptedClassifier.angry([0.2, 0.9, 0.95]), config=sdk.engine, plugins=plugins)
    async with engine:
        audio = voiced_bursts(3)
        async with engine.session(session_id="call-7") as session:
            for offset in range(0, len(audio), 480):
                await session.feed(audio[offset : offset + 480])
    # Closing the engine stopped the webhooks plugin, which waited for its deliveries.

    flags = [ModerationFlagEvent.model_validate(body) for body in receiver.unique.values()]
    assert [(f.session_id, f.severity, f.escalated) for f in flags] == [
        ("call-7", "low", False),
        ("call-7", "medium", True),
    ]
    assert flags[0].incident_id == flags[1].incident_id
    assert [r.event_type for r in receiver.requests] == ["moderation.flag", "moderation.flag"]
    assert pending_rows(outbox) == [] and pending_rows(outbox, "dead") == []
