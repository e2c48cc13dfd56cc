"""`clrstudy submit | status | cancel | delete | results | report` against a live server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.client import Client, ClientError
from service.ray_cluster import free_port
from tests.api.conftest import run_to_success
from tests.cli.conftest import Cli, LiveServer, submitted
from tests.factories import study_spec


def test_submit_prints_the_id_of_the_queued_study(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    code, out, err = cli("submit", str(spec_file))
    assert code == 0, err
    study_id = out.strip()
    study = server.store.get_study(study_id)
    assert study is not None and study.status == "queued"
    assert study.name == study_spec()["name"]
    assert f"submitted {study.name!r}: queued" in err


def test_submit_with_an_idempotency_key_twice_is_one_study(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    first = cli("submit", str(spec_file), "--idempotency-key", "nightly-1")
    again = cli("submit", str(spec_file), "--idempotency-key", "nightly-1")
    assert first[0] == again[0] == 0
    assert first[1] == again[1]
    assert server.store.list_studies()[1] == 1


def test_submit_of_a_spec_the_server_refuses_names_the_field(
    cli: Cli, server: LiveServer, alice: str, tmp_path: Path
) -> None:
    path = tmp_path / "many-seeds.json"
    path.write_text(json.dumps(study_spec(seeds=6)))  # valid locally; the server allows 4
    code, out, err = cli("submit", str(path))
    assert code == 2 and out == ""
    assert err.startswith("clrstudy: 422") and "seeds" in err
    assert server.store.list_studies()[1] == 0


def test_submit_of_an_invalid_file_fails_before_any_request(
    cli: Cli, server: LiveServer, alice: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: digits\n")
    code, _, err = cli("submit", str(path))
    assert code == 2 and "model: is required" in err
    assert server.store.list_studies()[1] == 0


def test_status_of_a_queued_study(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    study_id = submitted(cli, spec_file)
    code, out, _ = cli("status", study_id)
    assert code == 0
    assert out.splitlines() == [
        f"{study_spec()['name']}: queued (queued)",
        "trials 0/0, iterations 0/0",
    ]


def test_status_of_a_finished_study_shows_each_arm_best_accuracy(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    study_id = submitted(cli, spec_file)
    run_to_success(server.store, study_id)
    code, out, _ = cli("status", study_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [
        f"{study_spec()['name']}: succeeded (done)",
        "trials 4/4, iterations 240/240",
    ]
    # The curves top out at 0.7 (fixed) and 0.95 (triangular), minus seed / 1000.
    best = {line.split()[0]: line.split()[-1] for line in lines[2:]}
    assert best == {"fixed": "70.00%", "triangular": "95.00%"}


def test_cancel_cancels_a_queued_study_and_refuses_a_second_time(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    study_id = submitted(cli, spec_file)
    code, out, _ = cli("cancel", study_id)
    assert code == 0 and out.strip() == f"{study_id}: cancelled"
    study = server.store.get_study(study_id)
    assert study is not None and study.status == "cancelled"
    run_code, _, err = cli("status", study_id)
    assert run_code == 0
    code, out, err = cli("cancel", study_id)
    assert code == 2 and out == "" and err.startswith("clrstudy: 409")


def test_delete_cancels_a_running_study_then_deletes_it(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path
) -> None:
    study_id = submitted(cli, spec_file)
    assert server.store.transition(study_id, "running", expected={"queued"})
    folder = Path(server.settings.storage_path) / f"{study_id}-trials"
    folder.mkdir(parents=True)

    def driver() -> None:  # ends the study when its cancel is asked for, as the driver does
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            study = server.store.get_study(study_id)
            if study is not None and study.cancel_requested:
                server.store.transition(study_id, "cancelled", expected={"running"})
                return
            time.sleep(0.05)

    thread = threading.Thread(target=driver)
    thread.start()
    code, out, err = cli("delete", study_id)
    thread.join()
    assert code == 0, err
    assert out.strip() == f"{study_id}: deleted" and "cancelling" in err
    assert server.store.get_study(study_id) is None and not folder.exists()
    code, _, err = cli("delete", study_id)
    assert code == 2 and err.startswith("clrstudy: 404")


def test_results_to_stdout_and_to_a_file(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path, tmp_path: Path
) -> None:
    study_id = submitted(cli, spec_file)
    run_to_success(server.store, study_id)
    code, out, _ = cli("results", study_id)
    assert code == 0
    results = json.loads(out)
    assert results["study_id"] == study_id and results["status"] == "succeeded"
    assert set(results["arms"]) == {"fixed", "triangular"}
    assert len(results["trials"]) == 4
    path = tmp_path / "results.json"
    code, out, err = cli("results", study_id, "-o", str(path))
    assert code == 0 and out == "" and f"wrote {path}" in err
    assert json.loads(path.read_text()) == results


def test_report_in_each_format(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path, tmp_path: Path
) -> None:
    study_id = submitted(cli, spec_file)
    run_to_success(server.store, study_id, triangular_scale=0.9)
    code, out, _ = cli("report", study_id, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["verdicts"] and any("triangular" in v for v in report["verdicts"])
    code, out, _ = cli("report", study_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["arm"] for r in rows} == {"fixed", "triangular"}
    path = tmp_path / "report.html"
    code, _, _ = cli("report", study_id, "-o", str(path))  # html by default
    html = path.read_text()
    assert code == 0 and html.startswith("<!DOCTYPE html>") and "triangular" in html


def test_another_owner_sees_no_study_of_alice(
    cli: Cli, server: LiveServer, alice: str, spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = submitted(cli, spec_file)
    _, bob = server.store.create_api_key("bob")
    monkeypatch.setenv("CLRSTUDY_TOKEN", bob)
    for command in ("status", "cancel", "results", "report"):
        code, out, err = cli(command, study_id)
        assert (code, out) == (2, ""), command
        assert err.startswith("clrstudy: 404"), (command, err)
    study = server.store.get_study(study_id)
    assert study is not None and study.status == "queued"


def test_without_a_token_or_a_server_the_error_says_what_to_do(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLRSTUDY_TOKEN", raising=False)
    code, _, err = cli("status", "x")
    assert code == 2 and "set CLRSTUDY_TOKEN" in err
    nowhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CLRSTUDY_TOKEN", "k")
    monkeypatch.setenv("CLRSTUDY_URL", nowhere)
    code, _, err = cli("status", "x")
    assert code == 2 and f"cannot reach the clrstudy server at {nowhere}" in err


def test_a_wrong_key_is_refused(
    cli: Cli, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLRSTUDY_URL", server.url)
    monkeypatch.setenv("CLRSTUDY_TOKEN", "not-a-key")
    code, _, err = cli("status", "x")
    assert code == 2 and err.startswith("clrstudy: 401")


def test_the_client_follows_a_study_as_the_demo_does(
    server: LiveServer, alice: str, spec_file: Path
) -> None:
    with Client(server.url, alice) as client:
        assert client.ready()
        study = client.submit(study_spec())
        assert client.study_url(study["id"]) == f"{server.url}/api/v1/studies/{study['id']}"
        assert client.study(study["id"])["finished_at"] is None
        run_to_success(server.store, study["id"])
        view = client.study(study["id"])
        assert view["finished_at"] is not None and view["status"] == "succeeded"
        with pytest.raises(ClientError, match=r"^404"):
            client.study("no-such-study")


def test_the_client_commands_need_nothing_of_the_service() -> None:
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "assert main(['status', 'x']) == 2\n"  # no token: refused before any request
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'api'))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLRSTUDY_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "set CLRSTUDY_TOKEN" in result.stderr
