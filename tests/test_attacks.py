"""Issue 7's attacks, each a test against the gateway (here in process: none needs a socket). Every attack in the
issue, and the tests that make it:

================================================  ====================================================================
attack                                            tests (file::name)
================================================  ====================================================================
``api_base``, ``base_url``, ``api_key`` or extra  tests/test_v1.py::
headers in a body, or the client's headers, do        test_routing_fields_and_client_headers_never_reach_upstream
not change where or how the upstream is called    tests/test_attacks.py::
                                                      test_routing_fields_change_nothing_upstream
an endpoint at link-local metadata addresses or   tests/test_config.py::test_refusals_name_the_json_path
``file://`` is refused in config                  tests/test_attacks.py::
                                                      test_metadata_and_non_http_endpoints_are_refused
upstream redirects are not followed               tests/test_attacks.py::
                                                      test_upstream_redirects_are_not_followed
``' OR 1=1--``, 10 KB keys, NUL bytes and look-   tests/test_attacks_keys.py::
alike Unicode are 401 with no database text in        test_hostile_keys_in_the_websocket_auth_frame_are_refused
the reply                                         tests/test_attacks_keys_socket.py::
                                                      test_hostile_keys_in_the_authorization_header_get_a_clean_401
                                                      test_hostile_secrets_in_the_login_form_get_the_login_page_again
                                                  tests/storage/test_keys.py::
                                                      test_malformed_tokens_never_reach_the_database
                                                      test_look_alikes_of_a_real_key_are_rejected
a spoofed Host or X-Forwarded-For does not        tests/test_attacks_keys.py::
change an auth decision                               test_spoofed_host_and_forwarding_headers_change_no_auth_decision
                                                  tests/test_attacks_keys_socket.py::
                                                      test_rotating_x_forwarded_for_buys_no_extra_login_attempts
                                                      test_forwarded_addresses_are_believed_only_from_trusted_proxies
one key cannot read another key's usage or        tests/test_attacks_access.py::
conversations                                         test_a_key_reads_no_other_keys_usage
                                                      test_a_visitor_reads_and_changes_no_other_visitors_conversations
                                                  tests/web/test_auth.py::
                                                      test_public_chat_lets_guests_chat_but_not_administer
model names with ``../`` cannot touch files       tests/test_attacks_access.py::
outside models_dir                                    test_model_names_touch_nothing_outside_models_dir
                                                  tests/providers/onnx/test_onnx_store.py::
                                                      test_bad_names_are_refused
                                                      test_model_path_stays_inside_models_dir
template syntax in prompts is rendered literally  tests/test_attacks.py::
(/v1, the web chat, a workflow route)                 test_template_syntax_in_prompts_stays_text
                                                  tests/test_workflows.py::
                                                      test_input_is_data_never_template_code
a secret canary appears in no log, metric, page,  tests/test_secrets.py::
row or error body                                     test_no_secret_reaches_logs_metrics_database_or_answers
                                                  tests/web/test_security.py::
                                                      test_no_secret_reaches_any_page
the admin UI refuses cross-site form posts        tests/web/test_security.py::
                                                      test_cross_site_form_posts_are_refused
                                                  tests/web/test_auth.py::
                                                      test_cross_site_posts_are_refused_even_with_the_token
                                                      test_login_form_needs_its_own_token
================================================  ====================================================================
"""

from __future__ import annotations

import html
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from markupsafe import escape

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from minigate.providers.netguard import GuardedResolver
from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def trap() -> Iterator[FakeUpstream]:
    """An upstream no request may ever reach."""
    with FakeUpstream("trap") as fake:
        yield fake


