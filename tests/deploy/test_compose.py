"""Checks of deploy/compose/docker-compose.yml: its services run workspace binaries (or
models/fetch.sh) with known CADA_* variables, share the models volume the right way round
(read-only for the gateway, writable for the trainer), start in order, and share the case store:
a `postgres` service whose password comes from a required variable, which the gateway and the
trainer reach through CADA_STORE_URL (the trainer reads it directly, not through the gateway)."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml

from .layout import DEPLOY, MODELS_DIR
from .source_refs import command_problems, env_var_problems

COMPOSE = DEPLOY / "compose" / "docker-compose.yml"

# Services from images other than deploy/docker's, each pinned by a version tag.
THIRD_PARTY = {"postgres": r"postgres:\d+(\.\d+)*-alpine"}
# CADA_STORE_URL in compose: the password is only ever a reference to the required variable.
PASSWORD_VAR = "CADA_POSTGRES_PASSWORD"
STORE_URL = re.compile(
    r"postgres(?:ql)?://(?P<user>[^:@/]+):(?P<password>\$\{[^}]*\})@(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>\w+)")


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
        if name in THIRD_PARTY:
            if not re.fullmatch(THIRD_PARTY[name], s.get("image", "")):
                problems.append(f"{where}: image {s.get('image')!r} must be pinned like {THIRD_PARTY[name]}")
            for v in s.get("volumes", []):
                if v.split(":")[0] not in declared:
                    problems.append(f"{where}: volume {v.split(':')[0]} is not declared")
            continue
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
    problems += store_problems(compose)
    return problems


def interpolated(value: str) -> str:
    """What compose makes of a value with ${VAR...} references, for checks of its shape."""
    return re.sub(r"\$\{[^}]*\}", "VALUE", value)


def store_problems(compose: dict) -> list[str]:
    """The shared case store: a healthy, unpublished postgres service with its password from a
    required variable; the gateway and the trainer get CADA_STORE_URL for it and wait for it;
    the trainer reads the store, not the gateway; no literal password anywhere."""
    problems = []
    services = compose.get("services", {})
    pg = services.get("postgres")
    if pg is None:
        return ["compose: service postgres (the case store) missing"]
    env = pg.get("environment", {})
    password = str(env.get("POSTGRES_PASSWORD", ""))
    if not re.fullmatch(rf"\$\{{{PASSWORD_VAR}:\?[^}}]+\}}", password):
        problems.append(f"compose/postgres: POSTGRES_PASSWORD must be ${{{PASSWORD_VAR}:?message}} (required), not {password!r}")
    test = pg.get("healthcheck", {}).get("test", [])
    if pg.get("healthcheck", {}).get("disable") or "pg_isready" not in " ".join(test):
        problems.append("compose/postgres: needs a pg_isready healthcheck")
    if pg.get("ports"):
        problems.append("compose/postgres: must not be published on the host")
    if not any(str(v).endswith(":/var/lib/postgresql/data") for v in pg.get("volumes", [])):
        problems.append("compose/postgres: its data needs a named volume at /var/lib/postgresql/data")
    if pg.get("restart") != "unless-stopped":
        problems.append("compose/postgres: restart: unless-stopped")
    for name in ("gateway", "trainer"):
        s = services.get(name, {})
        where = f"compose/{name}"
        url = str(s.get("environment", {}).get("CADA_STORE_URL", ""))
        m = STORE_URL.fullmatch(url)
        if not m:
            problems.append(f"{where}: CADA_STORE_URL must be postgres://USER:${{{PASSWORD_VAR}}}@postgres:PORT/DB, not {url!r}")
        else:
            if m["host"] != "postgres" or m["port"] != "5432":
                problems.append(f"{where}: CADA_STORE_URL must reach the postgres service (postgres:5432), not {m['host']}:{m['port']}")
            if (m["user"], m["db"]) != (env.get("POSTGRES_USER"), env.get("POSTGRES_DB")):
                problems.append(f"{where}: CADA_STORE_URL's user and database must be the postgres service's")
            if not re.fullmatch(rf"\$\{{{PASSWORD_VAR}(:\?[^}}]*)?\}}", m["password"]):
                problems.append(f"{where}: CADA_STORE_URL's password must be ${{{PASSWORD_VAR}}}")
        if s.get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
            problems.append(f"{where}: must wait for postgres to be healthy")
    trainer = services.get("trainer", {})
    command = " ".join(str(x) for x in trainer.get("command", []))
    if "CADA_GATEWAY_URL" in trainer.get("environment", {}) or re.search(r"--gateway\b", command):
        problems.append("compose/trainer: must read the store, not the gateway (CADA_GATEWAY_URL/--gateway conflict with it)")
    if "CADA_ADMIN_KEY" in trainer.get("environment", {}):
        problems.append("compose/trainer: reading the store needs no admin key")
    if trainer.get("depends_on", {}).get("models-fetch", {}).get("condition") != "service_completed_successfully":
        problems.append("compose/trainer: must wait for models-fetch to complete")
    # No literal password: every URL's password and every *PASSWORD* value is a ${...} reference.
    for name, s in services.items():
        for key, value in (s.get("environment") or {}).items():
            value = str(value)
            for m in re.finditer(r"postgres(?:ql)?://[^:@/\s]+:(\$\{[^}]*\}|[^@\s]*)@", value):
                if not m.group(1).startswith("${"):
                    problems.append(f"compose/{name}: {key} holds a literal password")
            if "PASSWORD" in key and not re.fullmatch(r"\$\{[^}]+\}", value):
                problems.append(f"compose/{name}: {key} holds a literal password")
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


def test_compose_shares_the_postgres_store(compose):
    assert store_problems(compose) == []
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16-alpine"
    for name in ("gateway", "trainer"):
        url = services[name]["environment"]["CADA_STORE_URL"]
        assert interpolated(url) == "postgres://cada:VALUE@postgres:5432/cada", url
        assert PASSWORD_VAR in url
    # The trainer runs the schedule loop against the store, without the gateway.
    trainer = services["trainer"]
    assert "cada-trainer schedule" in " ".join(trainer["command"])
    assert "gateway" not in trainer.get("depends_on", {})
    assert "pgdata" in compose["volumes"]


def test_store_checks_can_fail(compose):
    assert store_problems({"services": {}}) == ["compose: service postgres (the case store) missing"]
    literal = copy.deepcopy(compose)
    pg = literal["services"]["postgres"]
    pg["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    pg["healthcheck"] = {"disable": True}
    pg["ports"] = ["5432:5432"]
    literal["services"]["gateway"]["environment"]["CADA_STORE_URL"] = "postgres://cada:hunter2@postgres:5432/cada"
    problems = store_problems(literal)
    assert any("POSTGRES_PASSWORD must be" in p for p in problems)
    assert any("pg_isready" in p for p in problems)
    assert any("published" in p for p in problems)
    assert sum("holds a literal password" in p for p in problems) == 2, problems
    old = copy.deepcopy(compose)
    trainer = old["services"]["trainer"]
    trainer["environment"] = {"CADA_GATEWAY_URL": "http://gateway:8080", "CADA_ADMIN_KEY": "${CADA_ADMIN_KEY:?x}"}
    trainer["depends_on"] = {"gateway": {"condition": "service_healthy"}}
    problems = store_problems(old)
    assert any("compose/trainer: CADA_STORE_URL must be" in p for p in problems)
    assert any("not the gateway" in p for p in problems)
    assert any("no admin key" in p for p in problems)
    assert any("compose/trainer: must wait for postgres" in p for p in problems)
    elsewhere = copy.deepcopy(compose)
    elsewhere["services"]["gateway"]["environment"]["CADA_STORE_URL"] = (
        "postgres://cada:${CADA_POSTGRES_PASSWORD}@db.example.com:5432/cada")
    assert any("postgres:5432" in p for p in store_problems(elsewhere))
    latest = copy.deepcopy(compose)
    latest["services"]["postgres"]["image"] = "postgres:latest"
    del latest["volumes"]["pgdata"]
    problems = compose_problems(latest)
    assert any("pinned" in p for p in problems)
    assert "compose/postgres: volume pgdata is not declared" in problems
