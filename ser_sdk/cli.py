"""The ``ser-sdk`` command line: classify and analyze files, list plugins, describe the model, serve.

Output goes to stdout (one line per result; ``--json`` gives JSON Lines),
problems to stderr as one ``ser-sdk: error: ...`` line each, progress bars to
stderr when it is a terminal. Exit codes: 0 when everything worked, 1 when
some input failed (the rest is still processed), 2 for usage errors and for
configurations, models or plugins that cannot start, 130 after Ctrl-C and
141 when the reader of stdout went away (``ser-sdk ... | head``), as a shell
reports a pipeline cut by SIGPIPE.

Plugins may add subcommands through the entry-point group
``ser_sdk.commands``: each entry point is a ``register(subparsers)`` callable
that adds its parser and sets ``func`` (taking the parsed arguments, returning
an exit code). A broken one is logged and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import ConfigError, ModelError, PluginError, SerError

if TYPE_CHECKING:
    from tqdm import tqdm

    from .config import SdkConfig
    from .engine import EmotionEngine, Session
    from .events import EmotionScores, Event
    from .model import EmotionModel

PROG = "ser-sdk"
COMMANDS_GROUP = "ser_sdk.commands"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

CHUNK_MS = 20
"""``analyze`` feeds files to the engine in chunks of this length, as a live source would."""

ENGINE_EVENT_TYPES = frozenset({"session.start", "session.end", "speech.start", "utterance"})
"""What the engine emits besides ``emotion``; ``analyze`` prints these only with ``--all-events``."""

LABEL_WIDTH = 7  # len("neutral")
MAX_DEFAULT_CHARS = 60

logger = logging.getLogger("ser_sdk.cli")


# --------------------------------------------------------------------------- output helpers


def _error(message: object) -> None:
    """One ``ser-sdk: error:`` line per line of ``message`` (multi-field config errors have several)."""
    for line in str(message).splitlines() or [""]:
        print(f"{PROG}: error: {line}", file=sys.stderr)


class _QuietFormatter(logging.Formatter):
    """``ser-sdk: warning: message``; tracebacks only at -vv, so users see one line per problem."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__(f"{PROG}: %(levelname)s: %(message)s")
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        if not self._tracebacks:
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return super().format(record)


