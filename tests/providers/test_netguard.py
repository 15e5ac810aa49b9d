"""Metadata and link-local addresses stay out of reach in every spelling: at config time, at connect time, end to end.

Spellings are generated (hypothesis): Unicode dots and digits the URL library folds to ASCII, the integer forms
``inet_aton`` reads, mixed case, trailing dots, and every IPv6 form that embeds a forbidden IPv4 address. The
connect-time tests drive a real aiohttp session whose last socket factory only ever opens loopback sockets, so
nothing leaves the box even if the guard failed; the namespace test shows the same against a real listener on
169.254.169.254 inside network namespaces of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from minigate.providers.netguard import (
    AddrInfo,
    GuardedResolver,
    check_connect_address,
    guarded_connector,
    guarded_socket_factory,
)
from minigate.providers.registry import check_endpoint_url, forbidden_address
from tests.fakes.upstream import FakeUpstream
from tests.providers.ssrf_netns import FixedAnswers, get_outcome, run_in_namespaces

# --- spellings ---------------------------------------------------------------------------------------------------

METADATA_V4 = [IPv4Address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "169.254.0.23")]
FORBIDDEN_V4 = st.one_of(st.sampled_from(METADATA_V4), st.integers(0xA9FE0000, 0xA9FEFFFF).map(IPv4Address))

# What yarl's IDNA step folds to each ASCII character (checked by test_every_variant_folds_to_ascii).
_DIGIT_BLOCKS = [0xFF10, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7F6, 0x1FBF0]  # full-width, math bold/double/sans/mono, seg.
DIGIT_VARIANTS = {
    str(d): [str(d), *(chr(b + d) for b in _DIGIT_BLOCKS), "\u24ea" if d == 0 else chr(0x245F + d), "⁰¹²³⁴⁵⁶⁷⁸⁹"[d]]
    for d in range(10)
}
DOT_VARIANTS = [".", "\uff0e", "\u3002", "\uff61", "\u2024", "\ufe52"]
LETTER_VARIANTS = {c: [c, c.upper(), chr(0xFF41 + ord(c) - 97), chr(0xFF21 + ord(c) - 97)] for c in "abcdefx"}
DIGIT_DOT = {str(d): chr(0x2487 + d) for d in range(1, 10)}  # "⒈" is "1."


@st.composite
def _fold(draw: st.DrawFn, text: str) -> str:
    """``text`` with each character replaced by one that yarl folds back to it (often itself)."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c in DIGIT_DOT and text[i + 1 : i + 2] == "." and draw(st.booleans()):
            out.append(DIGIT_DOT[c])
            i += 2
            continue
        variants = DIGIT_VARIANTS.get(c) or LETTER_VARIANTS.get(c.lower()) or (DOT_VARIANTS if c == "." else [c])
        out.append(draw(st.sampled_from(variants)))
        i += 1
    return "".join(out)


@st.composite
def v4_text(draw: st.DrawFn, addr: IPv4Address) -> str:
    """``addr`` as ``inet_aton`` reads it: one to four parts, each decimal, octal or hex."""
    value = int(addr)
    parts = {
        4: [value >> 24, (value >> 16) & 255, (value >> 8) & 255, value & 255],
        3: [value >> 24, (value >> 16) & 255, value & 0xFFFF],
        2: [value >> 24, value & 0xFFFFFF],
        1: [value],
    }[draw(st.sampled_from([4, 4, 3, 2, 1]))]
    spelled = []
    for n in parts:
        form = draw(st.sampled_from(["dec", "dec", "oct", "hex"]))
        if form == "oct":
            spelled.append("0" * draw(st.integers(1, 3)) + format(n, "o"))
        elif form == "hex":
            spelled.append(draw(st.sampled_from(["0x", "0X"])) + format(n, draw(st.sampled_from(["x", "X"]))))
        else:
            spelled.append(str(n))
    return ".".join(spelled)


