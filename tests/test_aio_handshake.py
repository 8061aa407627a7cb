"""asyncio handshake drivers: Python <-> Python over loopback, timeouts, and interop with a
real OTP 25 node in both directions (docs/WIRE.md §2). Interop tests fail when `erl` is missing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from erl_interop import aio
from erl_interop.epmd import client as epmd_client
from erl_interop.errors import HandshakeError
from erl_interop.flags import DEFAULT_FLAGS, MANDATORY_25, DistFlags
from erl_interop.handshake import DefaultPolicy, HandshakeComplete
from pynode.testing import BeamNode, await_until, unique_name, wait_until

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

COOKIE = "hs_cookie"
TICK = b"\x00\x00\x00\x00"


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def node(prefix: str = "py") -> str:
    return f"{unique_name(prefix)}@localhost"


class Policy(DefaultPolicy):
    def __init__(self, status: str = "ok") -> None:
        self.status = status

    def accept_pending(self, peer_name, peer_flags, peer_creation):  # type: ignore[override]
        return self.status


@contextlib.asynccontextmanager
async def py_server(our: str, cookie: str, creation: Any = 7, **kw: Any):
    """A listening Python acceptor; yields (port, completions queue, errors list, release event)."""
    completions: asyncio.Queue[HandshakeComplete] = asyncio.Queue()
    errors: list[HandshakeError] = []
    release = asyncio.Event()

    async def on_connected(reader, writer, complete):
        await completions.put(complete)
        # keep the connection up (ticking) until the test is done with it
        while not release.is_set():
            writer.write(TICK)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await release.wait()

    server = await aio.start_server(our, cookie, creation, on_connected, on_error=errors.append, **kw)
    try:
        yield server.sockets[0].getsockname()[1], completions, errors, release
    finally:
        release.set()
        server.close()
        await server.wait_closed()


# -- Python <-> Python ----------------------------------------------------------------------
def test_python_pair_over_loopback():
    a, b = node("pya"), node("pyb")

    async def main():
        async with py_server(b, COOKIE, creation=1234) as (port, done, errors, release):
            reader, writer, c = await aio.connect(a, b, COOKIE, 99, port=port)
            assert c == HandshakeComplete(b, DEFAULT_FLAGS, DEFAULT_FLAGS, 1234, c.trailing)
            acc = await done.get()
            assert (acc.peer_name, acc.peer_creation, acc.flags) == (a, 99, DEFAULT_FLAGS)
            # the acceptor's first tick arrives in the connected phase (trailing or next read)
            data = c.trailing or await reader.readexactly(4)
            assert data[:4] == TICK
            writer.close()
            assert not errors

    run(main())


def test_python_pair_wrong_cookie():
    a, b = node("pya"), node("pyb")

    async def main():
        async with py_server(b, COOKIE) as (port, done, errors, release):
            with pytest.raises(HandshakeError) as ei:
                await aio.connect(a, b, "not_the_cookie", 1, port=port)
            assert (ei.value.step, ei.value.reason) == ("recv_challenge_ack", "closed")
            assert "cookie" in ei.value.detail
            await await_until(lambda: errors, 5.0, "acceptor error", interval=0.01)
            assert (errors[0].step, errors[0].reason) == ("recv_challenge_reply", "bad_cookie")
            assert done.empty()

    run(main())


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
def test_python_pair_policy_refusal(status):
    a, b = node("pya"), node("pyb")

    async def main():
        async with py_server(b, COOKIE, policy=Policy(status)) as (port, done, errors, release):
            with pytest.raises(HandshakeError) as ei:
                await aio.connect(a, b, COOKIE, 1, port=port)
            assert (ei.value.step, ei.value.reason) == ("recv_status", status)

    run(main())


def test_initiator_setup_timeout():
    async def main():
        async def silent(reader, writer):
            await reader.read()  # never answers the name

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(HandshakeError) as ei:
            await aio.connect(node(), node("x"), COOKIE, 1, port=port, setup_timeout=0.3)
        assert (ei.value.step, ei.value.reason) == ("recv_status", "timeout")
        assert loop.time() - t0 < 3
        server.close()
        await server.wait_closed()

    run(main())


def test_acceptor_setup_timeout_dribbling_peer():
    # a peer that sends one byte of its name packet and stalls is cut off by net_setuptime
    async def main():
        async with py_server(node(), COOKIE, setup_timeout=0.3) as (port, done, errors, release):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x00")
            await writer.drain()
            assert await reader.read() == b""  # closed by the acceptor
            await await_until(lambda: errors, 5.0, "timeout error", interval=0.01)
            assert (errors[0].step, errors[0].reason) == ("recv_name", "timeout")
            writer.close()

    run(main())


def test_connect_unknown_name_via_epmd(erl):
    # erl is up, so its epmd is on 4369; nobody registered this name
    with pytest.raises(HandshakeError) as ei:
        run(aio.connect(node(), node("ghost"), COOKIE, 1))
    assert (ei.value.step, ei.value.reason) == ("port_please", "not_registered")


def test_resolve_host():
    assert aio.resolve_host("x@localhost") == "127.0.0.1"
    assert aio.resolve_host("x@example.org") == "example.org"
    assert aio.resolve_host("localhost") == "127.0.0.1"


# -- interop with a real OTP 25 node ---------------------------------------------------------
@pytest.fixture(scope="module")
def erl():
    n = BeamNode.start(f"{unique_name('erl')}@localhost", cookie=COOKIE)
    yield n
    n.stop()


def hidden_nodes(erl: BeamNode) -> list[str]:
    return [str(x) for x in erl.eval("nodes(hidden).")]


def test_python_initiator_to_erl(erl):
    our = node()

    async def main():
        reader, writer, c = await aio.connect(our, erl.name, COOKIE, 4242)  # port via EPMD
        assert c.peer_name == erl.name
        assert c.peer_flags & MANDATORY_25 == MANDATORY_25
        assert c.peer_flags & DistFlags.PUBLISHED  # erl is a visible node ...
        assert not c.flags & DistFlags.PUBLISHED  # ... but we are hidden
        assert c.flags == DEFAULT_FLAGS & c.peer_flags
        assert c.peer_creation != 0
        writer.write(TICK)
        await writer.drain()
        await asyncio.to_thread(wait_until, lambda: our in hidden_nodes(erl), 10.0, "erl sees us", interval=0.05)
        assert our not in [str(x) for x in erl.eval("nodes().")]
        writer.close()
        await writer.wait_closed()
        await asyncio.to_thread(wait_until, lambda: our not in hidden_nodes(erl), 10.0, "erl drops us", interval=0.05)

    run(main())


def test_erl_initiator_to_python(erl):
    our = node()
    alive = our.split("@")[0]

    async def main():
        reg: dict[str, Any] = {}
        async with py_server(our, COOKIE, creation=lambda: reg["r"].creation) as (port, done, errors, release):
            async with await epmd_client.register(alive, port) as registration:
                reg["r"] = registration
                ok = await asyncio.to_thread(erl.eval, f"net_kernel:connect_node('{our}').")
                assert ok is True, erl.tail()
                async with asyncio.timeout(5):
                    c = await done.get()
                assert c.peer_name == erl.name
                assert c.peer_creation != 0
                assert c.peer_flags & MANDATORY_25 == MANDATORY_25
                assert c.flags == DEFAULT_FLAGS & c.peer_flags
                assert not errors
                assert our in await asyncio.to_thread(hidden_nodes, erl)
                # our creation is the one EPMD gave us: erl's view of our node agrees
                assert registration.creation != 0
                release.set()
        await asyncio.to_thread(wait_until, lambda: our not in hidden_nodes(erl), 10.0, "erl drops us", interval=0.05)

    run(main())


def test_python_initiator_wrong_cookie_refused_by_erl(erl):
    our = node()

    async def main():
        with pytest.raises(HandshakeError) as ei:
            await aio.connect(our, erl.name, "wrong_cookie", 1)
        assert ei.value.step == "recv_challenge_ack"
        assert ei.value.reason == "closed" and "cookie" in ei.value.detail

    run(main())
    assert our not in hidden_nodes(erl)
    assert erl.eval("ok.") == "ok"  # still running


def test_erl_initiator_wrong_cookie_refused_by_python(erl):
    our = node()
    alive = our.split("@")[0]

    async def main():
        async with py_server(our, "python_side_cookie") as (port, done, errors, release):
            async with await epmd_client.register(alive, port):
                ok = await asyncio.to_thread(erl.eval, f"net_kernel:connect_node('{our}').")
                assert ok is False
                await await_until(lambda: errors, 5.0, "our refusal", interval=0.01)
                assert (errors[0].step, errors[0].reason) == ("recv_challenge_reply", "bad_cookie")
                assert await asyncio.to_thread(erl.eval, f"net_adm:ping('{our}').") == "pang"
                await await_until(lambda: len(errors) == 2, 5.0, "second refusal", interval=0.01)
                assert errors[1].reason == "bad_cookie"
                assert done.empty()

    run(main())
    assert erl.eval("ok.") == "ok"


def test_erl_refuses_missing_mandatory_flags(erl):
    async def main():
        with pytest.raises(HandshakeError) as ei:
            await aio.connect(node(), erl.name, COOKIE, 1, flags=DEFAULT_FLAGS & ~DistFlags.BIG_CREATION)
        assert (ei.value.step, ei.value.reason) == ("recv_status", "not_allowed")

    run(main())
    wait_until(lambda: any("BIG_CREATION" in line for line in erl.output), 5.0, "erl logs the flag", interval=0.05)


def test_python_policy_not_allowed_refuses_erl(erl):
    our = node()

    async def main():
        async with py_server(our, COOKIE, policy=Policy("not_allowed")) as (port, done, errors, release):
            async with await epmd_client.register(our.split("@")[0], port):
                ok = await asyncio.to_thread(erl.eval, f"net_kernel:connect_node('{our}').")
                assert ok is False
                await await_until(lambda: errors, 5.0, "our refusal", interval=0.01)
                assert (errors[0].step, errors[0].reason) == ("send_status", "not_allowed")

    run(main())


def test_erl_says_alive_and_we_answer_true(erl):
    """Reconnect under a name erl still holds a live connection for: erl answers `alive`,
    our default policy says `true`, erl drops the old connection and the new one completes."""
    our = node()

    async def main():
        r1, w1, c1 = await aio.connect(our, erl.name, COOKIE, 1)
        await asyncio.to_thread(wait_until, lambda: our in hidden_nodes(erl), 10.0, "first connection up", interval=0.05)
        asked: list[str] = []

        class Recorder(DefaultPolicy):
            def answer_alive(self, peer_name: str) -> bool:
                asked.append(peer_name)
                return True

        r2, w2, c2 = await aio.connect(our, erl.name, COOKIE, 2, policy=Recorder())
        assert asked == [erl.name]
        assert c2.peer_name == erl.name
        # erl tore the old connection down
        async with asyncio.timeout(10):
            while await r1.read(4096):
                pass
        w2.write(TICK)
        await w2.drain()
        assert our in await asyncio.to_thread(hidden_nodes, erl)
        for w in (w1, w2):
            w.close()

    run(main())