def _configure_logging(verbosity: int) -> Callable[[], None]:
    """Send log records to stderr as one-line messages; returns a function that undoes it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_QuietFormatter(tracebacks=verbosity >= 2))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(previous_level)

    return restore


def _progress(total: int, unit: str, enabled: bool) -> tqdm:
    from tqdm import tqdm

    # disable=None lets tqdm switch itself off when stderr is not a terminal.
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None if enabled else True, leave=False)


def _scores_dict(scores: EmotionScores) -> dict[str, float]:
    return {label: round(value, 6) for label, value in scores.as_dict().items()}


def _scores_text(scores: EmotionScores) -> str:
    return "  ".join(f"{label} {value:5.3f}" for label, value in scores.as_dict().items())


# --------------------------------------------------------------------------- configuration


def _read_paths(paths: Sequence[str], list_file: str | None) -> list[str]:
    """The command-line paths followed by those of ``--list`` (one per line; ``-`` reads stdin)."""
    found = list(paths)
    if list_file is None:
        return found
    try:
        text = sys.stdin.read() if list_file == "-" else Path(list_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{list_file}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{list_file}: cannot read the list file ({exc})") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            found.append(line)
    return found


def _load_sdk_config(config_path: str | None, model: str | None) -> SdkConfig:
    """The config file (or the defaults), with ``--model`` taking precedence over its ``model``."""
    from .config import SdkConfig, load_config

    config = load_config(config_path) if config_path else SdkConfig()
    if model:
        config = config.model_copy(update={"model": str(Path(model).expanduser().resolve())})
    return config


# --------------------------------------------------------------------------- classify


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_samples: int) -> list[list[int]]:
    """Group indices of clips into batches of similar length, shortest first.

    Sorting by length keeps the padding in each batch small; a batch also stops
    growing once ``len(batch) * longest`` would pass ``max_batch_samples``, so a
    few very long files do not make one huge padded tensor (a file longer than
    that on its own still gets a batch of one).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    batches: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        longest = lengths[index]  # ascending order: the newcomer is the longest
        if current and (len(current) >= batch_size or (len(current) + 1) * longest > max_batch_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@dataclass
class _Clip:
    path: str
    samples: np.ndarray | None = None
    error: str | None = None
    scores: EmotionScores | None = None


def _decode(path: str) -> _Clip:
    from .audio import load_audio

    try:
        return _Clip(path, samples=load_audio(path))
    except SerError as exc:
        return _Clip(path, error=str(exc))
    except Exception as exc:  # an unexpected decoder failure still concerns one file only
        logger.debug("decoding %s failed", path, exc_info=exc)
        return _Clip(path, error=f"{path}: cannot decode audio ({type(exc).__name__}: {exc})")


def _score_batch(model: EmotionModel, clips: list[_Clip]) -> None:
    """Score a batch; if it fails, score its clips one by one so a bad clip fails alone."""
    try:
        results = model.classify([clip.samples for clip in clips])  # type: ignore[misc]
    except Exception as exc:
        if len(clips) > 1:
            logger.debug("a batch of %d failed (%s); scoring its files one by one", len(clips), exc)
            for clip in clips:
                _score_batch(model, [clip])
            return
        logger.debug("classifying %s failed", clips[0].path, exc_info=exc)
        clips[0].error = f"{clips[0].path}: classification failed ({type(exc).__name__}: {exc})"
        return
    for clip, scores in zip(clips, results, strict=True):
        clip.scores = scores
        clip.samples = None  # the window's audio can go as soon as it is scored


def _windows(paths: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(paths), size):
        yield list(paths[start : start + size])


def _classify_line(clip: _Clip, as_json: bool) -> str:
    assert clip.scores is not None
    scores = clip.scores
    if as_json:
        return json.dumps(
            {
                "path": clip.path,
                "label": scores.label,
                "confidence": round(scores.confidence, 6),
                "scores": _scores_dict(scores),
            }
        )
    return f"{scores.label:<{LABEL_WIDTH}}  {scores.confidence:5.3f}   {_scores_text(scores)}   {clip.path}"


def classify_command(args: argparse.Namespace) -> int:
    """One whole-file prediction per path, in input order.

    Files are decoded by a thread pool one window ahead of the model (the
    prefetch), and each window is scored in batches of similar length. Results
    are written window by window in input order: the output is deterministic
    and still streams, with at most two windows of audio in memory.
    """
    from .model import EmotionModel

    paths = _read_paths(args.paths, args.list)
    if not paths:
        raise ConfigError("no input files: give paths or --list FILE")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.max_batch_seconds > 0:
        raise ConfigError(f"--max-batch-seconds must be positive, got {args.max_batch_seconds}")
    model = EmotionModel.load(Path(args.model).expanduser() if args.model else None)
    window = max(64, 8 * args.batch_size)
    max_batch_samples = args.batch_size * int(args.max_batch_seconds * model.info.sample_rate)
    failed = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-sdk-decode")
    bar = _progress(len(paths), "file", not args.no_progress)
    try:
        windows = _windows(paths, window)
        queued: list[list[Future[_Clip]]] = []

        def prefetch() -> None:
            names = next(windows, None)
            if names is not None:
                queued.append([executor.submit(_decode, name) for name in names])

        prefetch()
        while queued:
            futures = queued.pop(0)
            prefetch()  # decode the next window while the model works on this one
            clips = [future.result() for future in futures]
            ready = [clip for clip in clips if clip.samples is not None]
            lengths = [0 if clip.samples is None else len(clip.samples) for clip in ready]
            for batch in plan_batches(lengths, args.batch_size, max_batch_samples):
                _score_batch(model, [ready[i] for i in batch])
            for clip in clips:
                if clip.error is not None:
                    failed += 1
                    sys.stdout.flush()
                    _error(clip.error)
                else:
                    sys.stdout.write(_classify_line(clip, args.json) + "\n")
            sys.stdout.flush()
            bar.update(len(clips))
    finally:
        bar.close()
        executor.shutdown(wait=False, cancel_futures=True)
    return EXIT_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------------- analyze


class EventFormatter:
    """Which events ``analyze`` prints, and how (one line each)."""

    def __init__(self, as_json: bool, all_events: bool) -> None:
        self.as_json = as_json
        self.all_events = all_events

    def wants(self, event: Event) -> bool:
        return self.all_events or event.type not in ENGINE_EVENT_TYPES

    def format(self, event: Event, path: str) -> str:
        from .events import EmotionEvent, event_to_json_dict

        if self.as_json:
            return json.dumps(event_to_json_dict(event, path=path))
        if isinstance(event, EmotionEvent):
            span = f"{event.start:.2f}-{event.end:.2f}s"
            return (
                f"{path}  {span:>15}  {event.label:<{LABEL_WIDTH}}  "
                f"{event.confidence:5.3f}   {_scores_text(event.scores)}"
            )
        data = event.model_dump(mode="json", exclude={"type", "session_id", "event_id", "created_at"})
        span = ""
        if isinstance(data.get("start"), (int, float)):
            start = data.pop("start")
            end = data.pop("end", None)
            span = f"{start:.2f}-{end:.2f}s" if isinstance(end, (int, float)) else f"{start:.2f}s"
        details = json.dumps(data, separators=(",", ":")) if data else ""
        return "  ".join(part for part in (path, span, event.type, details) if part)


_FILE_DONE = object()


@dataclass
class _Failure:
    message: str


async def stream_samples(session: Session, samples: np.ndarray, *, realtime: bool = False) -> None:
    """Feed 16 kHz samples to ``session`` in ``CHUNK_MS`` chunks, the way a live source delivers them.

    Without ``realtime`` it goes as fast as the engine takes it, yielding to
    the event loop every second of audio so that concurrent sessions, the
    batcher and the readers all make progress; with it, chunks follow the clock.
    """
    from .audio import SAMPLE_RATE

    loop = asyncio.get_running_loop()
    step = SAMPLE_RATE * CHUNK_MS // 1000
    began = loop.time()
    for number, start in enumerate(range(0, len(samples), step), start=1):
        await session.feed(samples[start : start + step])
        if realtime:
            await asyncio.sleep(max(0.0, began + number * CHUNK_MS / 1000 - loop.time()))
        elif number % 50 == 0:
            await asyncio.sleep(0)


async def _analyze_file(
    engine: EmotionEngine,
    path: str,
    out: asyncio.Queue[Any],
    formatter: EventFormatter,
    realtime: bool,
) -> None:
    """Stream one file through its own session exactly as live audio: 20 ms chunks, in order."""
    from .audio import SAMPLE_RATE, load_audio

    try:
        try:
            samples = await asyncio.to_thread(load_audio, path)
        except SerError as exc:
            out.put_nowait(_Failure(str(exc)))
            return
        session = engine.session(sample_rate=SAMPLE_RATE, metadata={"path": path})

        async def pump() -> None:
            async for event in session.events():
                if formatter.wants(event):
                    out.put_nowait(formatter.format(event, path))

        async with session:
            reader = asyncio.create_task(pump())
            await stream_samples(session, samples, realtime=realtime)
        await reader
        failures = session.stats.classification_failures
        if failures:
            out.put_nowait(_Failure(f"{path}: {failures} utterance(s) could not be classified (see the log)"))
    except SerError as exc:
        out.put_nowait(_Failure(f"{path}: {exc}"))
    except Exception as exc:  # a bug must not hang the ordered printer or hide the other files
        logger.error("analysing %s failed unexpectedly", path, exc_info=exc)
        out.put_nowait(_Failure(f"{path}: internal error ({type(exc).__name__}: {exc})"))
    finally:
        out.put_nowait(_FILE_DONE)


async def _analyze(args: argparse.Namespace, paths: list[str]) -> int:
    from .engine import EmotionEngine

    config = _load_sdk_config(args.config, args.model)
    engine = EmotionEngine.from_config(config, source=args.config)
    formatter = EventFormatter(args.json, args.all_events)
    failed = 0
    try:
        await engine.start()  # a missing model or a plugin that cannot start fails here, once
        limit = asyncio.Semaphore(args.jobs)
        outputs: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in paths]

        async def run(path: str, out: asyncio.Queue[Any]) -> None:
            async with limit:
                await _analyze_file(engine, path, out, formatter, args.realtime)

        tasks = [asyncio.create_task(run(path, out)) for path, out in zip(paths, outputs, strict=True)]
        bar = _progress(len(paths), "file", not args.no_progress)
        try:
            # Files run concurrently; their lines come out in input order, the current file live.
            for out in outputs:
                while (item := await out.get()) is not _FILE_DONE:
                    if isinstance(item, _Failure):
                        failed += 1
                        sys.stdout.flush()
                        _error(item.message)
                    else:
                        sys.stdout.write(item + "\n")
                        sys.stdout.flush()
                bar.update(1)
        finally:
            bar.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await engine.close()  # plugins drain here (webhooks wait a bounded time)
    return EXIT_FAILED if failed else EXIT_OK


