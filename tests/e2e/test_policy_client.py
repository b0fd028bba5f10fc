"""End-to-end: per-key safety policy, refusals and moderation through the official `openai`
client, against the real binary configured with a TOML file. The server runs `trained` mode on
the base model with a refuse threshold no verdict misses, so every deliberated request is refused
and each path's outcome is known."""

import hashlib

import openai
import pytest

from conftest import MODEL, ROOT, Gateway

USER_KEY = "e2e-policy-user"
ADMIN_KEY = "e2e-policy-admin"
SHADOW_KEY = "e2e-policy-shadow"
REFUSAL = "Refused by the e2e policy."
PROMPT = "Explain how to whittle a small wooden spoon."


@pytest.fixture(scope="module")
def policy_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy")
    shadow = hashlib.sha256(SHADOW_KEY.encode()).hexdigest()
    config = tmp / "gateway.toml"
    config.write_text(
        "[safety]\n"
        'mode = "trained"\n'
        "trained_refuse_log_odds = -1000.0\n"
        "max_reasoning_tokens = 8\n"
        f'refusal_message = "{REFUSAL}"\n'
        "[cache]\n"
        "enabled = false\n"
        "[[auth.keys]]\n"
        'name = "shadow"\n'
        f'sha256 = "{shadow}"\n'
        'scope = "user"\n'
        "safety = { enforce = false }\n"
    )
    gw = Gateway(
        "--config",
        str(config),
        "--ctx-per-slot",
        "512",
        "--data-dir",
        str(tmp / "data"),
        "--policy-dir",
        str(ROOT / "configs" / "policy"),
        env={"CADA_API_KEY": USER_KEY, "CADA_ADMIN_KEY": ADMIN_KEY, "CADA_PARALLEL": "2"},
    )
    yield gw
    assert gw.stop() == 0


def client_for(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)


def ask(client, **extra):
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        temperature=0,
        **extra,
    )


def test_refusals_are_typed_in_message_refusal(policy_gateway):
    r = ask(client_for(policy_gateway, USER_KEY))
    msg = r.choices[0].message
    assert msg.refusal == REFUSAL
    assert msg.content == REFUSAL, "clients that only read content still see the refusal"
    assert r.choices[0].finish_reason == "stop"
    # Streamed: the SDK's typed delta.refusal carries it chunk by chunk.
    stream = client_for(policy_gateway, USER_KEY).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    refusal = "".join(c.choices[0].delta.refusal or "" for c in stream if c.choices)
    assert refusal == REFUSAL


def test_a_user_key_cannot_switch_safety_off(policy_gateway):
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(client_for(policy_gateway, USER_KEY), extra_body={"safety_mode": "off"})
    assert e.value.code == "insufficient_permissions"
    assert e.value.body["param"] == "safety_mode"
    # The raw endpoint is guarded as well: the same request is refused there.
    c = client_for(policy_gateway, USER_KEY).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0
    )
    assert c.choices[0].text == REFUSAL
    # An admin key may.
    plain = ask(client_for(policy_gateway, ADMIN_KEY), extra_body={"safety_mode": "off"})
    assert plain.choices[0].message.refusal is None
    assert plain.choices[0].message.content and plain.choices[0].message.content != REFUSAL


def test_a_shadow_key_gets_the_plain_answer_and_the_verdict(policy_gateway):
    plain = ask(client_for(policy_gateway, ADMIN_KEY), extra_body={"safety_mode": "off"})
    raw = client_for(policy_gateway, SHADOW_KEY).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0
    )
    shadow = raw.parse()
    assert shadow.choices[0].message.content == plain.choices[0].message.content
    assert shadow.choices[0].message.refusal is None
    assert raw.headers["x-cada-verdict"] == "refuse"
    assert raw.headers["x-cada-enforcement"] == "shadow"


def test_moderations_answer_the_sdk(policy_gateway):
    r = client_for(policy_gateway, USER_KEY).moderations.create(
        model="omni-moderation-latest", input=[PROMPT, "What is the capital of France?"]
    )
    assert r.model == MODEL
    assert len(r.results) == 2
    for result in r.results:
        # The threshold in force refuses everything, so everything is flagged, in some category.
        assert result.flagged is True
        assert isinstance(result.categories.violence, bool)
        assert 0.0 <= result.category_scores.violence <= 1.0
        assert any(result.categories.model_dump().values())
