"""End-to-end: API keys and rate limits through the official `openai` client, against the real
binary configured with a TOML file (a key stored as its sha256) and CADA_* environment keys."""

import hashlib
import os
import subprocess
import urllib.error
import urllib.request

import openai
import pytest

from conftest import MODEL, ROOT, Gateway

USER_KEY = "e2e-user-key"
ADMIN_KEY = "e2e-admin-key"
LIMITED_KEY = "e2e-limited-key"


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    digest = hashlib.sha256(LIMITED_KEY.encode()).hexdigest()
    config = tmp / "gateway.toml"
    config.write_text(
        "[[auth.keys]]\n"
        'name = "limited"\n'
        f'sha256 = "{digest}"\n'
        'scope = "user"\n'
        "requests_per_minute = 2\n"
    )
    gw = Gateway(
        "--config",
        str(config),
        "--ctx-per-slot",
        "512",
        "--safety-mode",
        "off",
        "--data-dir",
        str(tmp / "data"),
        "--policy-dir",
        str(ROOT / "configs" / "policy"),
        env={"CADA_API_KEY": USER_KEY, "CADA_ADMIN_KEY": ADMIN_KEY, "CADA_PARALLEL": "2"},
    )
    yield gw
    assert gw.stop() == 0
    log = "".join(gw.log)
    for secret in (USER_KEY, ADMIN_KEY, LIMITED_KEY):
        assert secret not in log, "a key reached the log"


def client_for(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)


def ask(client):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
    )


def test_keys_are_required_and_checked(keyed_gateway):
    assert ask(client_for(keyed_gateway, USER_KEY)).choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client_for(keyed_gateway, "not-a-key"))
    assert e.value.code == "invalid_api_key"
    # A user key cannot call the review endpoints; the admin key can.
    def admin_status(key):
        req = urllib.request.Request(keyed_gateway.url + "/admin/cases", headers={"authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    assert admin_status(USER_KEY) == 403
    assert admin_status(ADMIN_KEY) == 200


def test_a_limited_key_gets_rate_limit_errors_with_headers(keyed_gateway):
    client = client_for(keyed_gateway, LIMITED_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    ask(client)
    with pytest.raises(openai.RateLimitError) as e:
        ask(client)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_no_keys_on_a_network_address_needs_insecure_no_auth(tmp_path):
    """What a plain `docker run` of the image (listening on 0.0.0.0) does without keys."""
    binary = os.environ.get("CADA_GATEWAY_BIN", str(ROOT / "target" / "release" / "cada-gateway"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADA_")}
    env.update({"CADA_LOG": "info", "NO_COLOR": "1"})
    args = [binary, "--listen", "0.0.0.0:0", "--registry", str(ROOT / "models" / "registry.toml"),
            "--adapter", "none", "--data-dir", str(tmp_path / "data"),
            "--policy-dir", str(ROOT / "configs" / "policy")]
    refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "--insecure-no-auth" in refused.stdout + refused.stderr
    proc = subprocess.Popen([*args, "--insecure-no-auth"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        else:
            raise AssertionError("the gateway did not start with --insecure-no-auth")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
