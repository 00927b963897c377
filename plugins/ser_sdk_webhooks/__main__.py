"""``python -m ser_sdk_webhooks status|flush|requeue --config FILE``: the ``ser-sdk webhooks`` commands."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_sdk_webhooks")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["webhooks", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
