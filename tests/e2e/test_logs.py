"""Prompt and answer text stays out of the gateway's logs unless `log_prompts` is on (set here
through a CADA__ variable, which also shows that every config key is reachable from the
environment)."""

from openai import OpenAI

from conftest import MODEL, Gateway

MARKER = "zebra-lantern-7731"


def _ask(gw: Gateway) -> str:
    client = OpenAI(base_url=gw.url + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Repeat the word {MARKER}."}],
        max_tokens=8,
        temperature=0,
    )
    return r.choices[0].message.content or ""


def test_prompts_stay_out_of_logs_by_default():
    gw = Gateway("--safety-mode", "off", env={"CADA_LOG": "debug"})
    try:
        _ask(gw)
    finally:
        assert gw.stop() == 0
    log = "".join(gw.log)
    assert "request handled" in log, "debug logging was on"
    assert MARKER not in log


def test_log_prompts_logs_the_exchange():
    gw = Gateway("--safety-mode", "off", env={"CADA__LOG_PROMPTS": "true"})
    try:
        _ask(gw)
    finally:
        assert gw.stop() == 0
    log = "".join(gw.log)
    assert "chat exchange" in log
    assert MARKER in log
