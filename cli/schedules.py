"""`clrstudy schedules ...`: client commands for schedules over HTTP (CLRSTUDY_URL and
CLRSTUDY_TOKEN say which server and who)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.client import call


def _show(schedule: dict[str, Any]) -> None:
    state = "enabled" if schedule["enabled"] else "disabled"
    print(
        f"{schedule['id']:>4}  {schedule['name']}  '{schedule['cron']}' {schedule['timezone']}"
        f"  {state}  next {schedule['next_run_at']}"
    )


def _create(args: argparse.Namespace) -> int:
    from workers.spec import load_spec

    body = {
        "name": args.name,
        "cron": args.cron,
        "timezone": args.tz,
        "spec": load_spec(args.spec).model_dump(mode="json"),
    }
    _show(call("POST", "/schedules", json=body).json())
    return 0


def _list(args: argparse.Namespace) -> int:
    for schedule in call("GET", "/schedules").json():
        _show(schedule)
    return 0


def _get(args: argparse.Namespace) -> int:
    schedule = call("GET", f"/schedules/{args.id}").json()
    _show(schedule)
    latest = schedule.get("latest")
    if latest is None:
        print("no comparison yet: it needs two successful runs")
        return 0
    print(f"latest run {latest['due_at']}: {'REGRESSION' if latest['regression'] else 'ok'}")
    for arm in latest["arms"]:
        for reason in arm["reasons"]:
            print(f"  {arm['arm']}: {reason}")
    return 1 if latest["regression"] else 0


def _history(args: argparse.Namespace) -> int:
    runs = call("GET", f"/schedules/{args.id}/history").json()["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        flagged = {a["arm"] for a in (run["comparison"] or {}).get("arms", ()) if a["regression"]}
        what = run["study_status"] or run["reason"] or ""
        print(f"{run['due_at']}  {run['state']:<8} {run['study_id'] or '':<36}  {what}")
        for arm in run["arms"]:
            final = arm["final_accuracy"]
            its = arm["iterations_to_target"]
            print(
                f"    {arm['arm']:<20} final {'-' if final is None else f'{final:.1%}':>6}"
                f"  to target {'-' if its is None else f'{its:,.0f}':>8}"
                f"{'  REGRESSION' if arm['arm'] in flagged else ''}"
            )
    return 0


def _enable(args: argparse.Namespace) -> int:
    _show(call("PATCH", f"/schedules/{args.id}", json={"enabled": args.enabled}).json())
    return 0


def _delete(args: argparse.Namespace) -> int:
    call("DELETE", f"/schedules/{args.id}")
    print(f"deleted schedule {args.id}; the studies it created stay")
    return 0


def add_schedule_commands(commands: Any) -> None:
    """Add `schedules` and its subcommands to the `clrstudy` parser's subparsers."""
    schedules = commands.add_parser("schedules", help="nightly (cron) studies on the server")
    sub = schedules.add_subparsers(dest="schedules_command", required=True)
    create = sub.add_parser("create", help="create a schedule from a study spec")
    create.add_argument("name", help="the schedule's name (each study: NAME + its date)")
    create.add_argument("spec", help="study spec, YAML or JSON: the template")
    create.add_argument("--cron", required=True, help="5-field cron rule, e.g. '0 2 * * *'")
    create.add_argument("--tz", default="UTC", help="IANA time zone (default: UTC)")
    create.set_defaults(handler=_create)
    sub.add_parser("list", help="list schedules").set_defaults(handler=_list)
    for name, handler, text in (
        ("show", _get, "a schedule and its latest regression flags (exit 1 on a regression)"),
        ("delete", _delete, "delete a schedule (its studies stay)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("id", help="schedule id")
        command.set_defaults(handler=handler)
    history = sub.add_parser("history", help="every run with its headline figures")
    history.add_argument("id", help="schedule id")
    history.add_argument("--json", action="store_true", help="print the runs as JSON")
    history.set_defaults(handler=_history)
    for name, enabled in (("enable", True), ("disable", False)):
        command = sub.add_parser(name, help=f"{name} a schedule")
        command.add_argument("id", help="schedule id")
        command.set_defaults(handler=_enable, enabled=enabled)
