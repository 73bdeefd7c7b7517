"""`cryptovault` command line: serve, db, migrate, backup, restore, reconcile,
export-schema, schema-diff, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from cryptovault.config import ConfigError, Settings, load_settings
from cryptovault.logs import configure_logging


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers
    if workers < 1:
        print("cryptovault serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        missing = [
            name
            for name, value in (
                ("REDIS_URL", settings.redis_url),
                ("MONGODB_URL", settings.mongodb_url),
            )
            if not value
        ]
        if missing:
            print(
                f"cryptovault serve: --workers {workers} needs {' and '.join(missing)}: worker "
                "processes share nothing but Redis (ticks, credential changes, rate limits) "
                "and the store; the in-process bus and the embedded store cannot be shared. "
                "Run `cryptovault db` for a shared store, or serve with one worker.",
                file=sys.stderr,
            )
            return 2
        return _serve_workers(settings, args)
    from cryptovault.app import create_app

    server = _server(create_app(settings), settings, args.host, args.port)
    server.run()
    return 0 if server.started else 3


def _server(app: Any, settings: Settings, host: str | None, port: int | None) -> Any:
    import uvicorn

    from cryptovault.http.uvicorn_headers import validate_headers_once
    from cryptovault.lifecycle import GracefulServer

    validate_headers_once()
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        # The embedded store's wire server needs asyncio's Server.abort_clients(),
        # which uvloop lacks (its shutdown would fail); with MongoDB, uvloop is fine.
        loop="auto" if settings.mongodb_url else "asyncio",
        # In-flight HTTP requests get this long after SIGTERM.
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),
        **connection_options(settings),
    )
    # SIGTERM: stop accepting, close WebSockets with 1001, let requests finish.
    return GracefulServer(config, websockets_timeout=min(5.0, settings.shutdown_timeout_seconds))


def connection_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's per-connection settings (the bench's servers use them too)."""
    from cryptovault.wsprotocol import LeanWebSocketsProtocol

    return {
        # Forwarded headers are believed only from TRUSTED_PROXIES, by the app itself
        # (uvicorn would trust 127.0.0.1 by default).
        "proxy_headers": False,
        # The edge logs every request, with its request id (uvicorn.access is
        # disabled: logs.py); uvicorn would still format its own line's fields.
        "access_log": False,
        # uvicorn's websockets-sansio protocol with less state per connection: the
        # same frames on the wire (cryptovault/wsprotocol.py).
        "ws": LeanWebSocketsProtocol,
        # Protocol-level keep-alive (every WebSocket protocol) and the frame size
        # limit; the app enforces the same message size and its own pings.
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_ping_interval": settings.ws_ping_interval_seconds,
        "ws_ping_timeout": settings.ws_ping_timeout_seconds,
        # Compression is per socket: it would undo "serialize once" for subscriptions
        # (bench/RESULTS.md: +80% CPU per frame, 2x memory per socket).
        "ws_per_message_deflate": settings.ws_per_message_deflate,
    }


def _serve_workers(settings: Settings, args: argparse.Namespace) -> int:
    """`--workers N`: the parent binds the listening socket and starts N worker
    processes, each a whole instance (its own services, on Redis and the shared
    store) accepting from that socket. SIGTERM/SIGINT are passed on to every worker,
    which shuts down as one `serve` does. A worker that exits by itself stops the
    others too (exit code 3): run under a supervisor that restarts the service."""
    import logging
    import multiprocessing
    from multiprocessing.connection import wait

    log = logging.getLogger("cryptovault.workers")
    listener = _server(None, settings, args.host, args.port).config.bind_socket()
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(target=_worker, args=(n, listener), name=f"cryptovault-worker-{n}")
        for n in range(1, args.workers + 1)
    ]
    stopping = False
    failed = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                process.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            if stopping:
                break
            process.start()
        started = [p for p in processes if p.pid is not None]
        log.info(
            "workers started",
            extra={"workers": [p.pid for p in started], "port": args.port or settings.port},
        )
        deadline: float | None = None
        while any(p.exitcode is None for p in started):
            if stopping and deadline is None:
                deadline = time.monotonic() + _stop_bound(settings)
            # Woken at least every second: a signal's handler does not end `wait`.
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            wait([p.sentinel for p in started if p.exitcode is None], timeout=max(0.0, left))
            if deadline is not None and time.monotonic() >= deadline:
                stuck = [p for p in started if p.exitcode is None]
                for process in stuck:
                    if process.pid is not None:  # it logs where it is (`_log_stacks`)
                        os.kill(process.pid, signal.SIGUSR1)
                wait([p.sentinel for p in stuck], timeout=1.0)
                for process in stuck:
                    if process.exitcode is None:
                        log.error(
                            "worker did not stop in time: killed",
                            extra={"worker": process.name, "seconds": _stop_bound(settings)},
                        )
                        failed = True
                        process.kill()
                        process.join()
            for process in started:
                if process.exitcode is not None and not stopping:
                    log.error(
                        "worker exited: stopping the others",
                        extra={"worker": process.name, "exit_code": process.exitcode},
                    )
                    failed = True
                    stop(signal.SIGTERM, None)
        for process in started:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
    return 3 if failed else 0


