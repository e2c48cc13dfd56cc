"""The deployment files agree with each other and with the code: docker-compose.yml,
Dockerfile, .dockerignore, docs/deploy.md and scripts/local-cluster (Docker cannot run here)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cli.main import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
GUIDE = (ROOT / "docs" / "deploy.md").read_text()
SCRIPT = ROOT / "scripts" / "local-cluster"

# `${NAME}`, `${NAME:-default}`, `${NAME:?error}` (and the forms without the colon).
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
SETTINGS = {name.upper() for name in Settings.model_fields}
RAY_NAMES = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
SECRET = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def ours() -> dict[str, dict[str, Any]]:
    """The services that run our image (the others are stock images)."""
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def ray_nodes() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in SERVICES.items() if command(svc)[:2] == ["ray", "start"]}


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else list(value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) for item in value)
    return {name: str(v) for name, v in value.items()}


def defaults() -> dict[str, str]:
    """Each interpolated variable's `:-` default, wherever the compose file gives one."""
    text = (ROOT / "docker-compose.yml").read_text()
    return {m["name"]: m["arg"] for m in INTERPOLATION.finditer(text) if m["op"] == ":-"}


def required() -> set[str]:
    """The variables Compose refuses to start without (`${NAME:?...}`)."""
    text = (ROOT / "docker-compose.yml").read_text()
    return {m["name"] for m in INTERPOLATION.finditer(text) if m["op"] == ":?"}