ROUTING_FIELDS = {
    "api_base": "{trap}",
    "base_url": "{trap}",
    "api_key": "sk-stolen",
    "extra_headers": {"x-injected": "1", "authorization": "Bearer sk-stolen"},
    "headers": {"x-injected": "1"},
    "custom_llm_provider": "openai",
    "api_version": "x",
    "organization": "org-evil",
    "extra_query": {"api-version": "evil"},
    "extra_body": {"api_base": "{trap}"},
    "default_headers": {"x-injected": "1"},
    "default_query": {"x": "1"},
    "api_type": "azure",
}
CLIENT_HEADERS = {"x-api-key": "sk-stolen", "api-key": "sk-stolen", "openai-organization": "org-evil",
                  "x-forwarded-host": "127.0.0.1", "x-injected": "1", "cookie": "a=b"}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("chat/completions", {"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
        ("completions", {"model": "default", "prompt": "hi"}),
        ("embeddings", {"model": "primary/embedder", "input": "hi"}),
    ],
    ids=["chat stream", "completions", "embeddings"],
)
def test_routing_fields_change_nothing_upstream(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream, trap: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    fields = {k: v.replace("{trap}", trap.url) if isinstance(v, str) else v for k, v in ROUTING_FIELDS.items()}
    answer = inprocess_gateway.http.post(f"/v1/{path}", json={**body, **fields}, headers={**AUTH, **CLIENT_HEADERS})
    assert answer.status_code == 200, answer.text
    seen = primary.requests[-1]
    assert seen.path == f"/v1/{path}" and seen.body is not None
    assert not set(ROUTING_FIELDS) & set(seen.body)
    assert seen.headers["authorization"] == "Bearer primary-key"
    assert not {"x-api-key", "api-key", "openai-organization", "x-forwarded-host", "x-injected", "cookie"} & set(
        seen.headers
    )
    assert trap.requests == []


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_redirects_are_not_followed(
    inprocess_gateway: InProcessGateway,
    primary: FakeUpstream,
    backup: FakeUpstream,
    trap: FakeUpstream,
    code: int,
    stream: bool,
) -> None:
    gateway = inprocess_gateway
    primary.script(Status(code, headers={"location": f"{trap.url}/chat/completions"}))
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    answer = gateway.http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "backup"  # fell back
    assert trap.requests == []  # our key never went where the redirect pointed
    [row] = gateway.wait_rows(1)
    assert f"HTTP {code}" in row["hops"] or "redirect" in row["hops"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "HTTP://169.254.169.254/",
        "http://169.254.170.2/v2/credentials",  # ECS task metadata
        "http://[fe80::1]/v1",
        "http://[fe80::a9fe:a9fe%25eth0]/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://user@169.254.169.254/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://METADATA/v1",
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "ftp://127.0.0.1/v1",
        "gopher://127.0.0.1:6379/_",
        "unix:///run/docker.sock",
        "//169.254.169.254/v1",
        # The same address in the spellings inet_aton (and so connect) accepts, and with a trailing dot
        "http://2852039166/",
        "http://0xA9FEA9FE/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://169.254.169.254./",
        "http://metadata.google.internal./",
        "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata service
        "http://100.100.100.200/",  # Alibaba Cloud's
        # Issue 12: Unicode spellings the URL library folds to 169.254.169.254 before connecting
        "http://169\uff0e254\uff0e169\uff0e254/v1",  # full-width dots
        "http://169\u3002254\u3002169\u3002254/v1",  # ideographic dots
        "http://\u2460\u2465\u2468.\u2461\u2464\u2463.\u2460\u2465\u2468.\u2461\u2464\u2463/v1",  # circled digits
        "http://\uff11\uff16\uff19.254.169.254/v1",  # full-width digits
        "http://\uff2d\uff25\uff34\uff21\uff24\uff21\uff34\uff21/v1",  # full-width METADATA
        # ... and the IPv6 forms that embed it
        "http://[::169.254.169.254]/v1",  # IPv4-compatible
        "http://[::ffff:0:a9fe:a9fe]/v1",  # IPv4-translated
        "http://[64:ff9b::a9fe:a9fe]/v1",  # NAT64
        "http://[64:ff9b:1:a9fe:a9:fe00::]/v1",  # NAT64, local-use prefix (/48)
        "http://[2002:a9fe:a9fe::1]/v1",  # 6to4
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/v1",  # Teredo, client 169.254.169.254
        "http://[2001:db8::5efe:a9fe:a9fe]/v1",  # ISATAP
        "http://[::ffff:100.100.100.200]/v1",
        "http://169.254.169.254%2e/v1",  # percent-escapes are no part of a host name
    ],
)
def test_metadata_and_non_http_endpoints_are_refused(endpoint: str) -> None:
    raw = {
        "agents": {"defaults": {"model": {"primary": "evil/m"}}},
        "models": {"providers": {"evil": {"endpoint": endpoint}}},
    }
    with pytest.raises(ConfigError) as refused:
        configure(raw, builtin_extensions(), env={})
    assert "models.providers.evil.endpoint:" in str(refused.value)


