"""gateway/core/wire.py: a body that is not JSON is a 400 whose verdict is the gateway's, whatever msgspec's version
says.

msgspec reports bad UTF-8 as Python's UnicodeDecodeError (0.22) or as a DecodeError with its own text (0.23), so
these assert what the client is told by the gateway (status, type, the offending byte), not msgspec's sentence.
"""

from __future__ import annotations

import pytest

from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.core.wire import decode_json


@pytest.mark.parametrize(
    ("body", "byte", "offset"),
    [
        (b'{"input": "\xff"}', "ff", 11),  # inside a string value
        (b'{"\xfe": 1}', "fe", 2),  # inside a key
        (b'"caf\xe9"', "e9", 4),  # Latin-1, not UTF-8
        (b'{"a": "\xc0\xaf"}', "c0", 7),  # an overlong "/"
        (b"\xff", "ff", 0),  # no JSON at all
        (b'{"a": 1} \xff', "ff", 9),  # after the document
    ],
)
def test_bad_utf8_is_a_400_naming_the_byte(body: bytes, byte: str, offset: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_json(body)
    error = caught.value.body()["error"]
    assert caught.value.status == 400 and error["type"] == "invalid_request_error" and error["param"] is None
    assert error["message"] == f"The body is not valid UTF-8: the byte 0x{byte} at offset {offset}."


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": 1', b'{"a": "\\ud800"}', b"[1] [2]"])
def test_text_that_is_not_json_is_a_400(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_json(body)
    assert caught.value.status == 400 and caught.value.message.startswith("The body is not valid JSON: ")
    assert caught.value.message.endswith(".") and not caught.value.message.endswith("..")


def test_nesting_beyond_the_stack_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match=r"^The body is nested too deeply to be a request\.$"):
        decode_json(b"[" * 100_000)


def test_valid_json_including_any_unicode_decodes() -> None:
    assert decode_json('{"a": ["café", "\U0001f600"], "b": null}'.encode()) == {"a": ["café", "\U0001f600"], "b": None}
