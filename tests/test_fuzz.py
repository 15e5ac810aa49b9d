"""Fuzz every /v1 and admin endpoint from the gateway's own OpenAPI document with schemathesis.

A real ``minigate serve`` process (uvloop, httptools, the JSON log) over two fake upstreams and a local-model
provider whose models folder is an empty temporary one. Schemathesis generates valid requests (positive) and
requests that break the document (negative) for every operation the document lists; every answer must be no
5xx, carry a status and content type the document lists, match its schema, and (negative cases) be a 4xx. The
run is deterministic (derandomized Hypothesis, no example database) and bounded in count and time.

What the fuzzer is steered towards, so that cases get past the first refusal: most cases carry the admin key
(the others test the 401s); valid /v1 bodies name a routable model half of the time, so upstream calls, streams
and usage rows happen; path parameters name real providers half of the time. A valid pull or import body is
never sent to the local provider: it would start a conversion child process (CPU-minutes, downloads), which
the models tests cover; invalid ones are, so their refusals are fuzzed. The WebSocket ``/v1/ws`` is not in an
OpenAPI document (tests/test_ws.py), and ``POST /admin/reload`` is marked ``include_in_schema=False`` by
gateway/runtime/reload.py (tests/test_bad_input.py checks its refusals).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core import NOT_SET

from minigate.gateway.http.admin import ImportRequest, PullRequest
from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
MODELS = ["default", "coder", "fast", "code", "primary/gpt-4o-mini", "backup/llama3-8b", "backup/embedder"]
PROVIDERS = ["primary", "backup", "local"]
# Cases per operation and generation mode: the bodies get the most; an operation without inputs has few
# distinct cases, which Hypothesis notices and stops early.
# (Making a chat body takes Hypothesis about 70 ms: its schema is the largest.)
BUDGET = {
    "POST /v1/chat/completions": 120,
    "POST /v1/completions": 110,
    "POST /v1/embeddings": 110,
    "POST /admin/api/models/{provider}/pull": 90,
    "POST /admin/api/models/{provider}/import": 90,
}
DEFAULT_BUDGET = 65
MINIMUM_CASES = 2000
TIME_LIMIT = 240.0  # seconds for the whole run: a hang fails the test rather than the CI job


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The gateway process; downloads it might start go to a closed port on 127.0.0.1 and fail at once."""
    folder = tmp_path_factory.mktemp("fuzz")
    with (
        FakeUpstream("primary", api_key="primary-key") as primary,
        FakeUpstream("backup", api_key="backup-key") as backup,
    ):
        config = two_provider_config(primary, backup, cooldown={"failures": 1000, "initial": 0.1})
        config["models"]["providers"]["local"] = {"type": "onnxruntime-genai", "models_dir": str(folder / "models")}
        config["server"] = {"body_timeout": 5}
        dead = "http://127.0.0.1:9"
        env = {"MINIGATE_CACHE": str(folder / "cache"), "HF_ENDPOINT": dead, "PIP_INDEX_URL": f"{dead}/simple"}
        env |= {"PIP_RETRIES": "0", "PIP_TIMEOUT": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        with ServeProcess(config, folder, env=env) as server:
            yield server


def _starts_a_job(label: str, body: Any) -> bool:
    """Whether ``body`` is one the local provider would start a pull or import job for."""
    struct = {"pull": PullRequest, "import": ImportRequest}.get(label.rsplit("/", 1)[1])
    if struct is None:
        return False
    try:
        msgspec.convert({} if body is NOT_SET or body is None else body, struct)
    except (msgspec.ValidationError, TypeError):
        return False
    return True


def _steer(case: schemathesis.Case, data: st.DataObject, label: str) -> None:
    """Point some cases at real names and give most the admin key (see the module docstring)."""
    positive = case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and label.startswith("POST /v1/") and isinstance(case.body, dict) and data.draw(st.booleans()):
        case.body["model"] = data.draw(st.sampled_from(MODELS))
    if isinstance(case.path_parameters, dict) and "provider" in case.path_parameters and data.draw(st.booleans()):
        provider = data.draw(st.sampled_from(PROVIDERS))
        if provider != "local" or not _starts_a_job(label, case.body):
            case.path_parameters["provider"] = provider
    # Schemathesis makes up bearer tokens of its own (the document names the scheme): most cases get the real one.
    # One case in ten goes without (not 0 or 9: Hypothesis favours the ends of a range).
    if data.draw(st.integers(0, 9)) != 4:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN_KEY}"}