def _stop_bound(settings: Settings) -> float:
    """How long a stopping worker may take before the parent kills it: each of its
    bounded shutdown steps (websockets closed, in-flight requests drained, the
    lifespan's own close) at most SHUTDOWN_TIMEOUT_SECONDS, plus a margin for a
    loaded machine. A worker stuck past that is killed, logged, and `serve` exits 3,
    so a supervisor never waits on a hung process."""
    return 3 * settings.shutdown_timeout_seconds + 10


def _worker(number: int, listener: Any) -> None:
    """One worker process (spawned): settings from the same environment, its own app
    and services, serving on the parent's listening socket."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    _label_logs(number)
    signal.signal(signal.SIGUSR1, _log_stacks)
    from cryptovault.app import create_app

    server = _server(create_app(settings), settings, None, None)
    server.run(sockets=[listener])
    if not server.started:
        sys.exit(3)


def _log_stacks(signum: int, frame: object) -> None:
    """SIGUSR1 (sent by `serve --workers`' parent to a worker that does not stop in
    time): one log line with where every thread is and what every asyncio task
    awaits, innermost last, so a hung stop can be read from the logs."""
    import logging
    import traceback

    threads = {
        str(ident): traceback.format_stack(stack) for ident, stack in sys._current_frames().items()
    }
    tasks = {}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    for task in asyncio.all_tasks(loop) if loop is not None else ():
        awaiting, chain = [], task.get_coro()
        while chain is not None:
            code_frame = getattr(chain, "cr_frame", None) or getattr(chain, "gi_frame", None)
            if code_frame is not None:
                code = code_frame.f_code
                awaiting.append(f"{code.co_filename}:{code_frame.f_lineno} {code.co_qualname}")
            chain = getattr(chain, "cr_await", None) or getattr(chain, "gi_yieldfrom", None)
        tasks[task.get_name()] = awaiting
    logging.getLogger("cryptovault.workers").warning(
        "stacks", extra={"threads": threads, "tasks": tasks}
    )


def _label_logs(number: int) -> None:
    """Every log line of a worker carries `"worker": N` (JSON logs)."""
    import logging

    def label(record: logging.LogRecord) -> bool:
        record.worker = number
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(label)


def _with_store(settings: Settings, command: str, work: Callable[[Any], Awaitable[int]]) -> int:
    """Run `work(db)` against the configured store (raw documents: no models). What
    goes wrong (an unreachable store, a bad backup file, a refused migration) is one
    line on stderr and exit code 1, never a traceback."""
    from pymongo.errors import PyMongoError

    from cryptovault.backup import BackupError
    from cryptovault.db import open_store
    from cryptovault.migrations import MigrationError

    async def run() -> int:
        store = await open_store(
            settings.mongodb_url, settings.mongodb_db, settings.data_dir, init_models=False
        )
        try:
            return await work(store.db)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (BackupError, MigrationError, OSError, PyMongoError) as exc:
        print(f"cryptovault {command}: {exc}", file=sys.stderr)
        return 1


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from cryptovault.migrations import applied, current_version, discover, migrate

    async def work(db: Any) -> int:
        migrations = discover()
        if args.status:
            done = await applied(db)
            for m in migrations:
                state = (
                    done[m.version]["applied_at"].isoformat() if m.version in done else "pending"
                )
                print(f"{m.id:<32} {state:<34} {m.description}")
            return 0
        steps = await migrate(db, args.to, steps_down=args.down, migrations=migrations)
        for step in steps:
            print(f"{step.direction:<4} {step.migration.id} ({step.duration_ms:.0f} ms)")
        version = await current_version(db)
        print(f"store {settings.mongodb_db} at version {version} (latest {len(migrations)})")
        return 0

    return _with_store(settings, args.command, work)


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from cryptovault.trading.reconcile import reconcile

    async def work(db: Any) -> int:
        report = await reconcile(db)
        for asset, total in report.trial_balance.items():
            print(f"trial balance {asset:<6} {total}")
        for problem in report.discrepancies:
            print(f"DISCREPANCY {problem}")
        print(
            f"{'ok' if report.ok else 'NOT RECONCILED'}: {report.checked_balances} balances, "
            f"{report.checked_orders} open orders, {len(report.discrepancies)} discrepancies"
        )
        return 0 if report.ok else 1

    return _with_store(settings, args.command, work)


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from cryptovault.backup import backup

    async def work(db: Any) -> int:
        summary = await backup(db, Path(args.out))
        print(
            f"backed up {summary.documents} documents from {len(summary.counts)} collections "
            f"of {summary.database} to {summary.path}"
        )
        return 0

    return _with_store(settings, args.command, work)


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from cryptovault.backup import BackupError, read_header, restore

    try:
        header = read_header(Path(args.file))
    except (BackupError, OSError) as exc:
        print(f"cryptovault restore: {exc}", file=sys.stderr)
        return 1

    async def work(db: Any) -> int:
        summary = await restore(db, Path(args.file), drop=args.drop)
        print(
            f"restored {summary.documents} documents into {len(summary.counts)} collections "
            f"of {summary.database} (backup of {header['database']} taken {header['created_at']})"
        )
        return 0

    return _with_store(settings, args.command, work)


def _db(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from cryptovault.db import EmbeddedServer

    log = logging.getLogger("cryptovault.db")

    async def run() -> None:
        server = EmbeddedServer(Path(args.data_dir or settings.data_dir), args.host, args.port)
        url = await server.start()
        log.info("embedded store serving", extra={"url": url, "path": str(server.path)})
        print(f"MONGODB_URL={url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(run())
    return 0


def _export_schema(settings: Settings | None, args: argparse.Namespace) -> int:
    from cryptovault.schema import schema_sdl

    sys.stdout.write(schema_sdl())
    return 0


def _schema_diff(settings: Settings | None, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cryptovault.schema import compat

    new_path = Path(args.new)
    new = new_path.read_text()
    if args.old is not None:
        label, old = args.old, Path(args.old).read_text()
    else:
        found = compat.previous_schema(new_path, args.base)
        if found is None:
            print(f"schema-diff: no previous {new_path.name} to compare with: nothing to check")
            return 0
        label, old = found
    for change in compat.dangerous_changes(old, new):
        print(f"schema-diff: warning: {change}")
    breaking = compat.unannounced_breaking_changes(old, new)
    for change in breaking:
        print(f"schema-diff: BREAKING: {change}", file=sys.stderr)
    if breaking:
        print(
            f"schema-diff: {len(breaking)} breaking change(s) against {label} without a "
            "deprecation: keep the field (argument, enum value) with deprecation_reason "
            "and remove it in a later release",
            file=sys.stderr,
        )
        return 1
    print(f"schema-diff: no unannounced breaking change against {label}")
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password is not None:
        return args.password
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty() and not args.promote_existing:
        import getpass

        first = getpass.getpass("Password of the new admin account: ")
        if first and getpass.getpass("Repeat: ") != first:
            raise SystemExit("cryptovault: the passwords differ")
        return first or None
    return None


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from cryptovault.db import open_store
    from cryptovault.errors import DomainError
    from cryptovault.events.bus import MemoryBus, RedisBus
    from cryptovault.events.hub import Hub
    from cryptovault.security.audit import AuditLog
    from cryptovault.security.identity import IdentityService
    from cryptovault.security.mailer import build_mailer

    if args.promote_existing and (args.password is not None or args.password_stdin):
        print(
            "cryptovault: --promote-existing takes no password: the account's owner sets "
            "one with a password reset",
            file=sys.stderr,
        )
        return 2
    password = _read_password(args)

    async def run() -> int:
        store = await open_store(settings.mongodb_url, settings.mongodb_db, settings.data_dir)
        redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            # With Redis, the audit entry reaches the running instances, whose open
            # sockets of the promoted account end at once; without it they see the
            # change within WS_CREDENTIAL_RECHECK_SECONDS.
            bus = RedisBus(redis, prefix=f"{settings.mongodb_db}:") if redis else MemoryBus()
            audit = AuditLog(bus, Hub())
            identity = IdentityService(settings, audit, build_mailer(settings))
            try:
                user, outcome = await identity.create_admin(
                    args.email, password, promote_existing=args.promote_existing
                )
            except DomainError as exc:
                hint = " (--promote-existing)" if exc.code == "CONFLICT" else ""
                print(f"cryptovault: {exc.message}{hint}", file=sys.stderr)
                return 1
            finally:
                # A publish that failed is retried in the background: not past exit.
                await audit.flush()
        finally:
            if redis is not None:
                await redis.aclose()
            await store.close()
        if outcome == "created":
            print(f"created admin {user.email} (id {user.id})")
        elif outcome == "promoted":
            print(
                f"{user.email} is now an admin (id {user.id}): its sessions and API keys "
                "were revoked, its two-factor authentication (if any) removed and its "
                "password cleared; its owner signs in after a password reset "
                "(requestPasswordReset, mailed to that address)"
            )
        else:
            print(f"{user.email} is already an admin (id {user.id}); nothing changed")
        return 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptovault", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API (HTTP and WebSocket)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes on one port (N > 1 needs REDIS_URL and MONGODB_URL)",
    )
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="run the embedded store as a standalone server")
    db.add_argument("--host", default="127.0.0.1")
    db.add_argument("--port", type=int, default=27017)
    db.add_argument("--data-dir", default=None)
    db.set_defaults(func=_db)

    admin = sub.add_parser(
        "create-admin",
        help="create an admin account (or, explicitly, promote an existing one)",
        description="Create an admin account. An existing account is refused: anyone may "
        "have registered the address. --promote-existing makes it an admin anyway and "
        "takes everything its registrant set away (sessions, API keys, two-factor, "
        "password): its owner signs in after a password reset. With the embedded store, "
        "stop `serve` first or point MONGODB_URL at a shared `cryptovault db`.",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--promote-existing",
        action="store_true",
        help="promote an existing account; it must then reset its password",
    )
    secret = admin.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the new account's password (visible in ps)")
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    admin.set_defaults(func=_create_admin)

    migrate = sub.add_parser(
        "migrate",
        help="apply (or roll back) store migrations",
        description="Without options: apply every pending migration. With the embedded "
        "store, stop `serve` first or point MONGODB_URL at a shared `cryptovault db`.",
    )
    target = migrate.add_mutually_exclusive_group()
    target.add_argument(
        "--to", type=int, default=None, metavar="N", help="migrate up or down to version N"
    )
    target.add_argument(
        "--down", type=int, default=None, metavar="N", help="roll back the last N migrations"
    )
    target.add_argument("--status", action="store_true", help="list migrations and their state")
    migrate.set_defaults(func=_migrate)

    backup = sub.add_parser(
        "backup",
        help="write every collection to a compressed Extended JSON lines file",
        description="Write every collection of MONGODB_DB to FILE (gzip, Extended JSON "
        "lines, mode 0600). Not a point-in-time snapshot while the app writes.",
    )
    backup.add_argument("--out", required=True, metavar="FILE")
    backup.set_defaults(func=_backup)

    restore = sub.add_parser(
        "restore",
        help="load a backup file into MONGODB_DB",
        description="Load FILE into MONGODB_DB. Refuses collections that already hold "
        "documents unless --drop (which drops them first). Stop `serve` first.",
    )
    restore.add_argument("file", metavar="FILE")
    restore.add_argument(
        "--drop", action="store_true", help="drop the backup's collections before loading"
    )
    restore.set_defaults(func=_restore)

    check = sub.add_parser(
        "reconcile",
        help="check the books: trial balance, balances vs. ledger, holds vs. open orders",
        description="Exit 0 when everything reconciles, 1 with the discrepancies listed.",
    )
    check.set_defaults(func=_reconcile)

    export = sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.set_defaults(func=_export_schema, needs_settings=False)

    diff = sub.add_parser(
        "schema-diff",
        help="fail on a breaking schema change that was not deprecated first",
        description="Compare a schema file with its previous version (by default: the "
        "merge base with origin/main, else the commit before HEAD; nothing to compare "
        "with passes). Exit 1 when a change breaks clients without a deprecation "
        "announcing it; dangerous changes are printed as warnings.",
    )
    diff.add_argument("--new", default="schema.graphql", metavar="FILE")
    diff.add_argument("--old", default=None, metavar="FILE", help="compare with this file")
    diff.add_argument("--base", default=None, metavar="REF", help="compare with FILE at REF")
    diff.set_defaults(func=_schema_diff, needs_settings=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "needs_settings", True):
        return args.func(None, args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"cryptovault: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return args.func(settings, args)
