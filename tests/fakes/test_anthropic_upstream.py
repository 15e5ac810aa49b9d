"""The fake Messages API upstream is as strict as the real one where the provider's translation could go wrong."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_upstream import AnthropicUpstream, request_problem

pytestmark = pytest.mark.fast

USER = {"role": "user", "content": "hi"}
USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}
RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [USER], **fields}


def test_a_good_request_passes() -> None:
    assert request_problem(body()) is None
    assert (
        request_problem(body(messages=[USER, USE, RESULT], tools=[{"name": "f", "input_schema": {"type": "object"}}]))
        is None
    )


@pytest.mark.parametrize(
    ("request_body", "problem"),
    [
        ({"model": "m", "messages": [USER]}, "max_tokens: Field required"),
        (body(seed=1), "seed: Extra inputs are not permitted"),
        (body(messages=[USER, USER]), "roles must alternate"),
        (body(messages=[USE, RESULT]), "first message must use the user role"),
        (body(messages=[USER, USE, USER]), "tool_use ids were found without tool_result blocks"),
        (body(messages=[RESULT]), "unexpected tool_use_id"),
        (body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]), "must be non-empty"),
        (
            body(
                messages=[USER, USE, {"role": "user", "content": [{"type": "text", "text": "x"}, *RESULT["content"]]}]
            ),
            "tool_result blocks must come first",
        ),
        (body(tool_choice={"type": "auto"}), "tool_choice may only be specified while providing tools"),
        (body(temperature=1.5), "temperature"),
        (body(metadata={"user_id": "u", "other": 1}), "metadata"),
    ],
)
def test_what_the_real_api_refuses_is_refused(request_body: dict[str, Any], problem: str) -> None:
    found = request_problem(request_body)
    assert found is not None and problem in found, found


def test_the_key_and_the_version_are_required() -> None:
    with AnthropicUpstream(api_key="k") as fake:
        url = f"{fake.url}/messages"
        good = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        answers = [
            httpx.post(url, json=body(), headers=headers, timeout=5)
            for headers in (good, {**good, "x-api-key": "bad"}, {"x-api-key": "k"})
        ]
    assert [a.status_code for a in answers] == [200, 401, 400]
    assert answers[0].json()["content"] == [{"type": "text", "text": "Hello from claude"}]
    assert [json.loads(a.content)["error"]["type"] for a in answers[1:]] == [
        "authentication_error",
        "invalid_request_error",
    ]
