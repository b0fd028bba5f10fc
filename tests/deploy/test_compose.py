"""Checks of deploy/compose/docker-compose.yml: its services run workspace binaries (or
models/fetch.sh) with known CADA_* variables, share the models volume the right way round
(read-only for the gateway, writable for the trainer), and start in order."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml

from .layout import DEPLOY, MODELS_DIR
from .source_refs import command_problems, env_var_problems

COMPOSE = DEPLOY / "compose" / "docker-compose.yml"


@pytest.fixture
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_problems(compose: dict) -> list[str]:
    problems = []
    services = compose.get("services", {})
    for name in ("gateway", "trainer", "models-fetch"):
        if name not in services:
            problems.append(f"compose: service {name} missing")
    declared = set(compose.get("volumes", {}))
    for name, s in services.items():
        where = f"compose/{name}"
        if "image" not in s and "build" not in s:
            problems.append(f"{where}: neither image nor build")
        image = s.get("image", "")
        if image and not re.fullmatch(r"\$\{CADA_IMAGE:-cada(-cuda)?:[\w.-]+\}|cada(-cuda)?:[\w.-]+", image):
            problems.append(f"{where}: image {image} is not built by deploy/docker")

        def words(v):
            return v if isinstance(v, list) else shlex.split(v or "")

        command = " ".join(words(s.get("entrypoint")) + words(s.get("command")))
        if not re.search(r"(^|[\s/])cada-[a-z]+\b|fetch\.sh", command):
            problems.append(f"{where}: runs neither a workspace binary nor models/fetch.sh: {command!r}")
        problems += command_problems(command, where)
        env = s.get("environment", {})
        names = list(env) if isinstance(env, dict) else [e.split("=")[0] for e in env]
        problems += env_var_problems(names, where)
        for v in s.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if source and not source.startswith((".", "/")) and source not in declared:
                problems.append(f"{where}: volume {source} is not declared")
    gateway = services.get("gateway", {})
    test = " ".join(gateway.get("healthcheck", {}).get("test", []))
    if "/readyz" not in test and "/healthz" not in test:
        problems.append("compose/gateway: healthcheck must probe /readyz or /healthz")
    trainer = services.get("trainer", {})
    command = " ".join(str(x) for x in trainer.get("command", []))
    if "cada-trainer schedule" not in command or "--interval-minutes" not in command or "--once" in command:
        problems.append("compose/trainer: must run the schedule loop (cada-trainer schedule --interval-minutes N)")
    mounts = {}
    for name, s in services.items():
        for v in s.get("volumes", []):
            src, dst, *mode = v.split(":")
            mounts.setdefault(name, {})[dst] = (src, mode)
    models = {n: m.get(MODELS_DIR) for n, m in mounts.items()}
    if not models.get("gateway") or models["gateway"][1] != ["ro"]:
        problems.append("compose/gateway: the models volume must be mounted read-only")
    if not models.get("trainer") or models["trainer"][1] or models["trainer"][0] != (models.get("gateway") or [None])[0]:
        problems.append("compose/trainer: must share the gateway's models volume, writable")
    depends = gateway.get("depends_on", {})
    if depends.get("models-fetch", {}).get("condition") != "service_completed_successfully":
        problems.append("compose/gateway: must wait for models-fetch to complete")
    return problems


def test_compose_file(compose):
    assert compose_problems(compose) == []


def test_compose_checks_can_fail(compose):
    bogus = copy.deepcopy(compose)
    bogus["services"]["gateway"]["entrypoint"] = ["/usr/local/bin/cada-server"]
    assert any("cada-server" in p for p in compose_problems(bogus))
    once = copy.deepcopy(compose)
    once["services"]["trainer"]["command"] = ["exec cada-trainer schedule --once"]
    assert any("schedule loop" in p for p in compose_problems(once))
    rw = copy.deepcopy(compose)
    rw["services"]["gateway"]["volumes"] = ["models:/var/lib/cada/models", "data:/var/lib/cada/data"]
    assert any("read-only" in p for p in compose_problems(rw))
    typo = copy.deepcopy(compose)
    typo["services"]["trainer"]["environment"]["CADA_GATEWAY"] = "x"
    assert any("CADA_GATEWAY " in p + " " for p in compose_problems(typo))