@st.composite
def forbidden_v6(draw: st.DrawFn) -> IPv6Address:
    """A link-local or metadata IPv6 address, or one embedding a forbidden IPv4 address in any known way."""
    v4 = int(draw(FORBIDDEN_V4))
    bits = draw(st.integers(0, 2**128 - 1))
    kind = draw(st.sampled_from(["mapped", "compat", "translated", "nat64", "local", "6to4", "teredo", "isatap", "ll"]))
    if kind == "ll":
        return IPv6Address((0xFE80 << 112) | (bits & (2**118 - 1)))
    if kind == "local":  # 64:ff9b:1::/48 at an RFC 6052 prefix length; bits 64-71 (the "u" octet) stay zero
        length = draw(st.sampled_from([48, 56, 64, 96]))
        packed = bytearray(IPv6Address("64:ff9b:1::").packed[:6] + (bits & (2**80 - 1)).to_bytes(10, "big"))
        spots = [i for i in range(length // 8, 16) if i != 8][:4] if length < 96 else [12, 13, 14, 15]
        packed[8] = 0
        for spot, byte in zip(spots, v4.to_bytes(4, "big"), strict=True):
            packed[spot] = byte
        return IPv6Address(bytes(packed))
    return IPv6Address(
        {
            "mapped": (0xFFFF << 32) | v4,
            "compat": v4,
            "translated": (0xFFFF0000 << 32) | v4,
            "nat64": (0x64FF9B << 96) | v4,
            "6to4": (0x2002 << 112) | (v4 << 80) | (bits & (2**80 - 1)),
            "teredo": (0x20010000 << 96) | (bits & (2**64 - 1) << 32) | (~v4 & 0xFFFFFFFF),
            "isatap": (bits & ~(2**64 - 1)) | (draw(st.sampled_from([0x5EFE, 0x2005EFE])) << 32) | v4,
        }[kind]
    )


@st.composite
def v6_text(draw: st.DrawFn, addr: IPv6Address) -> str:
    """``addr`` compressed or not, mixed case, leading zeros, a dotted IPv4 tail, a zone."""
    groups = [format(int(g, 16), "x").zfill(draw(st.integers(1, 4))) for g in addr.exploded.split(":")]
    text = draw(st.sampled_from([addr.compressed, addr.exploded, ":".join(groups)]))
    if draw(st.booleans()):
        text = addr.exploded.rsplit(":", 2)[0] + ":" + str(IPv4Address(int(addr) & 0xFFFFFFFF))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    return text + (draw(st.sampled_from(["%25eth0", "%251", "%25lo"])) if draw(st.integers(0, 4)) == 0 else "")


@st.composite
def forbidden_hosts(draw: st.DrawFn) -> str:
    """The host part of a URL naming a forbidden address, as hostile as yarl might still accept it."""
    if draw(st.booleans()):
        text = draw(v4_text(draw(FORBIDDEN_V4)))
        folded = draw(_fold(text)) if draw(st.booleans()) else text
        return folded + draw(st.sampled_from(["", "", ".", "\uff0e", ".."]))
    return "[" + draw(v6_text(draw(forbidden_v6()))) + "]"


def _url(host: str, port: int, path: str = "/v1") -> str:
    return f"http://{host}{'' if port == 80 else f':{port}'}{path}"


def _numeric(url: str) -> bool:
    """Whether the host aiohttp connects to for ``url`` is one ``getaddrinfo`` reads as an address (no DNS).

    A few mixes of characters make yarl fall back from UTS 46 to Python's older IDNA codec, which leaves newer
    digits alone and so makes a name ("xn--031-jg83b") of the label: that is a name to resolve, not a spelling
    of the address, and what it resolves to is checked at connect time."""
    try:
        host = (URL(url).raw_host or "").replace("%25", "%")
    except ValueError:
        return False
    if host.endswith(".."):  # as aiohttp does before resolving
        host = host.rstrip(".") + "."
    try:
        socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return False
    return True


# --- config time --------------------------------------------------------------------------------------------------


def test_every_variant_folds_to_ascii() -> None:
    """The spelling tables are real: yarl folds each variant to the character it stands for."""
    for table in (DIGIT_VARIANTS, LETTER_VARIANTS):
        for plain, variants in table.items():
            assert {URL(f"http://a{v}a.test/").host for v in variants} == {f"a{plain.lower()}a.test"}, plain
    assert {URL(f"http://a{d}b.test/").host for d in DOT_VARIANTS} == {"a.b.test"}
    assert {URL(f"http://1{dd}b.test/").host for dd in DIGIT_DOT.values()} == {f"1{d}.b.test" for d in DIGIT_DOT}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=forbidden_hosts(), port=st.sampled_from([80, 443, 8080]), https=st.booleans())
def test_no_spelling_of_a_forbidden_address_passes_the_config_check(host: str, port: int, https: bool) -> None:
    url = _url(host, port).replace("http", "https" if https else "http", 1)
    assert check_endpoint_url(url) is not None or not _numeric(url), url


@settings(max_examples=300, deadline=None)
@given(addr=st.one_of(FORBIDDEN_V4, forbidden_v6()))
def test_forbidden_address_refuses_every_generated_address(addr: IPv4Address | IPv6Address) -> None:
    assert forbidden_address(str(addr)) and forbidden_address(addr.exploded)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://127.0.0.1:8080/v1",
        "http://[::1]:8080/v1",
        "http://[64:ff9b::808:808]/v1",  # NAT64 to 8.8.8.8
        "http://[2002:808:808::1]/v1",  # 6to4 of 8.8.8.8
        "http://[::ffff:10.0.0.7]:8000/v1",
        "http://ollama.local./v1",
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:11434/v1",  # full-width localhost
        "http://169.254.169.254.example.com/v1",  # a name, checked when it resolves
    ],
)
def test_ordinary_endpoints_are_still_accepted(url: str) -> None:
    assert check_endpoint_url(url) is None


