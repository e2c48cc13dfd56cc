"""`clrstudy`: the parser and the entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli.client import ClientError, add_client_commands
from cli.local import add_local_commands
from cli.schedules import add_schedule_commands
from cli.server import add_server_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clrstudy",
        description="Does a cyclical learning rate beat fixed, decaying and adaptive ones?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_local_commands(commands)
    add_server_commands(commands)
    add_client_commands(commands)
    add_schedule_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.spec import SpecError

    try:
        result: int = args.handler(args)
    except (ClientError, SpecError) as error:
        print(f"clrstudy: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