def _fuzz(operation: Any, mode: GenerationMode, budget: int, base: str, statuses: Counter[tuple[str, int]]) -> int:
    """Run ``budget`` cases of one operation in one mode; the number actually run."""
    ran = 0

    @settings(
        max_examples=budget,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),  # no shrinking: a failure is reported as found, with its curl command
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        nonlocal ran
        ran += 1
        _steer(case, data, operation.label)
        response = case.call(base_url=base, timeout=15)
        statuses[operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    run()
    return ran


def test_every_endpoint_survives_generated_input(served: ServeProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base}/schema/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    expected = {
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /v1/models/{model_id}",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /admin/api/models",
        "POST /admin/api/models/{provider}/{model}/{action}",
        "DELETE /admin/api/models/{provider}/{model}",
        "POST /admin/api/models/{provider}/pull",
        "POST /admin/api/models/{provider}/import",
        "GET /admin/api/jobs",
        "GET /admin/api/jobs/{job_id}",
        "GET /admin/api/users",
        "POST /admin/api/users",
        "GET /admin/api/users/{user_id}",
        "PATCH /admin/api/users/{user_id}",
        "DELETE /admin/api/users/{user_id}",
        "GET /admin/api/usage",
        "GET /admin/api/usage/summary",
        "GET /admin/api/prices",
    }
    assert expected <= labels, f"missing from the document: {expected - labels}"
    started, ran, answers = time.monotonic(), Counter[str](), Counter[tuple[str, int]]()
    timings: dict[str, float] = {}
    for op in operations:
        # An operation without any input (GET /v1/models) has nothing a negative case could break.
        inputs = any(len(part) for part in (op.path_parameters, op.query, op.headers, op.body))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if inputs else (GenerationMode.POSITIVE,):
            assert time.monotonic() - started < TIME_LIMIT, f"fuzzing took over {TIME_LIMIT} s: {ran}"
            key, begun = f"{op.label} {mode.value}", time.monotonic()
            ran[key] = _fuzz(op, mode, BUDGET.get(op.label, DEFAULT_BUDGET), served.base, answers)
            timings[key] = time.monotonic() - begun
    total = sum(ran.values())
    statuses = Counter[int]()
    for (_, status), count in answers.items():
        statuses[status] += count
    assert total >= MINIMUM_CASES, (total, ran)
    # The run reached past the refusals: answers from upstreams, streams, routed and refused requests.
    assert statuses[200] > 100 and statuses[400] > 100 and statuses[401] > 50 and statuses[404] > 50, statuses
    assert statuses[202] == 0, "a pull or import job was started"
    assert not [s for s in statuses if s >= 500], statuses
    # Nothing the fuzzer sent made the gateway log an error, let alone a traceback.
    log = served.log_text()
    assert "Traceback" not in log
    # Split on newlines only: a logged path may hold U+2028 or U+0085, which str.splitlines() splits on.
    records = [json.loads(line) for line in log.split("\n") if line.strip()]
    assert not [r for r in records if r.get("level") in ("ERROR", "CRITICAL")]
    # Usage rows: every answered /v1 call has its row (refusals before routing have none, by design; count_tokens
    # calls no upstream).
    answered = sum(
        n
        for (label, status), n in answers.items()
        if label.startswith("POST /v1/") and label != "POST /v1/messages/count_tokens" and status == 200
    )
    assert len(served.rows("status = 200")) == answered
    assert httpx.get(f"{served.base}/health", timeout=5).status_code == 200
    print(f"\n{total} cases in {time.monotonic() - started:.1f} s; statuses {dict(sorted(statuses.items()))}")
    for key, count in ran.items():
        print(f"  {key}: {count} cases in {timings[key]:.1f} s")


def test_the_document_describes_every_error_in_openai_shape(served: ServeProcess) -> None:
    document = httpx.get(f"{served.base}/schema/openapi.json", timeout=10).json()
    for path, item in document["paths"].items():
        # Anthropic's Messages API answers errors in its own shape.
        shape = "AnthropicErrorBody" if path.startswith("/v1/messages") else "ErrorBody"
        error = {"$ref": f"#/components/schemas/{shape}"}
        for method, operation in item.items():
            if not path.startswith(("/v1/", "/admin/")):
                continue
            responses = operation["responses"]
            assert {"401", "500"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == error, (method, path, status)
            if method == "post" and path.startswith("/v1/"):
                body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                name = body.rsplit("/", 1)[1]
                # Pass-through: fields the gateway does not know are allowed in /v1 bodies.
                assert document["components"]["schemas"][name].get("additionalProperties", True) is not False
    assert document["components"]["schemas"]["ErrorDetail"]["required"] == ["message", "type", "param", "code"]


def test_the_document_needs_no_key_and_names_no_secret(served: ServeProcess, tmp_path: Path) -> None:
    r = httpx.get(f"{served.base}/schema/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    for secret in ("primary-key", "backup-key", ADMIN_KEY, "127.0.0.1"):
        assert secret not in r.text