def test_addresses_near_the_forbidden_ones_are_allowed() -> None:
    for allowed in ("169.253.255.255", "169.255.0.0", "100.100.100.201", "fec0::1", "::ffff:169.255.0.1", "::1"):
        assert not forbidden_address(allowed), allowed


# --- connect time -------------------------------------------------------------------------------------------------


class LoopbackOnly:
    """The innermost socket factory of these tests: records what it is asked for, opens only loopback sockets."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, addr_info: AddrInfo) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        self.asked.append(str(sockaddr[0]))
        if not ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]).is_loopback:
            raise OSError("test safety net: only loopback is connected to")
        return socket.socket(family, kind, proto)


class NumericResolver(aiohttp.abc.AbstractResolver):
    """Resolves what ``getaddrinfo`` reads without DNS ("0xa9fea9fe", "169.254.43518"); never asks the network."""

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        return [FixedAnswers.answer(host, str(info[4][0]), port, info[0]) for info in infos]

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def local_server() -> Iterator[int]:
    """An upstream on 127.0.0.1, to show the guarded connector still connects where it may."""
    with FakeUpstream("local") as fake:
        yield fake.port


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=forbidden_hosts(), port=st.sampled_from([80, 8080]))
def test_no_spelling_of_a_forbidden_address_gets_a_socket(host: str, port: int) -> None:
    """Through a real aiohttp session, as the provider connects: refused before any socket is made."""
    net = LoopbackOnly()

    async def attempt() -> str:
        connector = guarded_connector(resolver=NumericResolver(), socket_factory=net)
        return await get_outcome(connector, _url(host, port))

    outcome = asyncio.run(attempt())
    assert outcome.startswith("refused"), outcome
    assert net.asked == [], outcome
    if "InvalidUrl" not in outcome and _numeric(_url(host, port)):  # aiohttp refuses non-canonical literals itself
        assert "are refused" in outcome or "refused at connect" in outcome, outcome


@settings(max_examples=300, deadline=None)
@given(addr=st.one_of(FORBIDDEN_V4, forbidden_v6()), port=st.integers(1, 65535))
def test_the_connect_check_refuses_every_forbidden_socket_address(addr: IPv4Address | IPv6Address, port: int) -> None:
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    sockaddr = (str(addr), port, 0, 0) if addr.version == 6 else (str(addr), port)
    with pytest.raises(OSError, match="refused"):
        check_connect_address(family, sockaddr)


def test_the_connect_check_refuses_what_is_not_a_numeric_address() -> None:
    for host in ("metadata.google.internal", "localhost", "169.254.169.254 x", "0xa9fea9fe.", "fe80::1%25eth0"):
        with pytest.raises(OSError, match="refused"):
            check_connect_address(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, 80))
    check_connect_address(socket.AF_INET, ("127.0.0.1", 80))  # and lets an ordinary address through
    check_connect_address(socket.AF_INET6, ("::1", 80, 0, 0))


async def test_the_guarded_connector_still_connects_where_it_may(local_server: int) -> None:
    net = LoopbackOnly()
    direct = guarded_connector(socket_factory=net)
    assert await get_outcome(direct, f"http://127.0.0.1:{local_server}/v1/models") == "connected 200"
    # a name with a forbidden and an allowed answer connects to the allowed one only
    mixed = guarded_connector(resolver=FixedAnswers("169.254.169.254", "127.0.0.1"), socket_factory=net)
    assert await get_outcome(mixed, f"http://upstream.test:{local_server}/v1/models") == "connected 200"
    assert net.asked == ["127.0.0.1", "127.0.0.1"]


async def test_a_name_resolving_to_a_forbidden_address_is_refused_before_any_socket() -> None:
    """End to end through aiohttp: the DNS answer (the resolver seam) points at metadata; nothing is connected."""
    for answers in (("169.254.169.254",), ("fd00:ec2::254",), ("::ffff:169.254.169.254", "fe80::1%1")):
        net = LoopbackOnly()
        outcome = await get_outcome(
            guarded_connector(resolver=FixedAnswers(*answers), socket_factory=net), "http://x.test/"
        )
        assert outcome.startswith("refused ClientConnectorDNSError") and "are refused" in outcome, outcome
        assert net.asked == []
        # and the socket factory alone refuses what an unguarded resolver lets through
        bare = aiohttp.TCPConnector(resolver=FixedAnswers(*answers), socket_factory=guarded_socket_factory(net))
        outcome = await get_outcome(bare, "http://x.test/")
        assert outcome.startswith("refused ClientConnectorError") and "are refused" in outcome, outcome
        assert net.asked == []


async def test_the_guarded_resolver_drops_only_forbidden_answers() -> None:
    guarded = GuardedResolver(FixedAnswers("169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "10.1.2.3"))
    assert [a["host"] for a in await guarded.resolve("models.attacker.test", 443)] == ["10.1.2.3"]


# --- in network namespaces: a real listener on the metadata addresses ---------------------------------------------


def test_no_connection_reaches_a_real_metadata_listener_in_a_namespace() -> None:
    """A server listens on 169.254.169.254, 100.100.100.200 and fd00:ec2::254 in a namespace of its own, one veth
    away from the namespace the provider runs in; only the unguarded control connection ever reaches it."""
    report = run_in_namespaces()  # skips, saying why, where namespaces cannot be made
    assert report.control_reached, report
    assert report.allowed_reached, report
    refused = {case: outcome for case, outcome in report.outcomes.items() if case.startswith("guarded")}
    assert refused and not [o for o in refused.values() if not o.startswith("refused")], refused
    assert report.forbidden_connections == ["/control-unguarded"], report
    assert not report.canary_seen_at_forbidden, report
