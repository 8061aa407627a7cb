"""The registry among Python nodes only (several nodes in one Python process, real
distribution links between them): the mirror's rules as a pure table, then reg/unreg/where/
lookup/send/await, properties, purges on process death and node stop, late joiners and the
full mesh, conflicts (concurrent registration and a healed partition), and hostile input."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest

from erl_interop import encode
from erl_interop.terms import Atom, Map, Pid
from pynode.errors import ErlangError
from pynode.node import Node
from pynode.core.process import Process
from pynode.registry import (
    REGISTRY_NAME,
    Mirror,
    key_bytes,
    winner,
)
from pynode.testing import unique_name, test_cookie

from node_helpers import A, Mailbox, run, wait_for

UNDEF = A("undefined")
OK = A("ok")
TAG = A("$pynode_reg")


def n(name: Any) -> tuple[Atom, Atom, Any]:
    return (A("n"), A("g"), name)


def p(name: Any) -> tuple[Atom, Atom, Any]:
    return (A("p"), A("g"), name)


@contextlib.asynccontextmanager
async def cluster(*prefixes: str) -> AsyncIterator[list[Node]]:
    """Started Python nodes (names ``prefix...``, so prefixes order them), meshed."""
    nodes: list[Node] = []
    try:
        for pre in prefixes:
            nodes.append(await Node(unique_name(pre) + "@localhost", test_cookie()).start())
        # Each node only pings the first; the registry's member lists complete the mesh.
        for nd in nodes[1:]:
            assert await nd.ping(nodes[0].name) == A("pong")
        await mesh(nodes)
        yield nodes
    finally:
        for nd in nodes:
            await nd.stop()


async def mesh(nodes: list[Node]) -> None:
    want = sorted(nd.name for nd in nodes)
    await wait_for(lambda: all(nd.registry.members() == want for nd in nodes), what=f"members == {want}")


class Holder:
    """A process that stays alive until told to stop, for holding registrations."""

    def __init__(self, node: Node, trap_exit: bool = False) -> None:
        self.box = Mailbox(node, trap_exit=trap_exit)
        self.node = node

    @property
    def proc(self) -> Process:
        return self.box.proc

    @property
    def pid(self) -> Pid:
        return self.box.pid

    async def reg(self, key: Any, value: Any = UNDEF) -> Any:
        return await self.node.registry.reg(self.proc, key, value)

    async def unreg(self, key: Any) -> Any:
        return await self.node.registry.unreg(self.proc, key)


def user_entries(r: Any) -> list[Any]:
    """The mirror's entries minus the runtime's own (``pynode_*`` atom names, e.g. the job
    host's ``{p, g, pynode_job_host}``)."""
    return [e for e in r.entries() if not (type(e[0][2]) is Atom and e[0][2].startswith("pynode_"))]


def everywhere(nodes: list[Node], fn: Any) -> bool:
    return all(fn(nd.registry) for nd in nodes)


# -- the pure table -------------------------------------------------------------------------
def pid(node: str, i: int = 1) -> Pid:
    return Pid(A(node), i, 0, 1)


def test_winner_is_smaller_node_name_bytewise():
    a, b = pid("a@h", 9), pid("b@h", 1)
    assert winner(a, b) == a and winner(b, a) == a
    # Byte-wise UTF-8, not case-folded: 'Z' (0x5a) < 'a' (0x61); 'é' (0xc3 0xa9) > 'z'.
    assert winner(pid("a@h"), pid("Z@h")) == pid("Z@h")
    assert winner(pid("z@h"), pid("é@h")) == pid("z@h")
    # A prefix is smaller.
    assert winner(pid("ab@h"), pid("a@h")) == pid("a@h")  # "@" < "b"
    # Not "natural" order: '0' (0x30) < '@' (0x40), so 'n10@h' < 'n1@h' (as erl says).
    assert winner(pid("n1@h"), pid("n10@h")) == pid("n10@h")
    # Code points above 255 (two UTF-8 bytes vs one for ÿ): ÿ < Ā, as atom order on the BEAM.
    assert winner(pid("\u0100@h"), pid("\u00ff@h")) == pid("\u00ff@h")
    # Same node: the smaller pid.
    assert winner(pid("a@h", 5), pid("a@h", 3)) == pid("a@h", 3)


def test_mirror_claims_replace_and_purge():
    m = Mirror()
    k = n(b"x")
    kb = key_bytes(k)
    m.put(kb, k, pid("b@h"), 1)
    m.put(kb, k, pid("a@h"), 2)
    assert m.holder(kb) == (pid("a@h"), k, 2)
    assert m.losers(kb) == [pid("b@h")]
    assert m.visible(kb) == [(pid("a@h"), 2)]
    # The winner's node goes away (before the loser's node ever heard of it): the surviving
    # claim shows, as on every other mirror (and as the Elixir side's "shadows" do). Not
    # tested with live nodes: a bridge node's member list reconnects a split pair at once.
    assert m.replace_node(A("a@h"), []) == {kb}
    assert m.holder(kb) == (pid("b@h"), k, 1)
    # Replace is idempotent and reports only what changed.
    pk = p("q")
    entries = [(key_bytes(pk), pk, pid("b@h", 2), A("v")), (kb, k, pid("b@h"), 1)]
    assert m.replace_node(A("b@h"), entries) == {key_bytes(pk)}
    assert m.replace_node(A("b@h"), entries) == set()
    assert sorted(map(repr, m.entries_of_node(A("b@h")))) == sorted(
        map(repr, [(pk, pid("b@h", 2), A("v")), (k, pid("b@h"), 1)])
    )
    # A property has no losers, however many holders.
    m.put(key_bytes(pk), pk, pid("a@h", 7), 0)
    assert m.losers(key_bytes(pk)) == []
    assert len(m.visible(key_bytes(pk))) == 2
    m.remove(key_bytes(pk), pid("a@h", 7))
    assert m.drop_node(A("b@h")) == {kb, key_bytes(pk)}
    assert m.claims == {} and m.by_pid == {} and m.by_node == {}


def test_keys_use_exact_equality():
    assert key_bytes(n(1)) != key_bytes(n(1.0))
    assert key_bytes(n(b"x")) == key_bytes(n("x"))  # a str is an Elixir string (binary)
    assert key_bytes(n(A("x"))) != key_bytes(n(b"x"))
    assert key_bytes(n((1, 2))) != key_bytes(n([1, 2]))
    # Equal maps are equal keys, whatever their Python order.
    assert key_bytes(n({A("a"): 1, 2: 3})) == key_bytes(n({2: 3, A("a"): 1}))
    assert key_bytes(n(Map([(1, 0), (1.0, 0)]))) == key_bytes(n(Map([(1.0, 0), (1, 0)])))
    assert key_bytes(n({1: 0})) != key_bytes(n({1.0: 0}))


# -- the API among Python nodes -------------------------------------------------------------
def test_reg_where_lookup_unreg_across_nodes():
    async def main():
        async with cluster("a", "b", "c") as nodes:
            a, b, c = nodes
            h = Holder(b)
            other = Holder(c)
            key = n("svc")
            assert await h.reg(key, A("v1")) == OK
            await wait_for(lambda: everywhere(nodes, lambda r: r.where(key) == h.pid), what="where everywhere")
            for nd in nodes:
                assert nd.registry.lookup_pids(key) == [h.pid]
                assert nd.registry.lookup_values(key) == [(h.pid, A("v1"))]
            # Another process anywhere cannot take it.
            assert await other.reg(key) == (A("error"), (A("already_registered"), h.pid))
            # Same pid again updates the value, everywhere.
            assert await h.reg(key, {A("port"): 80}) == OK
            await wait_for(
                lambda: everywhere(nodes, lambda r: r.lookup_values(key) == [(h.pid, {A("port"): 80})]),
                what="value update",
            )
            # Keys use =:=; plain strings for n/g are accepted.
            assert a.registry.where(("n", "g", "svc")) == h.pid
            assert a.registry.where(n(A("svc"))) == UNDEF
            assert await h.unreg(key) == OK
            assert await h.unreg(key) == OK  # nothing to remove: still ok
            await wait_for(lambda: everywhere(nodes, lambda r: r.where(key) == UNDEF), what="unreg everywhere")
            assert everywhere(nodes, lambda r: r.lookup_pids(key) == [] and r.lookup_values(key) == [])
            # Now the other process can have it.
            assert await other.reg(key) == OK
            await wait_for(lambda: everywhere(nodes, lambda r: r.where(key) == other.pid), what="re-reg")
            with pytest.raises(ValueError):
                await h.reg((A("n"), A("l"), 1))
            with pytest.raises(ValueError):
                a.registry.where("svc")

    run(main)


def test_properties_many_holders():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            h1, h2, h3 = Holder(a), Holder(b), Holder(b)
            key = p(("topic", 1))
            assert await h1.reg(key, 1) == OK
            assert await h2.reg(key, 2) == OK
            assert await h3.reg(key, 3) == OK
            assert await h2.reg(key, 22) == OK  # each pid at most once: an update
            want = {(h1.pid, 1), (h2.pid, 22), (h3.pid, 3)}
            await wait_for(lambda: everywhere(nodes, lambda r: set(r.lookup_values(key)) == want), what="props")
            for nd in nodes:
                assert len(nd.registry.lookup_pids(key)) == 3
                assert nd.registry.where(key) in {h1.pid, h2.pid, h3.pid}
            # send reaches every holder.
            assert a.registry.send(key, A("hello")) == A("hello")
            for h in (h1, h2, h3):
                assert await h.box.get() == A("hello")
            await h2.unreg(key)
            want.discard((h2.pid, 22))
            await wait_for(lambda: everywhere(nodes, lambda r: set(r.lookup_values(key)) == want), what="prop unreg")
            # A property with no holder: send is a no-op that returns the message.
            assert a.registry.send(p("nobody"), 1) == 1
            # Two local holders, then a remote one: nobody is a "loser" of a property.
            key2 = p("second")
            l1, l2, r1 = Holder(a, trap_exit=True), Holder(a, trap_exit=True), Holder(b)
            assert await l1.reg(key2) == OK
            assert await l2.reg(key2) == OK
            await wait_for(lambda: len(b.registry.lookup_pids(key2)) == 2, what="two on b")
            assert await r1.reg(key2) == OK
            await wait_for(lambda: everywhere(nodes, lambda r: len(r.lookup_pids(key2)) == 3), what="three")
            assert l1.proc.message_queue_len == 0 and l2.proc.message_queue_len == 0

    run(main)


def test_send_by_name_and_badarg():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            h = Holder(b)
            assert await h.reg(n("target")) == OK
            await wait_for(lambda: a.registry.where(n("target")) == h.pid, what="visible on a")
            sender = Mailbox(a)
            assert a.registry.send(n("target"), (A("msg"), 1), sender=sender.proc) == (A("msg"), 1)
            a.registry.send(n("target"), (A("msg"), 2))
            assert await h.box.get() == (A("msg"), 1)
            assert await h.box.get() == (A("msg"), 2)
            with pytest.raises(ErlangError) as ei:
                a.registry.send(n("nobody"), 1)
            assert ei.value.reason == A("badarg")

    run(main)


def test_await_now_later_and_timeout():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            h = Holder(b)
            assert await h.reg(n("early"), 7) == OK
            await wait_for(lambda: a.registry.where(n("early")) == h.pid, what="early")
            assert await a.registry.await_(n("early"), 0) == (h.pid, 7)
            # Waiting first: answered when the reg arrives from the other node.
            waiter = asyncio.ensure_future(a.registry.wait_for(n("late"), 5.0))
            await asyncio.sleep(0)
            assert not waiter.done()
            assert await h.reg(n("late"), A("here")) == OK
            assert await waiter == (h.pid, A("here"))
            with pytest.raises(TimeoutError):
                await a.registry.await_(n("never"), 0.05)
            assert a.registry.server._waiters == {}

    run(main)


def test_process_death_purges_everywhere():
    async def main():
        async with cluster("a", "b", "c") as nodes:
            a, b, c = nodes
            h = Holder(b)
            assert await h.reg(n("mortal")) == OK
            assert await h.reg(p("mortal_prop"), 1) == OK
            keep = Holder(b)
            assert await keep.reg(p("mortal_prop"), 2) == OK
            await wait_for(
                lambda: everywhere(nodes, lambda r: r.where(n("mortal")) == h.pid and len(r.lookup_pids(p("mortal_prop"))) == 2),
                what="registered",
            )
            h.proc.exit(h.pid, A("kill"))
            await wait_for(
                lambda: everywhere(
                    nodes,
                    lambda r: r.where(n("mortal")) == UNDEF and r.lookup_pids(p("mortal_prop")) == [keep.pid],
                ),
                what="purged after death",
            )
            assert h.pid not in b.registry.server._local_mons

    run(main)


def test_node_stop_purges_and_leaves_members():
    async def main():
        async with cluster("a", "b", "c") as nodes:
            a, b, c = nodes
            h = Holder(c)
            assert await h.reg(n("on_c")) == OK
            assert await h.reg(p("on_c"), 1) == OK
            await wait_for(lambda: everywhere(nodes, lambda r: r.where(n("on_c")) == h.pid), what="registered")
            await c.stop()
            rest = [a, b]
            await wait_for(
                lambda: everywhere(rest, lambda r: r.where(n("on_c")) == UNDEF and r.lookup_pids(p("on_c")) == []),
                what="purged after node stop",
            )
            await mesh(rest)

    run(main)


def test_late_joiner_gets_snapshot_and_full_mesh():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            ha, hb = Holder(a), Holder(b)
            assert await ha.reg(n("from_a"), 1) == OK
            assert await hb.reg(n("from_b"), 2) == OK
            assert await hb.reg(p("prop"), 3) == OK
            await wait_for(lambda: everywhere(nodes, lambda r: len(user_entries(r)) == 3), what="3 entries")
            late = await Node(unique_name("late") + "@localhost", test_cookie()).start()
            try:
                # The late node only knows a; the member list brings it to b as well.
                assert await late.ping(a.name) == A("pong")
                await mesh([a, b, late])
                assert b.name in late.connected_nodes
                r = late.registry
                await wait_for(lambda: len(user_entries(r)) == 3, what="snapshot on the late node")
                assert r.where(n("from_a")) == ha.pid
                assert r.lookup_values(n("from_b")) == [(hb.pid, 2)]
                assert r.lookup_values(p("prop")) == [(hb.pid, 3)]
                hl = Holder(late)
                assert await hl.reg(n("from_late")) == OK
                await wait_for(lambda: everywhere(nodes, lambda r: r.where(n("from_late")) == hl.pid), what="late reg")
            finally:
                await late.stop()
            await wait_for(lambda: everywhere(nodes, lambda r: r.where(n("from_late")) == UNDEF), what="late gone")

    run(main)


async def _register_concurrently(nodes: list[Node], names: list[Any], trap_exit: bool = False) -> dict[Any, list[Holder]]:
    """One process per (node, name), all asking at once; returns the holders whose reg said ok."""
    holders = {nm: [Holder(nd, trap_exit=trap_exit) for nd in nodes] for nm in names}
    calls = [(nm, h, h.reg(n(nm), h.node.name)) for nm, hs in holders.items() for h in hs]
    results = await asyncio.gather(*(c for _nm, _h, c in calls))
    won: dict[Any, list[Holder]] = {nm: [] for nm in names}
    for (nm, h, _c), res in zip(calls, results):
        if res == OK:
            won[nm].append(h)
        else:
            assert res[0] == A("error") and res[1][0] == A("already_registered"), res
    return won


def test_concurrent_registration_converges_3_nodes_x_100_names():
    async def main():
        async with cluster("c", "a", "b") as nodes:
            names = [f"name{i}".encode() for i in range(100)]
            won = await _register_concurrently(nodes, names)
            # The winner rule: of the processes whose reg succeeded, the one on the smallest node.
            expected = {nm: min(hs, key=lambda h: h.node.name) for nm, hs in won.items()}
            assert all(won.values())
            conflicts = sum(len(hs) > 1 for hs in won.values())

            def converged() -> bool:
                return all(
                    nd.registry.lookup_pids(n(nm)) == [expected[nm].pid] for nd in nodes for nm in names
                )

            await wait_for(converged, timeout=20, what="one holder per name everywhere")
            # Every loser died with {name_conflict, Key, Winner}.
            for nm, hs in won.items():
                for h in hs:
                    if h is expected[nm]:
                        continue
                    await wait_for(lambda: not h.proc.alive, what="loser exit")
                    # The winner named is the one that beat it when its registry saw the
                    # conflict: the final winner, or one that lost to it in turn.
                    tag, key, beaten_by = h.proc.exit_reason
                    assert (tag, key) == (A("name_conflict"), n(nm))
                    assert beaten_by in [x.pid for x in hs] and beaten_by.node < h.node.name
                assert expected[nm].proc.alive
            # Every mirror holds exactly the winners; hidden losing claims go with their unreg.
            await wait_for(
                lambda: all(len(c) == 1 for nd in nodes for c in nd.registry.server.mirror.claims.values()
                            if next(iter(c.values()))[0][0] == A("n")),
                what="losing claims withdrawn",
            )
            for nd in nodes:
                assert sorted(user_entries(nd.registry), key=repr) == sorted(
                    [(n(nm), expected[nm].pid, expected[nm].node.name) for nm in names], key=repr
                )
            print(f"{conflicts} of 100 names were claimed by more than one node")

    run(main, timeout=90)


def test_loser_that_traps_exits_gets_exit_message_and_lives():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            key = n("contested")
            # Partition a from b, register on both sides, heal.
            a.dist.conns[b.name].close()
            await wait_for(lambda: a.registry.members() == [a.name] and b.registry.members() == [b.name], what="split")
            ha = Holder(a)
            hb = Holder(b, trap_exit=True)
            assert await ha.reg(key, 1) == OK
            assert await hb.reg(key, 2) == OK
            assert await hb.reg(n("b_only"), 3) == OK
            assert await b.ping(a.name) == A("pong")
            await mesh(nodes)
            await wait_for(lambda: everywhere(nodes, lambda r: r.lookup_values(key) == [(ha.pid, 1)]), what="converged")
            msg = await hb.box.get()
            assert msg == (A("EXIT"), b.registry.pid, (A("name_conflict"), key, ha.pid))
            assert hb.proc.alive
            # The loser keeps its other names.
            assert everywhere(nodes, lambda r: r.where(n("b_only")) == hb.pid)
            assert ha.proc.alive

    run(main)


def test_partition_heal_converges_with_many_names():
    async def main():
        async with cluster("a", "b", "c") as nodes:
            a, b, c = nodes
            # Split {a} | {b, c}: close a's links (the peers see noconnection too).
            for peer in (b, c):
                a.dist.conns[peer.name].close()
            await wait_for(
                lambda: a.registry.members() == [a.name] and b.registry.members() == sorted([b.name, c.name]),
                what="partition",
            )
            names = [("split", i) for i in range(30)]
            side_a = {nm: Holder(a) for nm in names}
            side_bc = {nm: Holder(b if i % 2 else c) for i, nm in enumerate(names)}
            for nm in names:
                assert await side_a[nm].reg(n(nm)) == OK
                assert await side_bc[nm].reg(n(nm)) == OK
            assert await c.ping(a.name) == A("pong")  # heal through c; b joins via members
            await mesh(nodes)
            await wait_for(
                lambda: all(nd.registry.where(n(nm)) == side_a[nm].pid for nd in nodes for nm in names),
                what="a wins everywhere",
            )
            for nm in names:
                await wait_for(lambda: not side_bc[nm].proc.alive, what="loser exit")
                assert side_bc[nm].proc.exit_reason == (A("name_conflict"), n(nm), side_a[nm].pid)

    run(main, timeout=60)


def test_malformed_messages_are_ignored():
    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            reg_pid = a.registry.pid
            junk = Mailbox(b)
            hb = Holder(b)
            fake_b_pid = Pid(b.name, 999, 0, b.creation)
            other_node_pid = Pid(A("zz@nowhere"), 1, 0, 1)
            msgs = [
                A("hello"),
                (),
                (TAG,),
                (TAG, 2, A("discover"), junk.pid),
                (TAG, True, A("discover"), junk.pid),  # true is not the integer 1
                (TAG, 1, A("discover")),
                (TAG, 1, A("discover"), b"not a pid"),
                (TAG, 1, A("sync"), b.registry.pid, A("notalist"), []),
                (TAG, 1, A("sync"), b.registry.pid, [A("bad"), (1, 2, 3), (n(1), other_node_pid, 0), (n("survivor"), hb.pid, UNDEF)],
                 [42, A("x"), A("")]),
                (TAG, 1, A("reg"), b.registry.pid, (A("x"), A("g"), 1), fake_b_pid, 0),
                (TAG, 1, A("reg"), b.registry.pid, n("stolen"), other_node_pid, 0),  # pid not on node(From)
                (TAG, 1, A("reg"), b.registry.pid, n(1), b"nopid", 0),
                (TAG, 1, A("unreg"), b.registry.pid, n(1), A("x")),
                (TAG, 1, A("unreg"), b.registry.pid, 7, fake_b_pid),
                (TAG, 1, A("bogus"), b.registry.pid),
                (A("DOWN"), 1, 2, 3, 4),
                (A("nodeup"), b"x"),
                (A("$gen_call"), A("nonsense"), 1),
            ]
            assert await hb.reg(n("survivor")) == OK
            for m in msgs:
                junk.proc.send(reg_pid, m)
            junk.proc.send((REGISTRY_NAME, a.name), A("by_name"))
            # A reg from the real registry of b with a pid on b still works afterwards.
            assert await hb.reg(n("after_junk")) == OK
            await wait_for(lambda: a.registry.where(n("after_junk")) == hb.pid, what="still working")
            assert a.registry.where(n("survivor")) == hb.pid
            assert a.registry.where(n("stolen")) == UNDEF
            assert a.registry.where(n(1)) == UNDEF
            assert a.registry.server.process.alive
            assert a.registry.members() == sorted([a.name, b.name])

    run(main)


def test_reg_from_a_non_member_asks_for_its_snapshot():
    """A reg arriving from a registry this node does not know is not applied blindly: the
    receiver asks that registry for its snapshot (discover), which carries the entry."""

    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            hb = Holder(b)
            assert await hb.reg(n("via_snapshot"), 5) == OK
            await wait_for(lambda: a.registry.where(n("via_snapshot")) == hb.pid, what="visible")
            # Make a forget b without a disconnect (as if b's registry were unknown), and b
            # forget that it answered a's discover (so that b answers the next one, as a
            # correct peer that a does not know yet has not sent a its snapshot).
            srv = a.registry.server
            srv._forget(b.name)
            b.registry.server.synced.pop(a.name)
            assert a.registry.where(n("via_snapshot")) == UNDEF
            # b announces something: a answers with discover, b syncs, a learns everything.
            assert await hb.reg(n("second"), 6) == OK
            await wait_for(
                lambda: a.registry.where(n("via_snapshot")) == hb.pid and a.registry.where(n("second")) == hb.pid,
                what="snapshot after unknown reg",
            )
            assert a.registry.members() == sorted([a.name, b.name])

    run(main)


def test_encode_of_key_in_messages_is_exact():
    """1 and 1.0 are two names across the wire too."""

    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            h1, h2 = Holder(b), Holder(b)
            assert await h1.reg(n(1), A("int")) == OK
            assert await h2.reg(n(1.0), A("float")) == OK
            await wait_for(
                lambda: a.registry.lookup_values(n(1)) == [(h1.pid, A("int"))]
                and a.registry.lookup_values(n(1.0)) == [(h2.pid, A("float"))],
                what="two names",
            )
            assert encode(n(1)) != encode(n(1.0))

    run(main)


def test_module_header_repeats_the_protocol_doc_verbatim():
    """docs/REGISTRY_PROTOCOL.md is the contract; pynode/registry/protocol.py repeats it word for word."""
    from pathlib import Path

    import pynode.registry.protocol as mod

    doc = (Path(__file__).resolve().parents[1] / "docs" / "REGISTRY_PROTOCOL.md").read_text().rstrip("\n")
    header = mod.__doc__ or ""
    begin, end = "--- BEGIN docs/REGISTRY_PROTOCOL.md ---\n", "\n--- END docs/REGISTRY_PROTOCOL.md ---"
    assert begin in header and end in header
    assert header.split(begin, 1)[1].split(end, 1)[0] == doc


def test_synced_members_wait_for_the_snapshot_not_the_discover():
    """A registry a node has heard a ``discover`` from is a member at once, but its entries
    arrive with its ``sync``: ``synced_members``/``wait_synced`` report the members whose
    snapshot is in, which is what a reader of the whole mirror (the ``jobs`` table) waits for."""

    async def main():
        async with cluster("a", "b") as nodes:
            a, b = nodes
            assert await a.registry.wait_synced([b.name], 5.0)
            assert a.registry.synced_members() == sorted([a.name, b.name])
            # a registry on b that a has not heard from: its discover makes it b's registry in
            # a's eyes (the old one is forgotten), with no snapshot yet
            fake = Mailbox(b)
            fake.proc.send((A(REGISTRY_NAME), a.name), (TAG, 1, A("discover"), fake.pid))
            await wait_for(lambda: a.registry.server.peers.get(b.name, (None,))[0] == fake.pid, what="fake known")
            assert b.name in a.registry.members()
            assert a.registry.synced_members() == [a.name]
            assert not await a.registry.wait_synced([b.name], 0.2)
            assert a.registry.server._sync_waiters == []  # a waiter that timed out leaves nothing behind
            waiting = asyncio.ensure_future(a.registry.wait_synced(lambda: [b.name], 5.0))
            await asyncio.sleep(0)
            assert not waiting.done()
            fake.proc.send((A(REGISTRY_NAME), a.name), (TAG, 1, A("sync"), fake.pid, [(n("from_fake"), fake.pid, 7)], [b.name, A("ghost@localhost")]))
            assert await waiting
            assert a.registry.where(n("from_fake")) == fake.pid
            # the member it named that a has not heard from: claimed, not synced
            assert a.registry.claimed_members() == sorted([a.name, b.name, A("ghost@localhost")])
            assert not await a.registry.wait_synced(a.registry.claimed_members, 0.2)
            fake.stop.set()

    run(main)