def analyze_command(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    paths = list(args.paths)
    return asyncio.run(_analyze(args, paths))


# --------------------------------------------------------------------------- plugins


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)


def _plugin_description(name: str, cls: type) -> dict[str, Any]:
    from pydantic_core import to_jsonable_python

    fields = []
    for field_name, info in cls.Config.model_fields.items():
        required = info.is_required()
        default = None if required else to_jsonable_python(info.get_default(call_default_factory=True))
        fields.append(
            {
                "name": field_name,
                "type": _type_name(info.annotation),
                "required": required,
                "default": default,
                "description": info.description,
            }
        )
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "class": cls.__qualname__,
        "module": cls.__module__,
        "summary": doc[0] if doc else "",
        "config": fields,
    }


def plugins_command(args: argparse.Namespace) -> int:
    from .plugins import ENTRY_POINT_GROUP, discover_plugins

    described = [_plugin_description(name, cls) for name, cls in sorted(discover_plugins().items())]
    if args.json:
        print(json.dumps(described, indent=2))
        return EXIT_OK
    if not described:
        print(f"no plugins installed (entry-point group {ENTRY_POINT_GROUP!r})")
        return EXIT_OK
    for number, plugin in enumerate(described):
        if number:
            print()
        print(f"{plugin['name']}  {plugin['module']}.{plugin['class']}")
        if plugin["summary"]:
            print(f"  {plugin['summary']}")
        if not plugin["config"]:
            print("  (no options)")
        for field in plugin["config"]:
            default = json.dumps(field["default"])
            if len(default) > MAX_DEFAULT_CHARS:  # a nested table: --json shows it whole
                default = default[:MAX_DEFAULT_CHARS] + " ..."
            value = "required" if field["required"] else f"= {default}"
            note = f"  # {field['description']}" if field["description"] else ""
            print(f"  {field['name']}: {field['type']} {value}{note}")
    return EXIT_OK


