"""The parser: every command and option, and the entry point that installs run."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from cli import client, local, schedules, server
from cli.main import build_parser, main


@pytest.mark.parametrize(
    ("argv", "handler", "values"),
    [
        (["run", "s.yaml", "--out", "o"], local._run, {"smoke_test": False, "data_root": None}),
        (["run", "s.yaml", "--out", "o", "--smoke-test"], local._run, {"smoke_test": True}),
        (["list", "policies"], local._list, {"what": "policies"}),
        (["serve", "--port", "9000"], server._serve, {"port": 9000, "host": None}),
        (["demo"], server._demo, {"spec": "examples/digits.yaml", "access_log": False}),
        (["demo", "--spec", "x.yaml", "--access-log"], server._demo, {"access_log": True}),
        (["db", "upgrade"], server._db, {}),
        (["keys", "create", "alice", "--admin"], server._keys_create, {"admin": True}),
        (["submit", "s.yaml", "--idempotency-key", "k"], client._submit, {"idempotency_key": "k"}),
        (["status", "abc"], client._status, {"id": "abc"}),
        (["cancel", "abc"], client._cancel, {"id": "abc"}),
        (["results", "abc", "-o", "r.json"], client._results, {"output": "r.json"}),
        (["report", "abc"], client._report, {"format": "html", "output": None}),
        (["report", "abc", "--format", "csv"], client._report, {"format": "csv"}),
        (["schedules", "create", "n", "s.yaml", "--cron", "0 2 * * *"], schedules._create, {}),
        (["schedules", "list"], schedules._list, {}),
        (["schedules", "show", "1"], schedules._get, {"id": "1"}),
        (["schedules", "history", "1", "--json"], schedules._history, {"json": True}),
        (["schedules", "disable", "1"], schedules._enable, {"enabled": False}),
        (["schedules", "enable", "1"], schedules._enable, {"enabled": True}),
        (["schedules", "delete", "1"], schedules._delete, {}),
    ],
)
def test_each_command_parses_to_its_handler(
    argv: list[str], handler: object, values: dict[str, object]
) -> None:
    args = build_parser().parse_args(argv)
    assert args.handler is handler
    assert {k: getattr(args, k) for k in values} == values


@pytest.mark.parametrize(
    "argv",
    [[], ["run", "s.yaml"], ["list", "losses"], ["report", "x", "--format", "pdf"], ["db"]],
)
def test_a_wrong_command_line_exits_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "usage: clrstudy" in capsys.readouterr().err


def test_the_clrstudy_command_is_cli_main() -> None:
    (script,) = entry_points(group="console_scripts", name="clrstudy")
    assert script.value == "cli.main:main"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "schedules" in result.stdout
