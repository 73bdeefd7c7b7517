"""What every scenario shares: child server processes, their CPU time and memory from
/proc, percentiles, and the machine description for the report."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The protection limits are for real clients; the load generator is one IP opening
# thousands of sockets and sending thousands of requests. Unknown names are ignored.
UNLIMITED = {
    "WS_MAX_CONNECTIONS_PER_IDENTITY": "100000",
    "WS_MAX_PENDING_PER_IP": "100000",
    "WS_MAX_SUBSCRIPTIONS": "100",
    "COST_BUDGET": "100000000",
    "COST_BUDGET_ANONYMOUS": "100000000",
    "MAX_QUERY_COST": "100000",
}


def raise_open_files() -> int:
    """As many file descriptors as the hard limit allows (10,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


@contextlib.contextmanager
def child(args: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run `python -m bench.servers <args>` listening on `port`; yields its pid."""
    environ = {**os.environ, **UNLIMITED, **(env or {}), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", *args, "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The pid of the store process serving each URL store() yielded (its CPU time).
STORE_PIDS: dict[str, int] = {}


@contextlib.contextmanager
def store() -> Iterator[str]:
    """The embedded store in its own process (like a MongoDB server): the app
    processes can then run on uvloop, as they do in production."""
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-store-")
    # DATA_DIR too: the command's settings write the secrets a development
    # configuration generates there (never into the working tree's ./data).
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING", "DATA_DIR": data}
    process = subprocess.Popen(
        [sys.executable, "-m", "cryptovault", "db", "--port", str(port), "--data-dir", data],
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        STORE_PIDS[url] = process.pid
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "strawberry": version("strawberry-graphql"),
        "graphql-core": version("graphql-core"),
        "uvicorn": version("uvicorn"),
        "websockets": version("websockets"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "—"
    return f"{value:,.{digits}f}"


async def in_process_services(store_url: str) -> Any:
    """The app's services in this process (no feed, a fresh database on the bench
    store, the bench's limits): for scenarios that execute operations in process."""
    import uuid

    from cryptovault.config import load_settings
    from cryptovault.services import start_services

    settings = load_settings(
        {
            "ENVIRONMENT": "test",
            "MONGODB_URL": store_url,
            "MONGODB_DB": f"bench_{uuid.uuid4().hex[:8]}",
            "DATA_DIR": tempfile.mkdtemp(prefix="bench-inproc-"),
            "MARKET_FEED": "none",
            "LOG_LEVEL": "WARNING",
            **UNLIMITED,
        },
        env_file=None,
    )
    return await start_services(settings, feed=None)
