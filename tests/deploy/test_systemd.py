"""Checks of deploy/systemd: the gateway service and the trainer's oneshot service and daily
timer have the sections and settings they need, run workspace binaries with known flags and
CADA_* variables, agree on the case store (the gateway's SQLite file by default, the URL of the
optional /etc/cada/store.env for both when it exists), and pass `systemd-analyze verify` where
it is installed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from .layout import DATA_DIR, DEPLOY
from .source_refs import command_problems, env_var_problems

SYSTEMD = DEPLOY / "systemd"
# Optional (the leading "-"): CADA_STORE_URL=postgres://... for both units.
STORE_ENV = "-/etc/cada/store.env"


@pytest.fixture
def units() -> dict[str, str]:
    """Unit file name -> its text."""
    return {p.name: p.read_text() for p in sorted(SYSTEMD.iterdir()) if p.suffix in (".service", ".timer")}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def systemd_problems(units: dict[str, str]) -> list[str]:
    problems = []
    parsed = {name: parse_unit(text) for name, text in units.items()}
    expected = {
        "cada-gateway.service": ("Unit", "Service", "Install"),
        "cada-trainer.service": ("Unit", "Service"),
        "cada-trainer.timer": ("Unit", "Timer", "Install"),
    }
    for name, sections in expected.items():
        unit = parsed.get(name)
        if unit is None:
            problems.append(f"{name} missing")
            continue
        problems += [f"{name}: no [{s}] section" for s in sections if s not in unit]
    for name, unit in parsed.items():
        for exec_start in values(unit, "Service", "ExecStart"):
            binary = shlex.split(exec_start)[0]
            if not binary.startswith("/"):
                problems.append(f"{name}: ExecStart needs an absolute path: {binary}")
            problems += command_problems(exec_start, name)
        envs = [v.split("=", 1)[0] for e in values(unit, "Service", "Environment") for v in shlex.split(e)]
        problems += env_var_problems(envs, name)
    gateway = parsed.get("cada-gateway.service", {})
    if [os.path.basename(shlex.split(v)[0]) for v in values(gateway, "Service", "ExecStart")] != ["cada-gateway"]:
        problems.append("cada-gateway.service: ExecStart must run cada-gateway")
    stop = values(gateway, "Service", "TimeoutStopSec")
    if not stop or int(stop[0].rstrip("s")) <= 30:
        problems.append("cada-gateway.service: TimeoutStopSec must exceed limits.shutdown_grace_secs (30)")
    trainer = parsed.get("cada-trainer.service", {})
    if values(trainer, "Service", "Type") != ["oneshot"]:
        problems.append("cada-trainer.service: Type=oneshot")
    starts = values(trainer, "Service", "ExecStart")
    if len(starts) != 1 or not re.search(r"/cada-trainer schedule\b.*--once\b", starts[0]):
        problems.append(f"cada-trainer.service: ExecStart must be cada-trainer schedule --once, not {starts}")
    timer = parsed.get("cada-trainer.timer", {})
    calendar = values(timer, "Timer", "OnCalendar")
    if calendar not in (["daily"], ["*-*-* 00:00:00"]) and not (
            len(calendar) == 1 and re.fullmatch(r"\*-\*-\* \d\d:\d\d(:\d\d)?", calendar[0])):
        problems.append(f"cada-trainer.timer: OnCalendar must be daily, not {calendar}")
    if values(timer, "Timer", "Persistent") != ["true"]:
        problems.append("cada-trainer.timer: Persistent=true")
    if not values(timer, "Timer", "RandomizedDelaySec"):
        problems.append("cada-trainer.timer: RandomizedDelaySec missing")
    target = values(timer, "Timer", "Unit") or ["cada-trainer.service"]
    if target[0] not in parsed:
        problems.append(f"cada-trainer.timer: activates {target[0]}, which is not here")
    if values(timer, "Install", "WantedBy") != ["timers.target"]:
        problems.append("cada-trainer.timer: WantedBy=timers.target")
    problems += store_problems(parsed)
    return problems


def environment(unit: dict) -> dict[str, str]:
    return dict(v.split("=", 1) for e in values(unit, "Service", "Environment") for v in shlex.split(e))


def store_problems(parsed: dict[str, dict]) -> list[str]:
    """Both units read the optional store.env (CADA_STORE_URL for PostgreSQL); without it the
    trainer reads the gateway's SQLite file directly, with that directory writable (SQLite's
    WAL), and never through the gateway (CADA_GATEWAY_URL/--gateway conflict with the store)."""
    problems = []
    gateway = parsed.get("cada-gateway.service", {})
    trainer = parsed.get("cada-trainer.service", {})
    for name, unit in (("cada-gateway.service", gateway), ("cada-trainer.service", trainer)):
        files = values(unit, "Service", "EnvironmentFile")
        if STORE_ENV not in files:
            problems.append(f"{name}: EnvironmentFile={STORE_ENV} (optional) missing")
        elif files.index(STORE_ENV) != len(files) - 1:
            problems.append(f"{name}: {STORE_ENV} must be the last EnvironmentFile")
    data_dir = environment(gateway).get("CADA_DATA_DIR", "")
    if "CADA_STORE_URL" in environment(gateway):
        problems.append("cada-gateway.service: CADA_STORE_URL comes from store.env, or the default SQLite file")
    sqlite = f"{data_dir}/cases.sqlite"
    env = environment(trainer)
    if env.get("CADA_STORE_URL") != sqlite:
        problems.append(f"cada-trainer.service: CADA_STORE_URL must default to the gateway's {sqlite}, not {env.get('CADA_STORE_URL')!r}")
    starts = " ".join(values(trainer, "Service", "ExecStart"))
    if "CADA_GATEWAY_URL" in env or re.search(r"--gateway\b", starts):
        problems.append("cada-trainer.service: must read the store, not the gateway (CADA_GATEWAY_URL/--gateway conflict with it)")
    if re.search(r"--store\b", starts):
        problems.append("cada-trainer.service: --store would win over store.env; use CADA_STORE_URL")
    writable = [p.lstrip("-") for v in values(trainer, "Service", "ReadWritePaths") for p in v.split()]
    if data_dir not in writable:
        problems.append(f"cada-trainer.service: ReadWritePaths must include {data_dir} (SQLite's WAL)")
    return problems


def test_systemd_units(units):
    assert systemd_problems(units) == []


def test_systemd_checks_can_fail(units):
    broken = dict(units)
    broken["cada-trainer.timer"] = units["cada-trainer.timer"].replace("Persistent=true", "")
    broken["cada-trainer.service"] = units["cada-trainer.service"].replace(
        "cada-trainer schedule --once", "cada-trainer scheduler --once")
    broken["cada-gateway.service"] = units["cada-gateway.service"].replace("[Install]", "[Installation]")
    problems = systemd_problems(broken)
    assert any("Persistent" in p for p in problems)
    assert any("scheduler" in p for p in problems)
    assert any("[Install]" in p for p in problems)


def test_systemd_units_share_the_store(units):
    parsed = {name: parse_unit(text) for name, text in units.items()}
    assert store_problems(parsed) == []
    assert environment(parsed["cada-trainer.service"])["CADA_STORE_URL"] == f"{DATA_DIR}/cases.sqlite"
    for name in ("cada-gateway.service", "cada-trainer.service"):
        assert f"EnvironmentFile={STORE_ENV}" in units[name]
        assert "/etc/cada/store.env" in units[name].split("[Unit]")[0], f"{name}: document store.env"


def test_store_checks_can_fail(units):
    broken = dict(units)
    broken["cada-trainer.service"] = (
        units["cada-trainer.service"]
        .replace(f"Environment=CADA_STORE_URL={DATA_DIR}/cases.sqlite", "Environment=CADA_GATEWAY_URL=http://127.0.0.1:8080")
        .replace(f"EnvironmentFile={STORE_ENV}", "EnvironmentFile=/etc/cada/cada.env")
        .replace(f" -{DATA_DIR}", ""))
    broken["cada-gateway.service"] = units["cada-gateway.service"].replace(
        f"EnvironmentFile={STORE_ENV}", "Environment=CADA_STORE_URL=postgres://cada:x@db/cada")
    problems = store_problems({name: parse_unit(text) for name, text in broken.items()})
    assert any("cada-gateway.service: EnvironmentFile" in p for p in problems)
    assert any("cada-trainer.service: EnvironmentFile" in p for p in problems)
    assert any("comes from store.env" in p for p in problems)
    assert any("must default to the gateway's" in p for p in problems)
    assert any("not the gateway" in p for p in problems)
    assert any("ReadWritePaths" in p for p in problems)
    flag = dict(units)
    flag["cada-trainer.service"] = units["cada-trainer.service"].replace(
        "schedule --once", "schedule --store /var/lib/cada/data/cases.sqlite --once")
    assert any("--store would win" in p for p in systemd_problems(flag))


def test_systemd_analyze_verify(tmp_path, tool, units):
    analyze = tool("systemd-analyze")
    paths = []
    for name, text in units.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    out = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True)
    # The binaries are not installed on the test machine; anything else is a finding.
    findings = [l for l in (out.stdout + out.stderr).splitlines()
                if l.strip() and "is not executable" not in l and "No such file or directory" not in l]
    assert findings == []
