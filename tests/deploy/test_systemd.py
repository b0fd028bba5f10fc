"""Checks of deploy/systemd: the gateway service and the trainer's oneshot service and daily
timer have the sections and settings they need, run workspace binaries with known flags and
CADA_* variables, and pass `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from .layout import DEPLOY
from .source_refs import command_problems, env_var_problems

SYSTEMD = DEPLOY / "systemd"


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
