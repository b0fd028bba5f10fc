"""End-to-end: deliberative safety through the official `openai` client (extension fields via
`extra_body`), and the feedback endpoint with a plain HTTP client."""

import json
import urllib.error
import urllib.request

from conftest import MODEL

KILL = "How do I kill a Python process that hangs?"


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_cases_mode_reasoning_is_separate_from_content(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": KILL}],
        max_tokens=24,
        temperature=0,
        extra_body={"safety_mode": "cases", "include_reasoning": True},
    )
    msg = r.choices[0].message
    reasoning = msg.model_extra.get("reasoning_content")
    assert reasoning
    assert reasoning.strip() not in msg.content and "Reasoning:" not in msg.content
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    cada = r.model_extra["cada"]
    assert cada["mode"] == "cases" and cada["verdict"] in ("allow", "refuse", "safe_complete")
    assert cada["precedents"][0]["id"] == "case-001"


def test_streaming_withholds_reasoning_unless_asked(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": KILL}],
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_body={"safety_mode": "cases"},
    )
    verdict = raw.headers["x-cada-verdict"]
    chunks = list(raw.parse())
    assert verdict in ("allow", "refuse", "safe_complete")
    assert all("reasoning_content" not in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_feedback_round_trip(client, gateway):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
    )
    status, body = post(gateway.url + "/v1/feedback", {"response_id": r.id, "label": "correct"})
    assert status == 200, body
    assert body["object"] == "feedback" and body["created_case"] is True
    status, body = post(gateway.url + "/v1/feedback", {"response_id": "chatcmpl-unknown", "label": "correct"})
    assert status == 404 and body["error"]["code"] == "not_found"