def expand(value: str) -> str:
    """`value` with every interpolation replaced by its default (or its name)."""
    return INTERPOLATION.sub(lambda m: m["arg"] if m["op"] == ":-" else m["name"], value)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each volume (short syntax)."""
    pairs = (volume.split(":")[:2] for volume in service.get("volumes", []))
    return {target: source for source, target in pairs}


# --- docker-compose.yml --------------------------------------------------------------------
def test_the_four_services_and_each_has_an_image_or_a_build() -> None:
    assert set(SERVICES) == {"postgres", "ray-head", "ray-worker", "api"}
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
    assert SERVICES["postgres"]["image"].startswith("postgres:")


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_its_health() -> None:
    postgres = SERVICES["postgres"]
    assert mounts(postgres)["/var/lib/postgresql/data"] in COMPOSE["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "ports" not in postgres  # only the compose network reaches the database


def test_ray_head_publishes_the_dashboard_and_the_gcs_port_on_loopback_only() -> None:
    head = SERVICES["ray-head"]
    # host address : host port : container port; no address would mean every interface.
    bindings = [expand(port).split(":") for port in head["ports"]]
    assert {address for address, *_ in bindings} == {"127.0.0.1"}
    published = {host_port for _, host_port, _ in bindings}
    gcs_port = str(Settings.model_fields["ray_head_port"].default)
    dashboard_port = str(Settings.model_fields["ray_dashboard_port"].default)
    assert published == {dashboard_port, gcs_port}
    args = [expand(arg) for arg in command(head)]
    assert "--head" in args
    assert "--block" in args
    assert f"--port={gcs_port}" in args
    assert f"--dashboard-port={dashboard_port}" in args
    assert "--dashboard-host=0.0.0.0" in args  # the api and the healthcheck reach it
    assert "--num-gpus=0" in args
    assert "healthcheck" in head
    # Compose's default for the GCS port is the service's own.
    assert defaults()["RAY_HEAD_PORT"] == gcs_port


def test_ray_worker_reserves_gpus_and_can_be_scaled() -> None:
    worker = SERVICES["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device["driver"] == "nvidia"
        and "gpu" in device["capabilities"]
        and (device.get("count") == "all" or int(device.get("count", 0)) >= 1)
        for device in devices
    )
    # `--scale ray-worker=N` needs replicas without a fixed name or host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    args = [expand(arg) for arg in command(worker)]
    assert f"--address=ray-head:{defaults()['RAY_HEAD_PORT']}" in args
    assert "--block" in args
    assert "DATABASE_URL" not in environment(worker)  # only the head's drivers write to it


def test_api_waits_for_a_healthy_database_and_head_migrates_then_serves() -> None:
    api = SERVICES["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["ray-head"]["condition"] == "service_healthy"
    script = command(api)[-1]
    upgrade, serve = script.index("clrstudy db upgrade"), script.index("clrstudy serve")
    assert upgrade < serve
    assert "&&" in script[upgrade:serve]  # no serving on a failed migration
    assert "--host 0.0.0.0 --port 8000" in script[serve:]
    assert [expand(port) for port in api["ports"]] == ["8000:8000"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    env = environment(api)
    assert expand(env["RAY_ADDRESS"]) == f"ray-head:{defaults()['RAY_HEAD_PORT']}"
    assert env["RAY_DASHBOARD_URL"] == "http://ray-head:8265"


def test_every_ray_node_mounts_the_data_volume_at_data_root_and_shares_storage() -> None:
    nodes = ray_nodes()
    assert set(nodes) == {"ray-head", "ray-worker"}
    for name, node in nodes.items():
        env, volumes = environment(node), mounts(node)
        assert volumes[env["DATA_ROOT"]] == "data", name
        storage = Path(env["STORAGE_PATH"])
        shared = [target for target in volumes if storage.is_relative_to(target)]
        assert shared and volumes[shared[0]] in COMPOSE["volumes"], name
    sources = {(environment(n)["STORAGE_PATH"], mounts(n)["/shared"]) for n in nodes.values()}
    assert len(sources) == 1  # one checkpoint store for every node
    assert "data" in COMPOSE["volumes"]
    assert environment(nodes["ray-head"])["DATABASE_URL"]  # the drivers run on the head


def test_environment_names_are_the_settings_or_ray_or_postgres_ones() -> None:
    for name, service in SERVICES.items():
        allowed = SETTINGS | RAY_NAMES if name in ours() else set()
        for variable in environment(service):
            assert variable in allowed or variable.startswith("POSTGRES_"), (name, variable)
    text = (ROOT / "docker-compose.yml").read_text()
    for match in INTERPOLATION.finditer(text):
        variable = match["name"]
        assert variable in SETTINGS | RAY_NAMES or variable.startswith("POSTGRES_"), variable


def test_token_authentication_is_on_for_every_ray_node_and_the_api() -> None:
    for name in [*ray_nodes(), "api"]:
        env = environment(SERVICES[name])
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
    assert {"RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"} <= required()


def test_no_secret_is_written_into_the_compose_file() -> None:
    for name, service in SERVICES.items():
        for variable, value in environment(service).items():
            if SECRET.search(variable):
                assert INTERPOLATION.fullmatch(value), (name, variable)
            if variable == "DATABASE_URL":
                masked = INTERPOLATION.sub(lambda m: f"<{m['name']}>", value)
                password = re.search(r"://[^:/@]+:(?P<password>[^@]+)@", masked)
                assert password and password["password"] == "<POSTGRES_PASSWORD>", name


# --- Dockerfile, .dockerignore ---------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = (line.strip() for line in text.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_the_project_and_bakes_in_no_secret() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    for instruction, arguments in instructions:
        if instruction in ("ENV", "ARG"):
            assert not SECRET.search(arguments), arguments
            assert "DATABASE_URL" not in arguments
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    project = [run for run in runs if re.search(r"pip install (/src|\.)\s*$", run)]
    assert project, "the project is installed (pip install of the build context)"
    assert not any(" -e " in run or "--editable" in run for run in project)
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "8000") in instructions


def test_dockerfile_pins_the_torch_the_makefile_pins() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        pin = re.search(rf'"{package}==([\d.]+)"', makefile)
        assert pin, package
        assert f'"{package}=={pin[1]}"' in DOCKERFILE, package


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "var", "out", "data", ".git", ".env"} <= ignored


# --- docs/deploy.md ----------------------------------------------------------------------
def test_the_guide_names_every_service_and_required_variable_and_the_scale_command() -> None:
    for name in SERVICES:
        assert f"`{name}`" in GUIDE, name
    for variable in required() | RAY_NAMES | {"DATA_ROOT", "STORAGE_PATH", "RAY_HEAD_PORT"}:
        assert variable in GUIDE, variable
    assert "docker compose up -d --scale ray-worker=N" in GUIDE
    assert "docker compose up -d --build" in GUIDE
    for port in ("8000", "8265", defaults()["RAY_HEAD_PORT"]):
        assert f"`{port}`" in GUIDE, port


def test_the_guide_opens_the_ray_ports_to_a_private_network_and_puts_the_api_behind_tls() -> None:
    overrides = [
        yaml.safe_load(block.replace("!override", "").replace("!reset", ""))
        for block in re.findall(r"```yaml\n(.*?)```", GUIDE, re.DOTALL)
    ]
    head_ports = [
        o["services"]["ray-head"].get("ports")
        for o in overrides
        if "ray-head" in o.get("services", {})
    ]
    assert ["10.0.0.5:8265:8265", "10.0.0.5:6380:6380"] in head_ports
    (api,) = [o["services"]["api"] for o in overrides if "FORWARDED_ALLOW_IPS" in str(o)]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert api["environment"]["PUBLIC_URL"].startswith("https://")
    for words in ("--proxy-headers", "X-Forwarded-Proto", "ports: !override"):
        assert words in GUIDE, words


def test_every_clrstudy_command_in_the_guide_and_the_compose_file_parses() -> None:
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", GUIDE, re.DOTALL))
    lines = [*shell.splitlines(), *command(SERVICES["api"])[-1].split("&&")]
    commands = [
        shlex.split(line.split("clrstudy ", 1)[1].split("#")[0])
        for line in lines
        if re.search(r"(^|\s)clrstudy (?!-)", line)
    ]
    assert len(commands) >= 6
    parser = build_parser()
    for args in commands:
        parser.parse_args(args)  # argparse exits on a command it does not know


def test_the_guide_tells_the_ray_start_command_of_the_compose_worker() -> None:
    worker = " ".join(command(SERVICES["ray-worker"]))
    assert worker.startswith("ray start --address=ray-head:")
    assert "ray start --address=<head-host>:6380 --block" in GUIDE
    assert "docker compose exec api clrstudy keys create alice --admin" in GUIDE


# --- scripts/local-cluster -------------------------------------------------------------
def test_local_cluster_script_is_executable_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2
    assert "start|status|stop-worker|stop" in usage.stderr
    text = SCRIPT.read_text()
    assert not re.search(r"^\s*[^#\n]*\bray stop\b", text, re.MULTILINE)  # never every Ray
