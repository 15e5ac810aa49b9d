"""The upstream SSE parser on its own: the same payloads however the bytes are split, only ``data:`` lines, and
the line and stream caps raised as soon as they are passed (so what it holds stays under them)."""

from __future__ import annotations

import pytest

from minigate.providers.base import UpstreamTooLarge
from minigate.providers.limits import UpstreamLimits
from minigate.providers.sse import DataLines

STREAM = (
    b": a comment\n"
    b"event: message\nid: 7\n"
    b'data: {"a": 1}\n\n'
    b'data:{"b": 2}\r\n\r\n'
    b"retry: 10\n"
    b'data:   {"c": "\xc3\xa9"}  \n\n'
    b"data: [DONE]\n\n"
)
PAYLOADS = [b'{"a": 1}', b'{"b": 2}', b'{"c": "\xc3\xa9"}', b"[DONE]"]


def feed_all(lines: DataLines, pieces: list[bytes]) -> list[bytes]:
    return [payload for piece in pieces for payload in lines.feed(piece)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_payloads_do_not_depend_on_how_the_bytes_are_split(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(DataLines(UpstreamLimits(), "p"), pieces) == PAYLOADS


def test_an_unfinished_last_line_is_held_not_returned() -> None:
    lines = DataLines(UpstreamLimits(), "p")
    assert lines.feed(b'data: {"a": 1}\ndata: {"b"') == [b'{"a": 1}']
    assert lines.feed(b": 2}\n") == [b'{"b": 2}']


@pytest.mark.parametrize("piece", [1000, 4096, 10_000])
def test_a_line_past_the_cap_raises_as_soon_as_it_is_past(piece: int) -> None:
    cap = 64 * 1024
    lines = DataLines(UpstreamLimits(max_sse_line_bytes=cap), "p")
    fed = 0
    with pytest.raises(UpstreamTooLarge) as info:
        for _ in range(10 * cap // piece):
            lines.feed(b"x" * piece)
            fed += piece
    assert fed <= cap  # raised by the feed that went past the cap, not later
    assert "models.providers.p.limits.max_sse_line_bytes (65536)" in info.value.message
    assert info.value.code == "upstream_too_large"


def test_a_long_line_inside_one_piece_is_caught_too() -> None:
    lines = DataLines(UpstreamLimits(max_sse_line_bytes=100), "p")
    assert lines.feed(b"data: " + b"x" * 94 + b"\n") == [b"x" * 94]  # 100 bytes: at the cap
    with pytest.raises(UpstreamTooLarge):
        lines.feed(b"data: ok\ndata: " + b"x" * 95 + b"\ndata: ok\n")


def test_the_stream_cap_counts_every_byte() -> None:
    lines = DataLines(UpstreamLimits(max_stream_bytes=1000), "p")
    assert len(feed_all(lines, [b": keep-alive\n" * 10, b"data: 1\n" * 100])) == 100  # 930 bytes
    with pytest.raises(UpstreamTooLarge) as info:
        lines.feed(b"data: 1\n" * 10)
    assert "max_stream_bytes (1000)" in info.value.message


def test_no_stream_cap() -> None:
    lines = DataLines(UpstreamLimits(max_stream_bytes=None, max_sse_line_bytes=100), "p")
    assert len(feed_all(lines, [b"data: 1\n" * 10_000] * 20)) == 200_000
