"""``ser-sdk webhooks status|flush|requeue --config FILE``: look into and empty the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ser_sdk.errors import ConfigError, SerError
from ser_sdk.plugin import CONFIG_DIR_KEY

from .config import WebhooksConfig
from .outbox import Delivery, Outbox
from .plugin import WebhooksPlugin


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``webhooks`` command and its subcommands to the ``ser-sdk`` parser."""
    parser = subparsers.add_parser(
        "webhooks",
        help="inspect and deliver the webhook outbox",
        description="Inspect and deliver the webhooks plugin's outbox (plugins.webhooks in the config file).",
    )
    commands = parser.add_subparsers(dest="webhooks_command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="show pending and dead deliveries")
    _add_config_argument(status)
    status.add_argument("--limit", type=int, default=20, help="deliveries listed per state (default 20)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=status_command)

    flush = commands.add_parser("flush", help="deliver what is pending, then exit")
    _add_config_argument(flush)
    flush.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (default 30)"
    )
    flush.set_defaults(func=flush_command)

    requeue = commands.add_parser("requeue", help="give dead deliveries a fresh set of attempts")
    _add_config_argument(requeue)
    requeue.add_argument("--endpoint", help="only this endpoint (its name, or its URL when unnamed)")
    requeue.set_defaults(func=requeue_command)


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, metavar="FILE", help="the ser-sdk YAML config")


def load_webhooks_config(path: Path) -> WebhooksConfig:
    """The ``plugins.webhooks`` section of a config file, validated."""
    from ser_sdk.config import format_validation_error, load_config, prefix_lines

    sdk = load_config(path)
    if "webhooks" not in sdk.plugins:
        raise ConfigError(f"{path}: has no plugins.webhooks section")
    try:
        return WebhooksConfig.model_validate(
            sdk.plugins["webhooks"] or {}, context={CONFIG_DIR_KEY: sdk.config_dir}
        )
    except ValidationError as exc:
        message = format_validation_error(exc, prefix=("plugins", "webhooks"))
        raise ConfigError(prefix_lines(str(path), message)) from None


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def status_command(args: argparse.Namespace) -> int:
    try:
        config = load_webhooks_config(args.config)
    except SerError as exc:
        return _fail(exc)
    keys = [endpoint.key for endpoint in config.endpoints]
    if not config.outbox.exists():
        report: dict[str, Any] = {
            "outbox": str(config.outbox),
            "endpoints": [{"endpoint": key, "pending": 0, "dead": 0} for key in keys],
            "pending": [],
            "dead": [],
        }
    else:
        try:
            outbox = Outbox(config.outbox)
        except SerError as exc:
            return _fail(exc)
        try:
            stats = {item.endpoint: item for item in outbox.stats()}
            report = {
                "outbox": str(config.outbox),
                "endpoints": [
                    {
                        "endpoint": key,
                        "configured": key in keys,
                        "pending": stats[key].pending if key in stats else 0,
                        "dead": stats[key].dead if key in stats else 0,
                        "oldest_pending_at": stats[key].oldest_pending_at if key in stats else None,
                        "next_attempt_at": stats[key].next_attempt_at if key in stats else None,
                    }
                    for key in [*keys, *sorted(set(stats) - set(keys))]
                ],
                "pending": [_summary(item) for item in outbox.deliveries("pending", args.limit)],
                "dead": [_summary(item) for item in outbox.deliveries("dead", args.limit)],
            }
        finally:
            outbox.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report)
    return 0


def _summary(delivery: Delivery) -> dict[str, Any]:
    return delivery.model_dump(exclude={"body", "id"})


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    delta = timestamp - now
    amount = abs(delta)
    text = (
        f"{amount:.0f}s"
        if amount < 120
        else f"{amount / 60:.0f}m"
        if amount < 7200
        else f"{amount / 3600:.1f}h"
    )
    return "now" if amount < 1 else (f"in {text}" if delta > 0 else f"{text} ago")


def _print_status(report: dict[str, Any]) -> None:
    now = time.time()
    print(f"outbox: {report['outbox']}")
    rows = [("ENDPOINT", "PENDING", "DEAD", "OLDEST PENDING", "NEXT ATTEMPT")]
    for item in report["endpoints"]:
        name = item["endpoint"] + ("" if item.get("configured", True) else " (not in config)")
        rows.append(
            (
                name,
                str(item["pending"]),
                str(item["dead"]),
                _when(item.get("oldest_pending_at"), now),
                _when(item.get("next_attempt_at"), now),
            )
        )
    width = max(len(row[0]) for row in rows)
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:>7}  {row[2]:>5}  {row[3]:>14}  {row[4]:>12}")
    for state in ("pending", "dead"):
        items = report[state]
        if not items:
            continue
        print(f"\n{state} deliveries (most recent first):")
        for item in items:
            error = f"  last error: {item['last_error']}" if item["last_error"] else ""
            print(
                f"  {item['event_id']}  {item['event_type']}  -> {item['endpoint']}  "
                f"attempts {item['attempts']}{error}"
            )


def flush_command(args: argparse.Namespace) -> int:
    try:
        config = load_webhooks_config(args.config)
    except SerError as exc:
        return _fail(exc)
    if not config.outbox.exists():
        print(f"outbox {config.outbox} does not exist: nothing to deliver")
        return 0
    try:
        result = asyncio.run(WebhooksPlugin(config).flush(max(0.0, args.timeout)))
    except SerError as exc:
        return _fail(exc)
    print(
        f"delivered {result.delivered}, failed attempts {result.failed_attempts}, "
        f"dead-lettered {result.dead_lettered}; left pending {result.pending}, dead {result.dead}"
    )
    return 0 if result.pending == 0 else 1


def requeue_command(args: argparse.Namespace) -> int:
    try:
        config = load_webhooks_config(args.config)
    except SerError as exc:
        return _fail(exc)
    if not config.outbox.exists():
        print(f"outbox {config.outbox} does not exist: nothing to requeue")
        return 0
    try:
        outbox = Outbox(config.outbox)
    except SerError as exc:
        return _fail(exc)
    try:
        count = outbox.requeue_dead(args.endpoint)
    finally:
        outbox.close()
    print(f"requeued {count} dead deliveries; they go out on the next start or flush")
    return 0
