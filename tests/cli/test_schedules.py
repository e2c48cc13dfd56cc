"""`clrstudy schedules ...` against a live server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from service.scheduling import Scheduler
from tests.api.conftest import run_to_success
from tests.cli.conftest import Cli, LiveServer


def created(cli: Cli, spec_file: Path, name: str = "nightly") -> str:
    """The id of a schedule made with `clrstudy schedules create`."""
    code, out, err = cli(
        "schedules", "create", name, str(spec_file), "--cron", "0 2 * * *", "--tz", "UTC"
    )
    assert code == 0, err
    return out.split()[0]


def test_create_list_show_and_delete(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    schedule_id = created(cli, spec_file)
    code, out, _ = cli("schedules", "list")
    assert code == 0
    (line,) = out.splitlines()
    assert line.split()[:4] == [schedule_id, "nightly", "'0", "2"]
    assert "UTC  enabled  next " in line and "T02:00:00" in line

    code, out, _ = cli("schedules", "show", schedule_id)
    assert code == 0
    assert out.splitlines()[1] == "no comparison yet: it needs two successful runs"

    code, out, _ = cli("schedules", "delete", schedule_id)
    assert (
        code == 0 and out.strip() == f"deleted schedule {schedule_id}; the studies it created stay"
    )
    code, out, _ = cli("schedules", "list")
    assert code == 0 and out == ""
    code, _, err = cli("schedules", "show", schedule_id)
    assert code == 2 and err.startswith("clrstudy: 404")


def test_a_bad_cron_rule_is_refused_with_its_field(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    code, out, err = cli("schedules", "create", "x", str(spec_file), "--cron", "0 2 * *")
    assert code == 2 and out == ""
    assert err.startswith("clrstudy: 422") and "cron" in err
    assert cli("schedules", "list")[1] == ""


def test_disable_and_enable(cli: Cli, server: LiveServer, alice: str, spec_file: Path) -> None:
    schedule_id = created(cli, spec_file)
    code, out, _ = cli("schedules", "disable", schedule_id)
    assert code == 0 and "  disabled  " in out
    assert "  disabled  " in cli("schedules", "list")[1]
    code, out, _ = cli("schedules", "enable", schedule_id)
    assert code == 0 and "  enabled  " in out
    assert "  enabled  " in cli("schedules", "list")[1]


def test_history_and_show_flag_a_regression_with_exit_status_1(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    schedule_id = created(cli, spec_file)
    first_due = datetime.fromisoformat(cli("schedules", "list")[1].split()[-1])
    scheduler = Scheduler(server.store, server.settings)

    def night(n: int, triangular_scale: float) -> str:
        """The n-th night's study, run to success; its id."""
        (run,) = scheduler.tick(first_due + timedelta(days=n, minutes=1))
        assert run.study_id is not None
        run_to_success(server.store, run.study_id, triangular_scale)
        return run.study_id

    first = night(0, 1.0)
    regressed = night(1, 0.9)  # triangular ends 10% lower

    code, out, _ = cli("schedules", "show", schedule_id)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith("latest run ") and lines[1].endswith(": REGRESSION")
    assert lines[2].startswith("  triangular: ") and len(lines) == 3  # fixed did not move

    code, out, _ = cli("schedules", "history", schedule_id)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[1:] for line in lines if not line.startswith(" ")] == [
        ["created", regressed, "succeeded"],
        ["created", first, "succeeded"],
    ]
    newest = lines[1:3]
    assert newest[0].split()[0] == "fixed" and not newest[0].endswith("REGRESSION")
    assert newest[1].split()[:3] == ["triangular", "final", "85.5%"]
    assert newest[1].endswith("  REGRESSION")
    assert not any(line.endswith("REGRESSION") for line in lines[3:])  # nothing to compare

    code, out, _ = cli("schedules", "history", schedule_id, "--json")
    runs = json.loads(out)
    assert code == 0 and [r["study_id"] for r in runs] == [regressed, first]

    night(2, 0.9)  # as low as the night before: no regression against it
    code, out, _ = cli("schedules", "show", schedule_id)
    assert code == 0 and out.splitlines()[1].endswith(": ok")
