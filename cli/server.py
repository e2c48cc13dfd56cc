"""Server operations: `serve`, `demo` (what `make run` runs), `db upgrade`, `keys create`,
`keys list` and `keys revoke`."""

from __future__ import annotations

import argparse
import copy
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cli.client import Client
    from service.store import Store

POLL_S = 2.0  # seconds between the demo's looks at its study


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from service.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
    )
    return 0


def log_config(access_log: Path | None) -> dict[str, Any]:
    """uvicorn's logging, quiet: warnings only, and the access log in `access_log` (None:
    on stdout, as uvicorn has it)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    if access_log is not None:
        access_log.parent.mkdir(parents=True, exist_ok=True)
        config["formatters"]["access"]["use_colors"] = False
        config["handlers"]["access"] = {
            "formatter": "access",
            "class": "logging.FileHandler",
            "filename": str(access_log),
        }
    return config


def _demo(args: argparse.Namespace) -> int:
    """`make run`: the service on the embedded default, a first key, the demo study followed."""
    import uvicorn

    from api.main import create_app
    from cli.client import Client
    from service.db import make_engine, upgrade
    from service.ray_cluster import RayCluster
    from service.settings import get_settings
    from service.store import Store
    from workers.spec import load_spec

    settings = get_settings()
    spec = load_spec(args.spec).model_dump(mode="json")  # a bad spec stops us before Ray
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        _, key = Store(engine).create_api_key("local", admin=True)
    finally:
        engine.dispose()
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    access_log = (
        None if args.access_log else Path(settings.storage_path).resolve().parent / ("access.log")
    )
    print(f"API key (admin 'local'), shown once: {key}", flush=True)
    where = f"; its access log: {access_log}" if access_log else ""
    print(f"starting the service at {base} and a local Ray head (10-30 s){where}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=log_config(access_log),
        )
    )
    demo = Demo(Client(base, key), args.spec, spec, RayCluster(settings).dashboard_url, server)
    threading.Thread(target=demo.follow, name="demo", daemon=True).start()
    try:
        server.run()  # until Ctrl-C; its shutdown stops the dispatcher and the Ray head
    except KeyboardInterrupt:
        pass  # uvicorn raises the Ctrl-C again once it has shut down: the way out, not an error
    finally:
        demo.stop()
    return 0


class Demo:
    """Submits the demo study once the service is ready and follows it to its end."""

    def __init__(
        self, client: Client, spec_path: str, spec: dict[str, Any], dashboard: str, server: Any
    ) -> None:
        from rich.console import Console

        from cli.progress import ViewProgress

        self.client = client
        self.spec_path = spec_path
        self.spec = spec
        self.dashboard = dashboard
        self.server = server
        self.progress = ViewProgress(Console())

    def follow(self) -> None:
        from cli.client import ClientError

        try:
            with self.client:
                self._follow()
        except ClientError as error:
            if not self.server.should_exit:  # not an error while the service shuts down
                print(f"clrstudy demo: {error}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.progress.__exit__(None, None, None)

    def _follow(self) -> None:
        while not self.server.started:
            if self.server.should_exit:
                return
            time.sleep(0.5)
        while not self.client.ready():
            time.sleep(1)
        study = self.client.submit(self.spec)
        url = self.client.study_url(study["id"])
        print(f"submitted {self.spec_path}: {url}", flush=True)
        print(f"its report (log in at {self.client.url}/ with the key above): {url}/report.html")
        print(f"Ray dashboard: {self.dashboard}", flush=True)
        with self.progress:
            while True:
                view = self.client.study(study["id"])
                self.progress.show(view)
                if view["finished_at"] or self.server.should_exit:
                    break
                time.sleep(POLL_S)
        error = f": {view['error']}" if view.get("error") else ""
        print(f"study {study['id']} {view['status']}{error}", flush=True)
        report = self.client.call("GET", f"/studies/{study['id']}/report").json()
        for verdict in report.get("verdicts", []):
            print(verdict)
        print(f"report: {url}/report.html; Ctrl-C stops the service and Ray", flush=True)


def _db(args: argparse.Namespace) -> int:
    from service.db import upgrade
    from service.settings import get_settings

    url = get_settings().database_url
    upgrade(url)
    print(f"database at {_safe_url(url)} is at the latest revision")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _store() -> Iterator[Store]:
    """The store of the database in the settings, migrated first."""
    from service.db import make_engine, upgrade
    from service.settings import get_settings
    from service.store import Store

    url = get_settings().database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        yield Store(engine)
    finally:
        engine.dispose()


def _keys_create(args: argparse.Namespace) -> int:
    with _store() as store:
        record, key = store.create_api_key(args.name, admin=args.admin)
    print(key)
    role = "admin" if record.owner.admin else "owner"
    print(
        f"API key {record.prefix}... for {role} {record.owner.name!r}; shown only once",
        file=sys.stderr,
    )
    return 0


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def _keys_list(args: argparse.Namespace) -> int:
    with _store() as store:
        keys = store.list_api_keys()
    print(f"{'ID':>4}  {'NAME':<20} {'PREFIX':<13} {'CREATED':<17} {'LAST USED':<17} ADMIN")
    for key in keys:
        revoked = f"  revoked {_when(key.revoked_at)}" if key.revoked_at else ""
        print(
            f"{key.id:>4}  {key.owner.name:<20} {key.prefix:<13} {_when(key.created_at):<17} "
            f"{_when(key.last_used_at):<17} {'yes' if key.owner.admin else 'no'}{revoked}"
        )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from service.store import AmbiguousKey

    with _store() as store:
        try:
            key = store.find_api_key(args.key)
        except AmbiguousKey as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if key is None or not store.revoke_api_key(key.id):
            print(f"error: no unrevoked key {args.key!r}", file=sys.stderr)
            return 1
    print(f"revoked key {key.id} ({key.prefix}...) of {key.owner.name!r}; its studies stay")
    return 0


def add_server_commands(commands: Any) -> None:
    """Add `serve`, `demo`, `db upgrade` and `keys create|list|revoke` to the subparsers."""
    serve = commands.add_parser("serve", help="run the REST service (settings: environment)")
    serve.add_argument("--host", default=None, help="interface (default: $HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default: $PORT)")
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", help="serve, create a key, submit a study and follow it (make run)"
    )
    demo.add_argument("--spec", default="examples/digits.yaml", help="the study to submit")
    demo.add_argument(
        "--access-log",
        action="store_true",
        help="print the HTTP access log (default: it goes to var/access.log, the folder "
        "above STORAGE_PATH)",
    )
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply every migration").set_defaults(handler=_db)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="the key's owner")
    create.add_argument("--admin", action="store_true", help="may see every owner's studies")
    create.set_defaults(handler=_keys_create)
    key_commands.add_parser(
        "list", help="every key: id, name, prefix, created, last used, admin"
    ).set_defaults(handler=_keys_list)
    revoke = key_commands.add_parser(
        "revoke", help="revoke a key at once (its browser sessions end, its studies stay)"
    )
    revoke.add_argument("key", metavar="ID_OR_PREFIX", help="the key's id, or its prefix")
    revoke.set_defaults(handler=_keys_revoke)
