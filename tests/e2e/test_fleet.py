"""Two gateway replicas share one PostgreSQL case store (the fleet set-up of deploy/): 1,000
borderline requests logged at once through both are each stored exactly once, as a case or as a
counted near-duplicate merge, and no two open cases are near-duplicates of each other (the merge
decision is made in the database, not in either replica's memory). Feedback reaches a case
whichever replica served the answer.

Needs CADA_TEST_POSTGRES_URL (scripts/test.sh sets it from scripts/test-postgres.sh): a role that
may create databases. Its absence fails the test, it never skips."""

import concurrent.futures as cf
import json
import os
import random
import subprocess
import urllib.request
import uuid

import pytest

from conftest import MODEL, ROOT, Gateway

BORDERLINE = 1000
MERGE_THRESHOLD = 0.92


def psql(url: str, sql: str) -> str:
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atc", sql], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def database():
    admin = os.environ.get("CADA_TEST_POSTGRES_URL")
    assert admin, "CADA_TEST_POSTGRES_URL is not set: run scripts/test.sh, or export it from scripts/test-postgres.sh"
    name = "cada_fleet_" + uuid.uuid4().hex[:12]
    psql(admin, f"CREATE DATABASE {name}")
    base, _, _ = admin.rpartition("/")
    yield f"{base}/{name}"
    psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prompts() -> list[str]:
    """Distinct requests from the policy files, each asked twice (the copies go to different
    replicas at about the same time, so their merges race)."""
    texts: list[str] = []
    for file, key in [("dev.jsonl", "prompt"), ("calib.jsonl", "prompt"), ("cases.jsonl", "request")]:
        for line in (ROOT / "configs" / "policy" / file).read_text().splitlines():
            if line.strip():
                texts.append(json.loads(line)[key])
    texts = list(dict.fromkeys(texts))
    random.Random(7).shuffle(texts)
    return [t for t in texts for _ in range(2)]


def chat(url: str, text: str) -> dict:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 1,
        "temperature": 0,
        "safety_mode": "trained",
    }
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_two_replicas_store_every_borderline_request_exactly_once(database, tmp_path):
    config = tmp_path / "gateway.toml"
    # Every request with a verdict is borderline (the band is all of [0, 1)), one reasoning
    # token keeps requests cheap, and no cache: each request reaches the model and the store.
    config.write_text(
        f"""
[safety]
confidence_band = [0.0, 1.0]
max_reasoning_tokens = 1
[cache]
enabled = false
[store.cases]
merge_threshold = {MERGE_THRESHOLD}
"""
    )
    replicas = [
        Gateway(
            "--config", str(config),
            "--data-dir", str(tmp_path / f"data-{i}"),
            "--policy-dir", str(ROOT / "configs" / "policy"),
            "--threads", "1",
            env={"CADA_STORE_URL": database, "CADA_PARALLEL": "8"},
        )
        for i in range(2)
    ]
    try:
        texts = prompts()
        assert len(texts) >= BORDERLINE + 100
        logged: list[tuple[int, str]] = []
        served = 0
        with cf.ThreadPoolExecutor(16) as pool:
            # Requests go out in waves until 1,000 came back borderline (nearly all do).
            position = 0
            while len(logged) < BORDERLINE:
                wave = texts[position : position + (BORDERLINE - len(logged))]
                assert wave, "ran out of prompts before 1,000 borderline answers"
                futures = {pool.submit(chat, replicas[(position + i) % 2].url, t): (position + i) % 2 for i, t in enumerate(wave)}
                position += len(wave)
                for f in cf.as_completed(futures):
                    r = f.result()
                    served += 1
                    if r["cada"]["borderline"]:
                        logged.append((futures[f], r["id"]))
        assert len(logged) == BORDERLINE
        assert {replica for replica, _ in logged} == {0, 1}

        # Feedback on answers of one replica, sent to the other, lands on the logged case.
        for replica, response_id in logged[:20]:
            other = replicas[1 - replica]
            status, body = post(other.url + "/v1/feedback", {"response_id": response_id, "label": "correct"})
            assert status == 200, body
            assert body["created_case"] is False, body
    finally:
        # SIGTERM drains each replica's store queue before it exits.
        codes = [gw.stop() for gw in replicas]
    assert codes == [0, 0], "".join(replicas[0].log[-20:] + replicas[1].log[-20:])
    for gw in replicas:
        log = "".join(gw.log)
        assert "dropped a store write" not in log and "cannot log a case" not in log, log[-3000:]

    ids = sorted(response_id for _, response_id in logged)
    linked = psql(database, "SELECT response_id FROM case_responses ORDER BY response_id").split("\n")
    assert linked == ids, "every borderline response is linked to exactly one case"
    cases, occurrences = map(int, psql(database, "SELECT count(*), sum(occurrences) FROM cases").split("|"))
    assert occurrences == BORDERLINE, "each logged request counted once: as a case or as a merge"
    assert cases < BORDERLINE, "the repeated requests merged"
    print(f"fleet: {served} responses, {BORDERLINE} borderline: {cases} cases, {BORDERLINE - cases} merged")
    assert int(psql(database, "SELECT count(*) FROM responses")) == served
    duplicates = psql(
        database,
        f"""SELECT count(*) FROM cases a JOIN cases b ON a.seq < b.seq
            WHERE a.status = 'pending' AND b.status = 'pending'
              AND cada_dot(a.embedding, b.embedding) / (a.embedding_norm * b.embedding_norm) >= {MERGE_THRESHOLD}""",
    )
    assert duplicates == "0", "two open cases are near-duplicates: a merge was lost to a race"
    assert int(psql(database, "SELECT count(*) FROM feedback")) == 20
