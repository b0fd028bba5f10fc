"""Prompt and answer text stays out of the gateway's logs unless `log_prompts` is on (set here
through a CADA__ variable, which also shows that every config key is reachable from the
environment)."""

from openai import OpenAI

from conftest import MODEL, Gateway

MARKER = "zebra-lantern-7731"


def _log_of_one_exchange(env: dict[str, str]) -> str:
    """Starts a gateway with `env`, asks one question naming MARKER, stops it; returns its log."""
    gw = Gateway("--safety-mode", "off", env=env)
    try:
        client = OpenAI(base_url=gw.url + "/v1", api_key="unused")
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Repeat the word {MARKER}."}],
            max_tokens=8,
            temperature=0,
        )
    finally:
        assert gw.stop() == 0
    return "".join(gw.log)


def test_prompts_stay_out_of_logs_by_default():
    log = _log_of_one_exchange({"CADA_LOG": "debug"})
    assert "request handled" in log, "debug logging was on"
    assert MARKER not in log


def test_log_prompts_logs_the_exchange():
    log = _log_of_one_exchange({"CADA__LOG_PROMPTS": "true"})
    assert "chat exchange" in log
    assert MARKER in log
