"""The deploy/ files: Prometheus loads them as written, every alert expression is
valid PromQL, and every CryptoVault metric a rule uses is one the app exports."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cryptovault.observability.metrics import Metrics

ROOT = Path(__file__).parents[1]
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def exported_names() -> set[str]:
    metrics = Metrics()
    names = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(s.name for s in family.samples)
    # Read from live objects at scrape time (metrics.watch): present in a served app.
    names |= {
        "cryptovault_ticks_received_total",
        "cryptovault_market_last_tick_timestamp_seconds",
        "cryptovault_feed_leader",
    }
    # Histogram series exist once observed; their families are registered.
    for family in list(names):
        if family.endswith("_seconds"):
            names |= {family + "_bucket", family + "_count", family + "_sum"}
    return names


def test_alert_rules_are_valid_and_use_exported_metrics():
    rules = load("deploy/prometheus-alerts.yml")
    exported = exported_names()
    seen = set()
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in seen
            seen.add(rule["alert"])
            promql_parser.parse(rule["expr"])  # raises on invalid PromQL
            assert DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            used = set(re.findall(r"\b(?:cryptovault|process)_[a-z0-9_]+", rule["expr"]))
            assert used <= exported, f"{rule['alert']} uses unknown metrics {used - exported}"
    # The alerts the operations checklist asks for.
    assert {
        "CryptoVaultHighErrorRate",
        "CryptoVaultSlowRequests",
        "CryptoVaultFeedStalled",
        "CryptoVaultNotReady",
        "CryptoVaultWebSocketSpike",
    } <= seen


def test_prometheus_scrapes_the_app_and_loads_the_rules():
    config = load("deploy/prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/prometheus-alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["app:8000"]
    compose = load("docker-compose.yml")
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1] for v in prometheus["volumes"] if v.startswith("./")}
    assert mounts == {"/etc/prometheus/prometheus.yml", "/etc/prometheus/prometheus-alerts.yml"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions (name, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(" ")
        if name == "FROM":
            current = []
            parts = args.split()
            stages[parts[2] if len(parts) > 2 else "final"] = current
        current.append((name, args.strip()))
    return stages


def test_the_image_builds_the_web_app_where_it_serves_it(tmp_path):
    """The Docker image serves the web app and GraphiQL: its node stage, replayed here
    in the image's file layout (only what its COPY lines copy), builds them, and the
    final stage puts them where WEB_DIST_DIR says (no Docker daemon on CI machines)."""
    import shutil
    import subprocess

    stages = _dockerfile_stages()
    web = stages["web"]
    workdir = Path("/")
    for name, args in web:
        if name == "WORKDIR":
            workdir = Path(args)
        elif name == "COPY":
            *sources, dest = args.split()
            target = tmp_path / (workdir / dest).relative_to("/")
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    ignored = shutil.ignore_patterns("node_modules", "dist", "gql", "screenshots")
                    shutil.copytree(origin, target, ignore=ignored, dirs_exist_ok=True)
                elif dest.endswith("/") or dest == "." or len(sources) > 1:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
        elif name == "RUN":
            here = tmp_path / workdir.relative_to("/")
            if args.startswith("npm ci"):
                _lockfile_in_sync(here)
                if _installed_from(here / "package-lock.json", ROOT / "web" / "node_modules"):
                    # What `npm ci` installs from this lockfile: here from `make test`.
                    (here / "node_modules").symlink_to(ROOT / "web" / "node_modules")
                    continue
            subprocess.run(args, shell=True, cwd=here, check=True, capture_output=True)
    copied = [a.split() for n, a in stages["final"] if n == "COPY" and a.startswith("--from=web")]
    assert len(copied) == 1, copied
    _, built, served = copied[0]
    env = " ".join(a for n, a in stages["final"] if n == "ENV")
    assert f"WEB_DIST_DIR={served}" in env.split()
    dist = tmp_path / Path(built).relative_to("/")
    assert (dist / "index.html").is_file() and (dist / "graphiql.html").is_file()
    assert any((dist / "assets").glob("*.js"))
    assert "https://" not in (dist / "index.html").read_text()  # nothing from a CDN


def _lockfile_in_sync(web: Path) -> None:
    """What `npm ci` checks first: the lockfile was made from this package.json."""
    import json

    package = json.loads((web / "package.json").read_text())
    locked = json.loads((web / "package-lock.json").read_text())["packages"][""]
    for field in ("dependencies", "devDependencies"):
        assert package.get(field, {}) == locked.get(field, {}), (
            f"web/package-lock.json is stale ({field}): run npm install in web/"
        )


def _installed_from(lockfile: Path, modules: Path) -> bool:
    """Whether `modules` holds exactly the packages `lockfile` pins (npm's own record
    of an install, node_modules/.package-lock.json)."""
    import json

    record = modules / ".package-lock.json"
    if not record.is_file():
        return False
    pinned = {
        k: v.get("version")
        for k, v in json.loads(lockfile.read_text())["packages"].items()
        # Optional packages for other platforms are never installed here.
        if k.startswith("node_modules/") and not v.get("optional")
    }
    installed = json.loads(record.read_text())["packages"]
    return all(installed.get(k, {}).get("version") == v for k, v in pinned.items())
