"""The operator's page (``pynode.web``; ``python -m pynode ... --http PORT``).

Covered: the JSON behind the page against real nodes (in-process Python nodes with job hosts
and a real ``erl`` node): each node's runtime, up/down and since when, job host and kinds,
registry entries per node; every job with its owner, replica holders, status and progress,
and its move when its node stops; the bounds (states asked per refresh, one refresh shared by
concurrent pollers); bad HTTP input (garbage, oversized heads, a slow or silent client, wrong
methods, foreign Host names, too many connections) answered with an error or a close in
bounded time while the node keeps serving; the request-head parser on arbitrary bytes; the
command line: off by default (no port opened without ``--http``), loopback by default, a port
in use is one line and status 1.

And the real thing: a mixed cluster started as a user starts it (two ``python -m pynode``
nodes, one with ``--http``, and an Elixir node of the mix project), a real headless Chromium
driven over the W3C WebDriver protocol, watching the jobs move when the Elixir node stops
(``:init.stop``) and then a Python node stops (SIGTERM), by polling the page's DOM (the page
is never reloaded); a screenshot is saved (``build/web-screenshot.png`` or
``$PYNODE_SCREENSHOT_DIR``).

Every wait is on a condition; node names are unique; every process is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings, strategies as st

from erl_interop.terms import Atom
from pynode import jobs, web
from pynode.jobs import HOST_KEY, HOST_NAME
from pynode.node import Node
from pynode.testing import BeamNode, await_until, compile_mix_project, test_cookie, unique_name, wait_until
from pynode.web.http import HttpError, HttpLimits, parse_head
from pynode.web.page import PAGE

import web_kinds  # noqa: F401 (the run kind 'web_steps' on the in-process nodes)
from node_helpers import run

A = Atom
ROOT = Path(__file__).resolve().parents[1]
MIX_PROJECT = str(ROOT / "mix_compat")
SETTINGS = {"work_ms": 300, "result_ttl": 60000, "replicas": 1}
START = A("start")
CHROMIUM = os.environ.get("PYNODE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PYNODE_CHROMEDRIVER", "/usr/bin/chromedriver")


# -- helpers ------------------------------------------------------------------------------------
async def exchange(port: int, data: bytes, *, host: str = "127.0.0.1", timeout: float = 10.0,
                   close_write: bool = False) -> tuple[int | None, dict[str, str], bytes, float]:
    """Send ``data`` raw and read until the server closes: ``(status, headers, body, seconds)``
    (status None: closed without a response)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        if close_write:
            writer.write_eof()
        raw = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await reader.read(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                raw += chunk
    finally:
        writer.close()
    elapsed = loop.time() - t0
    if not raw:
        return None, {}, b"", elapsed
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body, elapsed


def get_request(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test\r\n\r\n".encode()


async def cluster_json(port: int) -> dict[str, Any]:
    status, headers, body, _ = await exchange(port, get_request("/api/cluster"))
    assert status == 200, (status, body[:300])
    assert headers["content-type"] == "application/json"
    d: dict[str, Any] = json.loads(body)
    return d


def by_name(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in d["nodes"]}


def by_id(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in d["jobs"]}


def jid(s: str) -> str:
    """A job id as the page writes it (a binary, Elixir notation)."""
    return f'"{s}"'


async def host_start(via: Node, host: Node | str, kind: str, job_id: str, args: list[Any]) -> Any:
    """``{start, Kind, Id, Args}`` on one host: the job runs there."""
    name = host if isinstance(host, str) else str(host.name)
    r = await via.call((A(HOST_NAME), A(name)), (START, A(kind), job_id, args), 10.0)
    assert type(r) is tuple and r[0] == A("ok"), r
    return r[1]


async def _has_node(port: int, name: Any, up: bool | None) -> bool:
    """The page lists ``name`` as up (``up=True``), or does not list it (``up=None``)."""
    n = by_name(await cluster_json(port)).get(str(name))
    return (n is None) if up is None else (n is not None and n["up"] is up)


def new_node(prefix: str, **config: Any) -> Node:
    n = Node(unique_name(prefix) + "@localhost", test_cookie())
    n.config = {**SETTINGS, **config}
    return n


# -- the JSON, against real nodes ------------------------------------------------------------------
@pytest.mark.interop
def test_json_shows_nodes_registry_and_jobs_and_a_move(erl_node: BeamNode) -> None:
    async def main() -> None:
        a, b = new_node("a"), new_node("b")
        await a.start()
        await b.start()
        server = await web.serve(a, 0)
        try:
            assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"
            assert await a.network.connect(b.name) and await a.network.connect(erl_node.name)
            await await_until(lambda: len(a.registry.lookup_pids(HOST_KEY)) == 2, 10, "two hosts")
            await host_start(a, a, "Job", "j-a", [])
            await host_start(a, b, "Job.Otp", "o-b", [])
            await host_start(a, b, "web_steps", "w-b", [3000, 20])
            await host_start(a, a, "web_steps", "w-a", [3, 5])
            assert await jobs.update(a, "j-a", A("hello")) == A("ok")
            assert await jobs.update(a, "j-a", A("world")) == A("ok")

            async def ready() -> dict[str, Any] | None:
                d = await cluster_json(server.port)
                j = by_id(d)
                want = {jid(x) for x in ("j-a", "o-b", "w-b", "w-a")}
                if set(j) != want or any(x["status"] is None for x in j.values()):
                    return None
                if j[jid("o-b")]["status"] != "results ready" or j[jid("w-a")]["status"] != "done":
                    return None
                if not all(x["replicas"] for x in j.values()) or (j[jid("w-b")]["progress"] or {}).get("done", 0) < 2:
                    return None
                return d

            d = await await_until(ready, 20, "every job with its state and replica")
            assert d["node"] == a.name and d["refresh_ms"] >= 1000
            nodes = by_name(d)
            na, nb, ne = nodes[a.name], nodes[b.name], nodes[erl_node.name]
            assert na["self"] and na["up"] and na["runtime"] == "python" and na["job_host"]
            assert {"Job", "Job.Otp", "web_steps"} <= set(na["kinds"])
            assert nb["up"] and not nb["self"] and nb["runtime"] == "python" and nb["job_host"]
            assert nb["creation"] == b.creation
            assert ne["up"] and ne["runtime"] == "beam" and not ne["job_host"] and ne["registry_entries"] == 0
            assert ne["load"] is None and na["load"]["max_jobs"] == 1000
            # registry sizes: this node's mirror, counted by the holder's node
            mirror = collections.Counter(str(p.node) for _k, p, _v in a.registry.entries())
            assert {n: x["registry_entries"] for n, x in nodes.items() if x["registry_entries"]} == dict(mirror)
            assert d["totals"]["registry_entries"] == sum(mirror.values())
            assert d["totals"]["jobs"] == 4 and d["totals"]["job_hosts"] == 2 and d["totals"]["nodes_up"] >= 3
            j = by_id(d)
            assert {k: v["node"] for k, v in j.items()} == {
                jid("j-a"): a.name, jid("o-b"): b.name, jid("w-b"): b.name, jid("w-a"): a.name}
            for k, v in j.items():
                other = b.name if v["node"] == a.name else a.name
                assert [r["node"] for r in v["replicas"]] == [other], (k, v)
                assert v["replicas"][0]["owner"] == v["node"] and isinstance(v["replicas"][0]["seq"], int)
                assert v["registered"] and v["listed_by"] == [v["node"]] and v["moved_from"] is None
                assert v["pid"].startswith("#PID<" + v["node"])
            assert j[jid("j-a")]["kind"] == "Job" and j[jid("j-a")]["status"] == "running"
            assert j[jid("j-a")]["progress"] == {"events": 2} and ":world" in j[jid("j-a")]["detail"]
            assert j[jid("o-b")]["kind"] == "Job.Otp" and "results of o-b" in j[jid("o-b")]["detail"]
            wb = j[jid("w-b")]
            assert wb["kind"] == "web_steps" and wb["status"] == "running" and wb["attempts"] == 1
            assert wb["progress"]["total"] == 3000
            assert j[jid("w-a")]["progress"] == {"done": 3, "total": 3} and "results ready" in j[jid("w-a")]["detail"]

            # b stops gracefully: its jobs move to a, b stays listed as down, since when
            t_stop = time.time()
            done_before = wb["progress"]["done"]
            await b.stop()

            async def moved() -> dict[str, Any] | None:
                d = await cluster_json(server.port)
                j, n = by_id(d), by_name(d)
                if n[b.name]["up"] or any(x["node"] != a.name for x in j.values()):
                    return None
                if j[jid("w-b")]["state_age_ms"] is None or j[jid("w-b")]["status"] != "running":
                    return None
                return d

            d = await await_until(moved, 20, "b's jobs on a, b down")
            nb, j = by_name(d)[b.name], by_id(d)
            assert nb["since"] >= int(t_stop * 1000) - 50 and nb["since"] <= d["generated_at"]
            assert not nb["job_host"] and nb["registry_entries"] == 0 and nb["runtime"] == "python"
            for k in (jid("o-b"), jid("w-b")):
                assert j[k]["moved_from"] == b.name and j[k]["moved_at"] >= int(t_stop * 1000) - 50
                assert j[k]["replicas"] == []  # no other host left for a copy
            assert j[jid("j-a")]["moved_from"] is None
            assert j[jid("w-b")]["progress"]["done"] >= done_before  # resumed from its checkpoint
            assert j[jid("w-b")]["attempts"] == 1  # a move is not an attempt
            assert j[jid("o-b")]["status"] == "results ready"
            assert d["totals"]["nodes_down"] >= 1

            # a client passing through (as `pynode rpc` / `members`): listed while it is
            # connected, gone from the list when it leaves (not one more "down" node)
            c = new_node("client", host_jobs=False)
            await c.start()
            try:
                assert await c.network.connect(a.name)
                await await_until(lambda: _has_node(server.port, c.name, up=True), 20, "the client listed")
            finally:
                await c.stop()
            await await_until(lambda: _has_node(server.port, c.name, up=None), 20, "the client gone")
            assert by_name(await cluster_json(server.port))[b.name]["up"] is False  # b, a host, stays
        finally:
            await a.stop()
            await b.stop()
        # the page stops with its node
        with pytest.raises(OSError):
            await exchange(server.port, get_request("/healthz"))

    run(main, 90)


def test_page_is_one_self_contained_document() -> None:
    async def main() -> None:
        a = new_node("a")
        await a.start()
        try:
            server = await web.serve(a, 0)
            status, headers, body, _ = await exchange(server.port, get_request("/"))
            assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
            assert body == PAGE and body.startswith(b"<!doctype html>")
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
            # no external resource: no URL, no linked stylesheet or script, no external source
            for needle in (b"://", b"<link", b" src=", b"@import", b"url("):
                assert needle not in body, needle
            assert b"/api/cluster" in body and b"textContent" in body and b"innerHTML" not in body
            status, _, body, _ = await exchange(server.port, get_request("/healthz"))
            assert (status, body) == (200, b"ok\n")
        finally:
            await a.stop()

    run(main, 30)


def test_state_calls_are_capped_and_refreshes_shared() -> None:
    async def main() -> None:
        a = new_node("a")
        await a.start()
        try:
            server = await web.serve(a, 0, state_cap=3, refresh_interval=0.2)
            for i in range(10):
                await host_start(a, a, "Job", f"c{i}", [])
            view = server.view
            # twenty pollers at once share one refresh
            before = view.refreshes
            results = await asyncio.gather(*(cluster_json(server.port) for _ in range(20)))
            assert view.refreshes - before == 1
            first = results[0]
            assert first["totals"]["jobs"] == 10 and first["limits"]["state_cap"] == 3
            assert sum(1 for j in first["jobs"] if j["status"] is not None) == 3
            assert first["limits"]["jobs_without_state"] == 7
            # later refreshes ask the others, three at a time
            d = await await_until(
                lambda: _when(cluster_json(server.port), lambda d: d["limits"]["jobs_without_state"] == 0),
                10, "every job's state")
            assert all(j["status"] == "running" for j in d["jobs"])
            # a snapshot younger than refresh_interval is served from the cache
            view.refresh_interval = view.interval = 60.0
            n = view.refreshes
            await cluster_json(server.port)
            await cluster_json(server.port)
            assert view.refreshes == n
        finally:
            await a.stop()

    run(main, 30)


async def _when(aw: Any, pred: Callable[[Any], bool]) -> Any:
    v = await aw
    return v if pred(v) else None


# -- bad input ------------------------------------------------------------------------------------
BAD: list[tuple[str, bytes, int]] = [
    ("garbage", b"garbage\r\n\r\n", 400),
    ("binary junk", b"\x00\xff\x13" * 200 + b"\r\n\r\n", 400),
    ("oversized header", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
    ("long request line", b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
    ("endless line", b"A" * 100000, 414),
    ("POST with a body", b"POST /api/cluster HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello", 405),
    ("DELETE", b"DELETE / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    ("HEAD", b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    ("unknown path", get_request("/nope"), 404),
    ("path traversal", get_request("/../../etc/passwd"), 404),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("a foreign Host (DNS rebinding)", get_request("/api/cluster", host="evil.example:80"), 421),
    ("malformed header", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400),
    ("folded header", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n  folded\r\n\r\n", 400),
    ("control character", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x01b\r\n\r\n", 400),
    ("target not a path", b"GET api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    ("two spaces", b"GET  / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
]


def test_bad_http_input_gets_an_error_in_bounded_time_and_the_node_keeps_serving() -> None:
    async def main() -> None:
        a, b = new_node("a"), new_node("b", host_jobs=False)
        await a.start()
        await b.start()
        try:
            limits = HttpLimits(head_timeout=0.5, max_connections=8)
            server = await web.serve(a, 0, limits=limits)
            port = server.port
            for what, data, want in BAD:
                status, headers, body, elapsed = await exchange(port, data)
                assert status == want, (what, status, body[:200])
                assert elapsed < 3.0, (what, elapsed)
                assert headers["connection"] == "close"
                if want == 405:
                    assert headers["allow"] == "GET"
            # a slow client (half a request line, then nothing) and a silent one: 408 after head_timeout
            for data in (b"GET / HT", b""):
                status, _, _, elapsed = await exchange(port, data)
                assert status == 408 and 0.4 < elapsed < 3.0, (data, status, elapsed)
            # one that trickles a byte at a time is cut off at head_timeout all the same
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            got = b""
            for ch in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 100:
                writer.write(bytes([ch]))
                try:
                    got = await asyncio.wait_for(reader.read(4096), 0.05)
                except TimeoutError:
                    continue
                break
            writer.close()
            assert got.startswith(b"HTTP/1.1 408 ") and loop.time() - t0 < 3.0, got
            # a client that closes at once, and one that closes mid-head
            assert (await exchange(port, b"", close_write=True))[0] in (None, 400, 408)
            assert (await exchange(port, b"GET / HTTP/1.1\r\n", close_write=True))[0] is None
            # beyond max_connections: 503 at once, the others still get their answer
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limits.max_connections)]
            await await_until(lambda: len(server.http._conns) >= limits.max_connections, 5, "idle connections held")
            status, _, _, elapsed = await exchange(port, get_request("/healthz"))
            assert status == 503 and elapsed < 1.0
            for r, w in idle:
                assert (await asyncio.wait_for(r.read(), 3.0)).startswith(b"HTTP/1.1 408 ")
                w.close()
            # the node serves on: the page, the JSON, and the cluster
            await await_until(lambda: not server.http._conns, 5, "connections gone")
            status, _, _, _ = await exchange(port, get_request("/"))
            assert status == 200
            d = await cluster_json(port)
            assert d["node"] == a.name
            assert await b.ping(a.name) == A("pong")
            assert server.http.answered[400] >= 8
        finally:
            await a.stop()
            await b.stop()

    run(main, 60)


def test_parse_head() -> None:
    r = parse_head(b"GET /api/cluster?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*")
    assert (r.method, r.path, r.query, r.version) == ("GET", "/api/cluster", "x=1", "HTTP/1.1")
    assert r.header("HOST") == "127.0.0.1:8080" and r.header("accept") == "*/*" and r.header("x") is None
    # HTTP/1.0 needs no Host; bare LF line ends and empty lines before the request line are accepted
    assert parse_head(b"\r\nGET / HTTP/1.0").path == "/"
    assert parse_head(b"GET / HTTP/1.1\nHost: a").header("host") == "a"
    assert parse_head(b"GET http://127.0.0.1:1/api/cluster HTTP/1.1\r\nHost: x").path == "/api/cluster"
    with pytest.raises(HttpError) as e:
        parse_head(b"PUT / HTTP/1.1\r\nHost: a")
    assert e.value.status == 405 and e.value.allow == "GET"
    with pytest.raises(HttpError) as e:
        parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"y" * 9000)
    assert e.value.status == 431


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_parse_head_refuses_anything_with_an_http_error(data: bytes) -> None:
    try:
        r = parse_head(data)
    except HttpError as e:
        assert e.status in (400, 405, 414, 431, 505)
    else:
        assert r.method == "GET" and r.path.startswith("/")


# -- the command line ---------------------------------------------------------------------------------
class PyNodeCmd:
    """``python -m pynode --sname NAME --cookie C ARGS...`` as a user starts it; its output is
    kept by a thread; stopped by its own pid."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        cmd = [sys.executable, "-m", "pynode", "--sname", name, "--cookie", test_cookie(), *args]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def line(self, needle: str, timeout: float = 30.0) -> str:
        def find() -> str | None:
            with self._lock:
                for ln in self.lines:
                    if needle in ln:
                        return ln
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            return None

        found: str = wait_until(find, timeout, f"{needle!r} from {self.name}", interval=0.02)
        return found

    def tail(self, n: int = 60) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])

    def page_url(self) -> str:
        return self.line("pynode: operator page on ").split(" on ", 1)[1]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: its jobs move first), then its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP sockets process ``pid`` listens on, ``(address, port)`` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:
                    addr, port = local.split(":")
                    if len(addr) == 8:
                        addr = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                    out.add((addr, int(port, 16)))
    return out


def test_cli_page_is_off_by_default_and_on_loopback_with_http() -> None:
    started: list[PyNodeCmd] = []
    try:
        plain = PyNodeCmd(unique_name("a") + "@localhost")
        started.append(plain)
        up = plain.line(" up: ")
        dist_port = int(up.split("listening on ", 1)[1].split(",")[0].rsplit(":", 1)[1])
        epmd_port = int(os.environ.get("ERL_EPMD_PORT", "4369"))
        ports = {p for _a, p in listening(plain.proc.pid)}
        assert dist_port in ports and ports <= {dist_port, epmd_port}, ports
        assert not any("operator page" in ln for ln in plain.lines)

        served = PyNodeCmd(unique_name("b") + "@localhost", "--http", "0")
        started.append(served)
        url = served.page_url()
        served.line(" up: ")
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}/"
        socks = listening(served.proc.pid)
        assert ("127.0.0.1", port) in socks and ("0.0.0.0", port) not in socks
        with urllib.request.urlopen(url, timeout=10) as f:
            assert f.status == 200 and f.read() == PAGE
        with urllib.request.urlopen(url + "api/cluster", timeout=10) as f:
            d = json.loads(f.read())
        assert d["node"] == served.name and by_name(d)[served.name]["self"]

        # the port taken: one line, status 1, as a name in use
        clash = PyNodeCmd(unique_name("c") + "@localhost", "--http", str(port))
        started.append(clash)
        assert clash.proc.wait(30) == 1
        wait_until(lambda: any("operator page" in ln for ln in clash.lines), 5, "the error line")
        errs = [ln for ln in clash.lines if "operator page" in ln]
        assert len(errs) == 1 and str(port) in errs[0], clash.tail()

        assert served.stop() == 0 and plain.stop() == 0
    finally:
        for n in started:
            n.kill()


# -- the real thing: a browser watching a handoff ----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Browser:
    """Headless Chromium through chromedriver, spoken to over the W3C WebDriver protocol."""

    def __init__(self, log_path: Path) -> None:
        assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
        assert os.path.exists(CHROMEDRIVER), f"{CHROMEDRIVER} is missing: apt-get install chromium-driver"
        port = _free_port()
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        self.sid: str | None = None
        try:
            wait_until(self._ready, 30, "chromedriver's /status", interval=0.05)
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1100"]}}}}
            self.sid = self._req("POST", "/session", caps, timeout=90)["sessionId"]
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        try:
            return bool(self._req("GET", "/status", timeout=2)["ready"])
        except (OSError, AssertionError):
            return False

    def _req(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as f:
                return json.loads(f.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def get(self, url: str) -> None:
        self._req("POST", f"/session/{self.sid}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        return self._req("POST", f"/session/{self.sid}/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._req("GET", f"/session/{self.sid}/screenshot"))

    def close(self) -> None:
        try:
            if self.sid is not None:
                self._req("DELETE", f"/session/{self.sid}", timeout=30)
        except (OSError, AssertionError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()


#: what the test reads from the page's DOM
DOM = """
const rows = [...document.querySelectorAll('#jobs tbody tr[data-job]')].map(r => ({
  id: r.dataset.job, node: r.dataset.node, from: r.dataset.movedFrom || null,
  status: r.children[4].textContent, progress: r.children[5].textContent, replicas: r.children[3].textContent}));
const nodes = [...document.querySelectorAll('#nodes .card')].map(c => ({
  name: c.dataset.node, up: c.dataset.up === 'true', runtime: c.dataset.runtime,
  state: c.querySelector('.state').textContent}));
return {rows: rows, nodes: nodes, marker: window.__pynodeTestMarker || null,
        live: document.getElementById('live').className, served: document.getElementById('served').textContent};
"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


@pytest.fixture(scope="module")
def mix_compiled() -> str:
    return compile_mix_project(MIX_PROJECT)


@pytest.mark.interop
def test_browser_watches_jobs_move_during_a_rolling_stop(mix_compiled: str, tmp_path: Path) -> None:
    # a missing browser fails the test (CI installs chromium and chromium-driver)
    browser = Browser(tmp_path / "chromedriver.log")
    names = {k: unique_name(k) + "@localhost" for k in ("a", "b", "e")}
    a_name, b_name, e_name = names["a"], names["b"], names["e"]
    started: list[Any] = []
    try:
        # the cluster, as a user starts it: no configuration, the nodes find each other
        a = PyNodeCmd(a_name, "--http", "0", "--import", "tests.web_kinds")
        started.append(a)
        b = PyNodeCmd(b_name, "--import", "tests.web_kinds")
        started.append(b)
        e = BeamNode.start(e_name, test_cookie(), lang="elixir", mix_project=MIX_PROJECT)
        started.append(e)
        url = a.page_url()
        b.line(" up: ")

        def api() -> dict[str, Any]:
            with urllib.request.urlopen(url + "api/cluster", timeout=10) as f:
                d: dict[str, Any] = json.load(f)
                return d

        wait_until(lambda: {n["name"] for n in api()["nodes"] if n["job_host"] and n["up"]} == set(names.values()),
                   30, "three job hosts on the page", interval=0.1)
        hosts_seen = "length(Pynode.Registry.lookup_pids({:p, :g, :pynode_job_host}))"
        wait_until(lambda: e.eval(hosts_seen) == 3, 30, "three hosts seen from the Elixir node", interval=0.1)

        # jobs on each node, started from the Elixir node with the host's own start call
        placed = {
            "j-e1": (e_name, ":Job", "[]"), "o-e1": (e_name, ":\"Job.Otp\"", "[]"),
            "j-b1": (b_name, ":Job", "[]"), "o-b1": (b_name, ":\"Job.Otp\"", "[]"),
            "w-b1": (b_name, ":web_steps", "[100000, 40]"),
            "j-a1": (a_name, ":Job", "[]"), "w-a1": (a_name, ":web_steps", "[100000, 40]"),
        }
        for job, (host, kind, args) in placed.items():
            r = e.eval(f'GenServer.call({{:pynode_jobs, :"{host}"}}, {{:start, {kind}, "{job}", {args}}}, 10000)')
            assert r[0] == A("ok") and str(r[1].node) == host, (job, r)
        assert e.eval('Job.update("j-e1", :deploying)') == A("ok")

        browser.get(url)
        browser.run("window.__pynodeTestMarker = 'same page'; return true;")

        def dom() -> dict[str, Any]:
            d: dict[str, Any] = browser.run(DOM)
            return d

        def shows(want: dict[str, str], down: set[str], moved: dict[str, str]) -> dict[str, Any] | None:
            d = dom()
            rows = {r["id"]: r for r in d["rows"]}
            nodes = {n["name"]: n for n in d["nodes"]}
            if d["marker"] != "same page":
                raise AssertionError("the page was reloaded")
            if {k: rows[jid(k)]["node"] for k in want if jid(k) in rows} != want:
                return None
            if any(nodes.get(n, {}).get("up", True) for n in down):
                return None
            if any(rows[jid(k)]["from"] != f for k, f in moved.items()):
                return None
            return d

        # every job on its owner, every node up, runtimes told apart
        d = wait_until(lambda: shows({k: v[0] for k, v in placed.items()}, set(), {}), 30,
                       "every job on its owner in the page", interval=0.1)
        nodes = {n["name"]: n for n in d["nodes"]}
        assert nodes[e_name]["runtime"] == "beam" and nodes[a_name]["runtime"] == "python"
        assert nodes[b_name]["runtime"] == "python" and all(nodes[n]["up"] for n in names.values())
        assert d["served"] == a_name and d["live"] == "ok"
        rows = {r["id"]: r for r in d["rows"]}
        assert len(d["rows"]) == len(placed)
        wait_until(lambda: "/ 100000" in {r["id"]: r for r in dom()["rows"]}[jid("w-b1")]["progress"], 20,
                   "the run kind's progress", interval=0.1)

        # the Elixir node stops gracefully: its jobs move to a Python node, the page shows it down
        assert e.stop(timeout=60) == 0
        d = wait_until(lambda: shows({}, {e_name}, {"j-e1": e_name, "o-e1": e_name}), 30,
                       "the Elixir node's jobs moved and the node down", interval=0.1)
        rows = {r["id"]: r for r in d["rows"]}
        for k in ("j-e1", "o-e1"):
            assert rows[jid(k)]["node"] in (a_name, b_name), rows[jid(k)]
        assert "down since" in {n["name"]: n for n in d["nodes"]}[e_name]["state"]
        progress_before = rows[jid("w-b1")]["progress"]

        # then the Python node b stops (SIGTERM): everything ends up on a
        on_b = [k for k, r in rows.items() if r["node"] == b_name]
        assert jid("w-b1") in on_b and jid("j-b1") in on_b
        assert b.stop() == 0
        d = wait_until(
            lambda: shows({k: a_name for k in placed}, {e_name, b_name}, {k.strip('"'): b_name for k in on_b}),
            30, "every job on a, b and e down", interval=0.1)
        rows = {r["id"]: r for r in d["rows"]}
        assert rows[jid("w-b1")]["status"] == "running"
        done = lambda text: int(text.split("/")[0].strip() or 0)  # noqa: E731
        d = wait_until(lambda: _if(dom(), lambda d: done({r["id"]: r for r in d["rows"]}[jid("w-b1")]["progress"])
                                   >= done(progress_before)), 20, "w-b1 resumed on a", interval=0.1)
        nodes = {n["name"]: n for n in d["nodes"]}
        assert not nodes[b_name]["up"] and "down since" in nodes[b_name]["state"] and nodes[a_name]["up"]
        assert d["marker"] == "same page" and d["live"] == "ok"
        # the JSON agrees
        j = api()
        assert all(x["node"] == a_name for x in j["jobs"]) and len(j["jobs"]) == len(placed)
        assert not by_name(j)[e_name]["up"] and not by_name(j)[b_name]["up"]

        # the screenshot, while the moved rows still say where they came from
        png = browser.screenshot()
        w, h = _png_size(png)
        assert w >= 800 and h >= 600 and len(png) > 20000, (w, h, len(png))
        shot = tmp_path / "web-screenshot.png"
        shot.write_bytes(png)
        out_dir = Path(os.environ.get("PYNODE_SCREENSHOT_DIR", str(ROOT / "build")))
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out_dir / "web-screenshot.png")
        assert (out_dir / "web-screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        assert a.stop() == 0
    finally:
        browser.close()
        for n in started:
            n.kill()


def _if(v: Any, pred: Callable[[Any], bool]) -> Any:
    return v if pred(v) else None
