"""Two network namespaces of the test's own: a listener on the metadata addresses, and the provider one veth away.

``run_in_namespaces()`` builds them (root and iproute2 needed, else the calling test is skipped with the reason),
runs this module as ``serve`` in one and ``probe`` in the other, and reports what reached the listener. Nothing
leaves the namespaces: the probe's namespace has no route but the veth, and both are deleted in a ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT = 8080
ALLOWED = "10.254.0.2"  # the listener's own ordinary address
FORBIDDEN = ("169.254.169.254", "100.100.100.200", "fd00:ec2::254")
CANARY = "sk-canary-netns-7f3a9c"


class FixedAnswers(aiohttp.abc.AbstractResolver):
    """A resolver that answers every name with the given addresses (what a hostile DNS record would do)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    @staticmethod
    def answer(host: str, address: str, port: int, family: int) -> dict[str, Any]:
        """One answer in aiohttp's ``ResolveResult`` shape."""
        return {"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[Any]:
        return [self.answer(host, a, port, socket.AF_INET6 if ":" in a else socket.AF_INET) for a in self.addresses]

    async def close(self) -> None:
        return None


@dataclass
class Report:
    """What the probe saw of each case, and what the listener saw of each connection."""

    outcomes: dict[str, str]
    connections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def forbidden_connections(self) -> list[str]:
        """The request paths of connections that reached a forbidden address ("" if no byte came)."""
        return [c["path"] for c in self.connections if c["local"] in FORBIDDEN]

    @property
    def canary_seen_at_forbidden(self) -> bool:
        return any(c["canary"] for c in self.connections if c["local"] in FORBIDDEN)

    @property
    def control_reached(self) -> bool:
        return self.outcomes.get("control-unguarded") == "connected 200"

    @property
    def allowed_reached(self) -> bool:
        wanted = {
            "allowed": "connected 200",
            "allowed-provider": "answered",
            "allowed-provider-despite-proxy-env": "answered",
        }
        return all(self.outcomes.get(k) == v for k, v in wanted.items())


# --- the listener (in the server namespace) ----------------------------------------------------------------------

BODY = json.dumps({"id": "x", "object": "chat.completion", "choices": [], "model": "m"}).encode()


async def _serve() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")[0]
        local = local.removeprefix("::ffff:")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            head = b""
        path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else ""
        print(json.dumps({"local": local, "path": path, "canary": CANARY.encode() in head}), flush=True)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n")
        writer.write(b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, ["0.0.0.0", "::"], PORT)
    print("ready", flush=True)
    async with server:
        await asyncio.sleep(120)  # bounded: the test stops it long before


# --- the probe (in the client namespace) --------------------------------------------------------------------------


async def get_outcome(connector: aiohttp.BaseConnector, url: str) -> str:
    """``connected <status>`` or ``refused <why>``, for one GET through ``connector``."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, timeout=timeout) as session:
        try:
            async with session.get(url, allow_redirects=False) as answer:
                return f"connected {answer.status}"
        except aiohttp.ClientError as err:
            return f"refused {type(err).__name__}: {err}"


async def _provider(endpoint: str) -> str:
    from minigate.providers.base import ProviderError, ProviderRequest
    from minigate.providers.openai_compat import ApiAuth, OpenAIProvider, OpenAIProviderConfig

    config = OpenAIProviderConfig(endpoint=endpoint, auth=ApiAuth(type="api_key", value=CANARY), connect_timeout=3)
    provider = OpenAIProvider("evil", config)
    await provider.start()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = ProviderRequest("chat/completions", "m", body, stream=False, deadline=time.monotonic() + 5)
    try:
        await provider.complete(request)
        return "answered"
    except ProviderError as err:
        return f"refused {err}"
    finally:
        await provider.close()


async def _probe() -> dict[str, str]:
    from minigate.providers.netguard import guarded_connector, guarded_socket_factory

    base = f":{PORT}"
    literal = [
        "169.254.169.254",
        "169\uff0e254\uff0e169\uff0e254",
        "\u2460\u2465\u2468.\u2461\u2464\u2463.\u2460\u2465\u2468.\u2461\u2464\u2463",
        "0xa9fea9fe",
        "0xa9.0xfe.0xa9.0xfe",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "100.100.100.200",
        "[::ffff:100.100.100.200]",
        "[fd00:ec2::254]",
    ]
    out = {
        "control-unguarded": await get_outcome(
            aiohttp.TCPConnector(), f"http://169.254.169.254{base}/control-unguarded"
        ),
        "allowed": await get_outcome(guarded_connector(), f"http://{ALLOWED}{base}/allowed"),
        "allowed-provider": await _provider(f"http://{ALLOWED}{base}/allowed-provider/v1"),
    }
    # a proxy named by the environment is never used (it would see the key): the request goes direct
    proxy = f"http://169.254.169.254{base}"
    os.environ.update(HTTP_PROXY=proxy, http_proxy=proxy, ALL_PROXY=proxy, all_proxy=proxy)
    out["allowed-provider-despite-proxy-env"] = await _provider(f"http://{ALLOWED}{base}/allowed-proxy-env/v1")
    for n, host in enumerate(literal):
        out[f"guarded-literal {host}"] = await get_outcome(guarded_connector(), f"http://{host}{base}/guarded-{n}")
    for answers in (("169.254.169.254",), ("fd00:ec2::254", "::ffff:100.100.100.200")):
        resolver = guarded_connector(resolver=FixedAnswers(*answers))
        out[f"guarded-name {answers}"] = await get_outcome(
            resolver, f"http://metadata.attacker.test{base}/guarded-name"
        )
        bare = aiohttp.TCPConnector(resolver=FixedAnswers(*answers), socket_factory=guarded_socket_factory())
        out[f"guarded-socket-only {answers}"] = await get_outcome(
            bare, f"http://metadata.attacker.test{base}/guarded-sf"
        )
    for host in ("169.254.169.254", "169\u3002254\u3002169\u3002254", "[::ffff:169.254.169.254]", "[fd00:ec2::254]"):
        out[f"guarded-provider {host}"] = await _provider(f"http://{host}{base}/guarded-provider/v1")
    return out


# --- the namespaces (from the test process) -----------------------------------------------------------------------


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _setup(client: str, server: str) -> None:
    _ip("-n", client, "link", "add", "vc", "type", "veth", "peer", "name", "vs", "netns", server)
    for ns, dev in ((client, "vc"), (server, "vs")):
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", dev, "up")
    _ip("-n", client, "addr", "add", "10.254.0.1/24", "dev", "vc")
    _ip("-n", client, "-6", "addr", "add", "fd00:1::1/64", "dev", "vc", "nodad")
    for address in (f"{ALLOWED}/24", "169.254.169.254/32", "100.100.100.200/32"):
        _ip("-n", server, "addr", "add", address, "dev", "vs")
    for address in ("fd00:1::2/64", "fd00:ec2::254/128"):
        _ip("-n", server, "-6", "addr", "add", address, "dev", "vs", "nodad")
    _ip("-n", client, "route", "add", "169.254.169.254/32", "dev", "vc")
    _ip("-n", client, "route", "add", "100.100.100.200/32", "dev", "vc")
    _ip("-n", client, "-6", "route", "add", "fd00:ec2::254/128", "via", "fd00:1::2", "dev", "vc")


def _wait_ready(process: subprocess.Popen[str], timeout: float) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if line.strip() != "ready":
        raise RuntimeError(f"listener did not start: {line!r}")


def run_in_namespaces() -> Report:
    """Build the namespaces, run the listener and the probe, tear all down; skip (saying why) if impossible."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root; this run is not root")
    if shutil.which("ip") is None:
        pytest.skip("creating network namespaces needs iproute2's `ip`, which is not installed")
    client, server = f"mgc{os.getpid()}", f"mgs{os.getpid()}"
    made: list[str] = []
    listener: subprocess.Popen[str] | None = None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for ns in (client, server):
            try:
                _ip("netns", "add", ns)
            except RuntimeError as err:
                pytest.skip(f"cannot create a network namespace here: {err}")
            made.append(ns)
        try:
            _setup(client, server)
        except RuntimeError as err:
            pytest.skip(f"cannot wire the network namespaces (veth, addresses, routes): {err}")
        command = [sys.executable, "-m", "tests.providers.ssrf_netns"]
        listener = subprocess.Popen(
            ["ip", "netns", "exec", server, *command, "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        _wait_ready(listener, 15)
        probe = subprocess.run(
            ["ip", "netns", "exec", client, *command, "probe"], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        listener.terminate()
        seen, _ = listener.communicate(timeout=10)
        connections = [json.loads(line) for line in seen.splitlines() if line.startswith("{")]
        return Report(json.loads(probe.stdout), connections)
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait(10)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        asyncio.run(_serve())
    elif sys.argv[1:] == ["probe"]:
        print(json.dumps(asyncio.run(_probe())))
    else:
        sys.exit("usage: python -m tests.providers.ssrf_netns serve|probe")
