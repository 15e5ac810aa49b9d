"""The shipped example plugin: e-mail addresses and card numbers never reach a remote provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from minigate_plugins.redact import RedactOptions, luhn_valid, redact_body, redact_text
from tests.fakes.upstream import FakeUpstream, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

OPTIONS = RedactOptions()
SECRET = "Mail jane.doe+work@example.co.uk, card 4111 1111 1111 1111 (exp 2027), ref 1234567890123456."
REDACTED = "Mail [EMAIL], card [CARD NUMBER] (exp 2027), ref 1234567890123456."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SECRET, REDACTED),
        ("4111-1111-1111-1111 and 5500000000000004", "[CARD NUMBER] and [CARD NUMBER]"),
        ("amex 3782 822463 10005.", "amex [CARD NUMBER]."),
        ("order 12 4111 1111 1111 1111 paid", "order 12 [CARD NUMBER] paid"),
        # Numbers that are no card stay: a Luhn-invalid 16 digits, a phone number, dates, an IBAN-like run.
        ("4111 1111 1111 1112", "4111 1111 1111 1112"),
        ("call +1 555-123-4567 on 2024-01-15", "call +1 555-123-4567 on 2024-01-15"),
        ("user@localhost and a@b", "user@localhost and a@b"),
        ("write to ops@mail.example.com.", "write to [EMAIL]."),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text, OPTIONS) == expected


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_the_body_is_copied_never_changed_in_place() -> None:
    parts = [{"type": "text", "text": "to a@example.com"}, {"type": "image_url", "image_url": {"url": "x"}}]
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": parts}, {"role": "assistant"}]}
    out, counts = redact_body(body, OPTIONS)
    assert out["messages"][0]["content"][0]["text"] == "to [EMAIL]" and counts == [1, 0]
    assert out["messages"][0]["content"][1] is parts[1]
    assert parts[0]["text"] == "to a@example.com"  # the original, still there for a local fallback
    prompts, _ = redact_body({"prompt": ["a@example.com", 7], "input": "4111111111111111"}, OPTIONS)
    assert prompts == {"prompt": ["[EMAIL]", 7], "input": "[CARD NUMBER]"}


def test_unknown_options_are_refused_naming_the_key() -> None:
    raw = {"plugins": {"modules": ["minigate_plugins.redact:Redact"], "settings": {"redact": {"options": {"mail": 1}}}}}
    # The path is the gateway's, the sentence around the key msgspec's own.
    with pytest.raises(ConfigError, match=r"plugins\.settings\.redact\.options: .*\bmail\b"):
        configure(raw, builtin_extensions(), env={})


def config(remote: FakeUpstream, **options: Any) -> dict[str, Any]:
    """``remote`` (an OpenAI-compatible upstream) first, the in-process echo model as its fallback."""
    return {
        "agents": {"defaults": {"model": {"primary": "remote/gpt-4o-mini", "fallbacks": ["local/echo"]}}},
        "models": {
            "providers": {
                "remote": {"endpoint": remote.url, "auth": {"type": "api_key", "value": "primary-key"}},
                "local": {"type": "fake", "models": ["echo"]},
            }
        },
        "plugins": {"modules": ["minigate_plugins.redact:Redact"], "settings": {"redact": {"options": options}}},
    }


def ask(server: InProcessGateway, text: str, **extra: Any) -> httpx.Response:
    body = {
        "model": "default",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
    }
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return server.http.post(f"{server.url}/chat/completions", json={**body, **extra}, headers=headers, timeout=10)


def test_a_remote_provider_gets_the_redacted_prompt(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream
) -> None:
    server = inprocess_factory(config(primary))
    assert ask(server, SECRET).status_code == 200
    assert ask(server, SECRET, stream=True).status_code == 200
    for request in primary.requests:
        assert request.body is not None
        assert request.body["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": REDACTED},
        ]


def test_a_local_fallback_gets_the_prompt_as_written(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream
) -> None:
    primary.script(Status(503))
    server = inprocess_factory(config(primary))
    answer = ask(server, SECRET)
    assert answer.headers["x-minigate-provider"] == "local"
    assert answer.json()["choices"][0]["message"]["content"] == f"You said: {SECRET}"
    assert primary.requests[0].body is not None and primary.requests[0].body["messages"][1]["content"] == REDACTED


def test_everywhere_redacts_for_local_providers_too(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream
) -> None:
    primary.script(Status(503))
    server = inprocess_factory(config(primary, everywhere=True))
    assert ask(server, SECRET).json()["choices"][0]["message"]["content"] == f"You said: {REDACTED}"