# --------------------------------------------------------------------------- info


def info_command(args: argparse.Namespace) -> int:
    from .model import EmotionModel

    config = _load_sdk_config(args.config, args.model)
    model = EmotionModel.load(config.model)
    report = {
        "model_id": model.model_id,
        "architecture": model.info.architecture,
        "members": [f"{m.model_id} ({m.info.architecture})" for m in model.members],
        "labels": list(model.labels),
        "sample_rate": model.info.sample_rate,
        "logit_scale": model.info.logit_scale,
        "temperature": model.info.temperature,
        "metrics": model.info.metrics,
        "model_dir": str(model.directory),
        "vad": config.vad.model_dump(mode="json"),
        "engine": config.engine.model_dump(mode="json"),
        "version": __version__,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    rows = [
        ("model", report["model_id"]),
        ("architecture", report["architecture"]),
        *[("member", member) for member in report["members"]],
        ("labels", ", ".join(report["labels"])),
        ("sample rate", f"{report['sample_rate']} Hz"),
        ("temperature", f"{report['temperature']:g} (logit scale {report['logit_scale']:g})"),
        ("model dir", report["model_dir"]),
    ]
    rows += [(f"metrics.{key}", value) for key, value in _flatten(report["metrics"])]
    rows += [(f"vad.{key}", value) for key, value in report["vad"].items()]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data and all(isinstance(item, (list, dict)) for item in data):
        yield prefix, json.dumps(data, separators=(",", ":"))
    else:
        yield prefix, data


# --------------------------------------------------------------------------- serve


def serve_command(args: argparse.Namespace) -> int:
    from .server import run

    config = _load_sdk_config(args.config, args.model)
    run(
        config,
        host=args.host,
        port=args.port,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        source=args.config,
        announce=lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True),
    )
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # Subcommands repeat -v without a default, so theirs cannot reset a -v given before the command.
    parser.add_argument(
        "-v", "--verbose", action="count", default=default, help="more log output (-vv: debug)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Hear how something was said: speech emotion recognition (angry, happy, sad, neutral).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, default=0)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    classify = commands.add_parser(
        "classify",
        help="one prediction per whole file (no VAD)",
        description="Classify each file as a whole (no VAD). Results come in input order.",
    )
    classify.add_argument(
        "paths", nargs="*", metavar="PATH", help="audio files (any format libsndfile reads)"
    )
    classify.add_argument(
        "--list", metavar="FILE", help="read more paths from FILE, one per line ('-': stdin)"
    )
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument("--model", metavar="DIR", help="model directory (default: the bundled model)")
    classify.add_argument("--batch-size", type=int, default=16, metavar="N", help="files per forward pass")
    classify.add_argument(
        "--max-batch-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="cap a batch at N x S seconds of padded audio (default 10)",
    )
    classify.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(classify)
    classify.set_defaults(func=classify_command)

    analyze = commands.add_parser(
        "analyze",
        help="stream files through the engine (VAD, emotion per utterance, plugins)",
        description=(
            "Stream each file through its own engine session in 20 ms chunks, exactly as live audio, and"
            " print emotion events and the events plugins publish."
        ),
    )
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="audio files")
    analyze.add_argument("--json", action="store_true", help="one JSON object per event")
    analyze.add_argument("--config", metavar="FILE", help="YAML config (vad, engine, plugins)")
    analyze.add_argument("--model", metavar="DIR", help="model directory (overrides the config)")
    analyze.add_argument(
        "--all-events", action="store_true", help="also print session.*, speech.start and utterance events"
    )
    analyze.add_argument("--realtime", action="store_true", help="feed audio at real-time pace")
    analyze.add_argument(
        "--jobs", type=int, default=4, metavar="N", help="files analysed at once (default 4)"
    )
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(analyze)
    analyze.set_defaults(func=analyze_command)

    plugins = commands.add_parser("plugins", help="list installed plugins and their options")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    _add_common(plugins)
    plugins.set_defaults(func=plugins_command)

    info = commands.add_parser("info", help="describe the model and the VAD settings")
    info.add_argument("--model", metavar="DIR", help="model directory (default: the bundled model)")
    info.add_argument("--config", metavar="FILE", help="YAML config whose model and vad to show")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_common(info)
    info.set_defaults(func=info_command)

    serve = commands.add_parser("serve", help="run the HTTP and WebSocket service")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--config", metavar="FILE", help="YAML config (model, vad, engine, plugins)")
    serve.add_argument("--model", metavar="DIR", help="model directory (overrides the config)")
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=25.0,
        metavar="MB",
        help="largest /v1/classify body (default 25)",
    )
    _add_common(serve)
    serve.set_defaults(func=serve_command)

    _register_extensions(commands)
    return parser


def _register_extensions(commands: argparse._SubParsersAction) -> None:
    """Let installed packages add subcommands; one that fails to load is logged and skipped."""
    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            register = ep.load()
            register(commands)
        except Exception as exc:
            logger.warning("command entry point %r (%s) failed to load; skipped: %s", ep.name, ep.value, exc)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except (ConfigError, PluginError, ModelError) as exc:
        _error(exc)
        return EXIT_USAGE
    except SerError as exc:
        _error(exc)
        return EXIT_FAILED


def _silence_stdout() -> None:
    """The reader is gone: point stdout at /dev/null so the final flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ser-sdk`` console script; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    restore_logging = _configure_logging(0)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version and usage errors
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        restore_logging()
        restore_logging = _configure_logging(args.verbose)
        return _run(args.func, args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