PROMPT = "{{ 7*7 }} {% for x in range(3) %}x{% endfor %} {{ config }} {{ ''.__class__.__mro__ }} ${7*7} <%= 7*7 %>"
EVALUATED = ("49", "xxx", "<class", "&lt;class", "Config(", "{'")  # what a template engine would have made of it


def _literal(text: str) -> None:
    assert PROMPT in text, text
    assert not [e for e in EVALUATED if e in text.replace(PROMPT, "")], text


def test_template_syntax_in_prompts_stays_text(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    config = two_provider_config(primary, backup)
    flow = [{"type": "prompt_template", "template": "Q: {{ input }}"}, {"type": "llm_inference", "model": "default"}]
    config["workflows"] = [{"name": "ask", "steps": flow, "triggers": [{"path": "/api/ask"}]}]
    server = inprocess_factory(config)
    primary.set_default(Reply(content=PROMPT))
    # /v1, JSON and streamed
    answer = server.client().chat.completions.create(
        model="default", messages=[{"role": "system", "content": PROMPT}, {"role": "user", "content": PROMPT}]
    )
    assert [m["content"] for m in primary.requests[-1].body["messages"]] == [PROMPT, PROMPT]  # type: ignore[index]
    assert answer.choices[0].message.content == PROMPT
    stream = server.client().chat.completions.create(
        model="default", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == PROMPT
    # a workflow route: the input is data to the template
    result = server.http.post("/api/ask", json={"input": PROMPT}, headers=AUTH).json()
    assert primary.requests[-1].body["messages"][-1]["content"] == f"Q: {PROMPT}"  # type: ignore[index]
    assert result["output"] == PROMPT
    # the web chat: the system prompt, the message and the answer, as sent and as shown
    web = WebClient(server)
    try:
        assert web.login(ADMIN_KEY).status_code == 303
        conversation = web.new_chat("default", system_prompt=PROMPT)
        assert str(escape(PROMPT)) in web.send(conversation, PROMPT)  # the message, as the stream shows it
        sent = primary.requests[-1].body["messages"]  # type: ignore[index]
        assert [m["content"] for m in sent] == [PROMPT, PROMPT]
        page = web.get(f"/chat/{conversation}").text
        shown = page.split('<div class="body plain">', 1)[1].split("</div>", 1)[0]
        _literal(html.unescape(shown))
        answer_html = page.split('<div class="body md" hx-ignore>', 1)[1].split("</div>", 1)[0]
        text = html.unescape(re.sub(r"<[^>]*>", "", answer_html))  # Markdown made *7 }} ... 7* emphasis, no more
        assert "{% for x in range(3) %}x{% endfor %} {{ config }}" in text and "{{ 7" in text, answer_html
        assert not [e for e in EVALUATED if e in text], text
        assert str(escape(PROMPT)) in page  # the system prompt in its form field
    finally:
        web.close()


class _FixedAnswers(aiohttp.abc.AbstractResolver):
    """A resolver that answers every name with the given addresses (what a hostile DNS record would do)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_names_resolving_to_metadata_addresses_are_refused_when_connecting() -> None:
    guarded = GuardedResolver(_FixedAnswers("169.254.169.254", "fe80::1%2", "fd00:ec2::254"))
    with pytest.raises(OSError, match="link-local and cloud metadata addresses are refused"):
        await guarded.resolve("models.attacker.test", 443)
    mixed = GuardedResolver(_FixedAnswers("169.254.169.254", "127.0.0.1"))
    assert [a["host"] for a in await mixed.resolve("models.attacker.test", 443)] == ["127.0.0.1"]
    real = GuardedResolver()  # aiohttp's own resolver, through the guard: ordinary names still work
    assert "127.0.0.1" in [a["host"] for a in await real.resolve("localhost", 80)]
    await real.close()
