"""`kill -9` loses nothing the gateway acknowledged: feedback answered 200 is on disk, so a
gateway killed while feedback keeps arriving finds every acknowledged entry after a restart
on the same data directory."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

from conftest import MODEL, Gateway

ADMIN = "kill9-admin-key"


def _post(url: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _get(url: str, key: str) -> dict:
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def test_acknowledged_feedback_survives_kill_9(tmp_path):
    data = tmp_path / "data"
    # Without the anonymous feedback budget, so writes are still arriving when the kill lands.
    env = {"CADA_ADMIN_KEY": ADMIN, "CADA__AUTH__ANONYMOUS__FEEDBACK_PER_MINUTE": "0"}
    gw = Gateway("--data-dir", str(data), "--safety-mode", "off", env=env)
    acknowledged: dict[str, str] = {}  # feedback id -> case id
    try:
        responses = []
        for i in range(4):
            status, r = _post(
                gw.url + "/v1/chat/completions",
                {"model": MODEL, "messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 1},
            )
            assert status == 200, r
            responses.append(r["id"])
        stop = threading.Event()
        lock = threading.Lock()

        def send(worker: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    status, r = _post(
                        gw.url + "/v1/feedback",
                        {"response_id": responses[(worker + n) % len(responses)], "label": "correct"},
                    )
                except OSError:
                    return  # the gateway is gone: this one was never acknowledged
                if status == 200:
                    with lock:
                        acknowledged[r["id"]] = r["case_id"]
                n += 1

        workers = [threading.Thread(target=send, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(3)
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(timeout=10)
        stop.set()
        for w in workers:
            w.join(timeout=40)
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
    with lock:
        sent = dict(acknowledged)
    assert len(sent) >= 10, f"only {len(sent)} feedback acknowledged before the kill"

    again = Gateway("--data-dir", str(data), "--safety-mode", "off", env=env)
    try:
        stored: set[str] = set()
        for case_id in set(sent.values()):
            case = _get(f"{again.url}/admin/cases/{case_id}", ADMIN)
            stored.update(f["id"] for f in case["feedback"])
        lost = set(sent) - stored
        assert not lost, f"{len(lost)} of {len(sent)} acknowledged feedback lost"
    finally:
        assert again.stop() == 0
