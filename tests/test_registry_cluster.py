"""The registry in real mixed clusters: Elixir nodes running the mix_compat project
(``Pynode.Registry``) and Python nodes (``pynode.registry``) in one cluster.

Covered: registrations (names, properties, values, send, await, unreg) made in either
language are visible on every node; late joiners (Python and Elixir) get the snapshot and
join the full mesh through member lists; process death, graceful stop, ``kill -9`` of an
Elixir node and a stopped Python node purge entries everywhere; concurrent registration of
the same names from three nodes converges on the node-name rule; a partition made and healed
converges. Every wait is on a condition (Python mirrors are polled in the loop, Elixir ones
by evaluating on the node), never a bare sleep. Node names are unique per test; their
prefixes fix their order (``a`` < ``b`` < ``c`` < ``d``), which the conflict rule uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from erl_interop.terms import Atom, Pid
from pynode.node import Node
from pynode.testing import BeamNode, compile_mix_project, unique_name, test_cookie

from node_helpers import A, Mailbox, ev, run, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MIX_PROJECT = str(Path(__file__).resolve().parents[1] / "mix_compat")
UNDEF = A("undefined")
OK = A("ok")


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mix_compiled() -> str:
    """``mix compile`` once per session (serialized across xdist workers)."""
    return compile_mix_project(MIX_PROJECT)


@pytest.fixture
def elixir_nodes(beam_node: Callable[..., BeamNode], mix_compiled: str) -> Callable[..., list[BeamNode]]:
    """``elixir_nodes("b", "d")`` starts one mix_compat node per prefix, in parallel."""

    def start(*prefixes: str, discovery: bool = True) -> list[BeamNode]:
        # discovery=False: a partition made by hand stays made until the test heals it
        args = [] if discovery else ["-pynode", "discovery", "false"]

        def one(prefix: str) -> BeamNode:
            return beam_node("elixir", name=unique_name(prefix) + "@localhost", mix_project=mix_compiled, args=args)

        with ThreadPoolExecutor(len(prefixes)) as pool:
            return list(pool.map(one, prefixes))

    return start


# -- helpers ----------------------------------------------------------------------------------
def k(name: str, kind: str = "n") -> tuple[Atom, Atom, bytes]:
    """The Python form of ``{kind, g, <<name>>}``."""
    return (A(kind), A("g"), name.encode())


def exk(name: str, kind: str = "n") -> str:
    """The Elixir source of the same key."""
    return f'{{:{kind}, :g, "{name}"}}'


@contextlib.asynccontextmanager
async def py_nodes(*prefixes: str, discovery: bool = True) -> AsyncIterator[list[Node]]:
    nodes: list[Node] = []
    try:
        for pre in prefixes:
            cfg = {} if discovery else {"discovery": False}
            nodes.append(await Node(unique_name(pre) + "@localhost", test_cookie(), config=cfg).start())
        yield nodes
    finally:
        for nd in nodes:
            await nd.stop()


async def ex_until(beam: BeamNode, src: str, pred: Callable[[Any], bool], what: str, timeout: float = 15.0) -> Any:
    """Evaluate ``src`` on ``beam`` until ``pred(result)``; return the result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await ev(beam, src)
        if pred(v):
            return v
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting on {beam.name} for {what}; last value {v!r}")
        await asyncio.sleep(0.02)


async def all_members(py: list[Node], ex: list[BeamNode], timeout: float = 20.0) -> None:
    """Wait until every node's ``members()`` is the whole cluster."""
    want = sorted([nd.name for nd in py] + [A(b.name) for b in ex])
    await wait_for(lambda: all(nd.registry.members() == want for nd in py), timeout, f"python members == {want}")
    for b in ex:
        await ex_until(b, "Pynode.Registry.members()", lambda v: v == want, f"members == {want}", timeout)


async def everywhere(py: list[Node], ex: list[BeamNode], py_fn: str, key: tuple[Any, ...], ex_key: str,
                     expected: Any, what: str, timeout: float = 15.0) -> None:
    """Wait until ``Registry.<py_fn>(key)`` is ``expected`` on every node, both languages."""
    def norm(v: Any) -> Any:
        return sorted(v, key=repr) if py_fn in ("lookup_pids", "lookup_values") else v

    want = norm(expected)
    try:
        await wait_for(lambda: all(norm(getattr(nd.registry, py_fn)(key)) == want for nd in py), timeout,
                       f"{what} on Python nodes")
    except TimeoutError:
        got = {nd.name: getattr(nd.registry, py_fn)(key) for nd in py}
        raise TimeoutError(f"{what}: wanted {want!r} on every Python node, have {got!r}") from None
    for b in ex:
        await ex_until(b, f"Pynode.Registry.{py_fn}({ex_key})", lambda v: norm(v) == want, what, timeout)


_EX_HOLDER = """
parent = self()
pid = spawn(fn ->
  Process.flag(:trap_exit, true)
  results = for k <- KEYS, do: Pynode.Registry.reg(k, VALUE)
  send(parent, {:holder_reg, self(), results})
  loop = fn loop ->
    receive do
      :stop -> :ok
      {:EXIT, from, reason} -> send(parent, {:holder_exit, self(), from, reason}); loop.(loop)
      {:do_unreg, k} -> send(parent, {:holder_unreg, self(), Pynode.Registry.unreg(k)}); loop.(loop)
      other -> send(parent, {:holder_got, self(), other}); loop.(loop)
    end
  end
  loop.(loop)
end)
receive do {:holder_reg, ^pid, r} -> {pid, r} after 10_000 -> :timeout end
"""


async def ex_holder(beam: BeamNode, keys_src: str, value_src: str = ":undefined") -> tuple[Pid, list[Any]]:
    """Spawn a long-lived, exit-trapping process on ``beam`` that registers every key of the
    Elixir list ``keys_src``; return its pid and the ``reg`` results. What it receives is
    forwarded to the eval process as ``{:holder_got | :holder_exit | :holder_unreg, Pid, ...}``."""
    r = await ev(beam, _EX_HOLDER.replace("KEYS", keys_src).replace("VALUE", value_src))
    assert r != A("timeout"), beam.tail()
    return r


async def ex_forwarded(beam: BeamNode, tag: str, pid: Pid, timeout_ms: int = 10_000) -> Any:
    """The next ``{tag, Pid, ...}`` the holder ``pid`` on ``beam`` forwarded (``:timeout`` if none)."""
    return await ev(
        beam,
        f"p = :erlang.list_to_pid('{_pid_text(pid)}'); "
        f"receive do m when elem(m, 0) == :{tag} and elem(m, 1) == p -> m after {timeout_ms} -> :timeout end",
    )


def _pid_text(pid: Pid) -> str:
    # Only for local pids of the node evaluating it: <0.Id.Serial>.
    return f"<0.{pid.id}.{pid.serial}>"


def ex_stop_holder(pid: Pid) -> str:
    return f"send(:erlang.list_to_pid('{_pid_text(pid)}'), :stop)"


# -- tests ------------------------------------------------------------------------------------
def test_registrations_visible_everywhere_from_both_languages(elixir_nodes):
    e1, e2 = elixir_nodes("b", "d")

    async def main():
        async with py_nodes("a", "c") as py:
            p1, p2 = py
            # Each Python node knows one Elixir node; the member lists do the rest.
            assert await p1.ping(e1.name) == A("pong")
            assert await p2.ping(e2.name) == A("pong")
            await ev(e1, f"Node.connect(:'{e2.name}')")
            ex = [e1, e2]
            await all_members(py, ex)
            assert sorted(p1.connected_nodes) == sorted([p2.name, A(e1.name), A(e2.name)])

            # A name from Python, a name from Elixir, a property held on every node.
            hp = Mailbox(p1)
            assert await p1.registry.reg(hp.proc, k("from_py"), 1) == OK
            he, res = await ex_holder(e2, f'[{exk("from_ex")}, {exk("shared", "p")}]', "%{port: 80}")
            assert res == [OK, OK]
            hp2 = Mailbox(p2)
            assert await p2.registry.reg(hp2.proc, k("shared", "p"), A("on_p2")) == OK
            he1, res = await ex_holder(e1, f'[{exk("shared", "p")}]', ":on_e1")
            assert res == [OK]
            await everywhere(py, ex, "lookup_values", k("from_py"), exk("from_py"), [(hp.pid, 1)], "from_py")
            await everywhere(py, ex, "where", k("from_ex"), exk("from_ex"), he, "from_ex")
            await everywhere(py, ex, "lookup_values", k("from_ex"), exk("from_ex"), [(he, {A("port"): 80})], "value")
            shared = [(he, {A("port"): 80}), (hp2.pid, A("on_p2")), (he1, A("on_e1"))]
            await everywhere(py, ex, "lookup_values", k("shared", "p"), exk("shared", "p"), shared, "property")

            # Names are unique across languages.
            r = await ev(e1, f"Pynode.Registry.reg({exk('from_py')})")
            assert r == (A("error"), (A("already_registered"), hp.pid))
            assert await p2.registry.reg(hp2.proc, k("from_ex")) == (A("error"), (A("already_registered"), he))
            # A value update from Python reaches Elixir.
            assert await p1.registry.reg(hp.proc, k("from_py"), (A("v"), 2)) == OK
            await everywhere(py, ex, "lookup_values", k("from_py"), exk("from_py"), [(hp.pid, (A("v"), 2))], "update")

            # send by name, both directions.
            assert await ev(e1, f"Pynode.Registry.send({exk('from_py')}, {{:hello, :from_elixir}})") == (
                A("hello"), A("from_elixir"))
            assert await hp.get() == (A("hello"), A("from_elixir"))
            p2.registry.send(k("from_ex"), (A("hello"), A("from_python")))
            assert await ex_forwarded(e2, "holder_got", he) == (
                A("holder_got"), he, (A("hello"), A("from_python")))

            # await, both directions: each waits for a name the other language registers later.
            ex_wait = asyncio.ensure_future(ev(e1, f"Pynode.Registry.await({exk('later_py')}, 10_000)"))
            py_wait = asyncio.ensure_future(p1.registry.await_(k("later_ex"), 10.0))
            await asyncio.sleep(0)
            assert not py_wait.done()
            hl = Mailbox(p2)
            assert await p2.registry.reg(hl.proc, k("later_py"), A("here")) == OK
            hle, res = await ex_holder(e2, f"[{exk('later_ex')}]", ":there")
            assert await ex_wait == (hl.pid, A("here"))
            assert await py_wait == (hle, A("there"))
            assert await ev(e1, f"Pynode.Registry.await({exk('never')}, 50)") == (A("error"), A("timeout"))

            # unreg from both languages.
            assert await p1.registry.unreg(hp.proc, k("from_py")) == OK
            await ev(e2, f"send(:erlang.list_to_pid('{_pid_text(he)}'), {{:do_unreg, {exk('from_ex')}}})")
            assert await ex_forwarded(e2, "holder_unreg", he) == (A("holder_unreg"), he, OK)
            await everywhere(py, ex, "where", k("from_py"), exk("from_py"), UNDEF, "py unreg")
            await everywhere(py, ex, "where", k("from_ex"), exk("from_ex"), UNDEF, "ex unreg")
            await everywhere(py, ex, "lookup_pids", k("shared", "p"), exk("shared", "p"), [he, hp2.pid, he1], "props kept")

    run(main, timeout=120)


def test_late_joiners_get_the_snapshot(elixir_nodes):
    (e1,) = elixir_nodes("b")

    async def main():
        async with py_nodes("a") as (p1,):
            assert await p1.ping(e1.name) == A("pong")
            await all_members([p1], [e1])
            h = Mailbox(p1)
            assert await p1.registry.reg(h.proc, k("early_py"), 1) == OK
            assert await p1.registry.reg(h.proc, k("early", "p"), 1) == OK
            he, res = await ex_holder(e1, f"[{exk('early_ex')}, {exk('early', 'p')}]", "2")
            assert res == [OK, OK]
            await wait_for(lambda: p1.registry.where(k("early_ex")) == he, what="early_ex on p1")

            # A late Python node that only knows the Elixir node, and a late Elixir node that
            # only knows the (hidden) Python node: both end up in the full mesh with the snapshot.
            async with py_nodes("c") as (p2,):
                (e2,) = await asyncio.to_thread(elixir_nodes, "d")
                assert await p2.ping(e1.name) == A("pong")
                assert await ev(e2, f"Node.connect(:'{p1.name}')") is True
                py, ex = [p1, p2], [e1, e2]
                await all_members(py, ex)
                for late_py in (p2,):
                    assert late_py.registry.where(k("early_py")) == h.pid
                    assert late_py.registry.lookup_values(k("early_ex")) == [(he, 2)]
                    assert sorted(late_py.registry.lookup_pids(k("early", "p")), key=repr) == sorted([h.pid, he], key=repr)
                assert await ev(e2, f"Pynode.Registry.where({exk('early_py')})") == h.pid
                assert await ev(e2, f"Pynode.Registry.lookup_values({exk('early_ex')})") == [(he, 2)]
                assert sorted(await ev(e2, f"Pynode.Registry.lookup_pids({exk('early', 'p')})"), key=repr) == sorted(
                    [h.pid, he], key=repr)
                # The late nodes are connected to every other member.
                assert A(e2.name) in p2.connected_nodes
                assert sorted(await ev(e2, "Node.list(:connected)")) == sorted([p1.name, p2.name, A(e1.name)])

    run(main, timeout=120)


def test_process_and_node_death_purge_everywhere(elixir_nodes):
    e1, e2 = elixir_nodes("b", "d")

    async def main():
        async with py_nodes("a", "c") as py:
            p1, p2 = py
            assert await p1.ping(e1.name) == A("pong")
            assert await p2.ping(e1.name) == A("pong")
            await ev(e2, f"Node.connect(:'{e1.name}')")
            ex = [e1, e2]
            await all_members(py, ex)

            held: dict[str, Pid] = {}
            for nd in py:
                for label in ("long", "short"):
                    box = Mailbox(nd)
                    assert await nd.registry.reg(box.proc, k(f"{label}_{nd.name}")) == OK
                    assert await nd.registry.reg(box.proc, k("everyone", "p"), A(label)) == OK
                    held[f"{label}_{nd.name}"] = box.pid
            for b in ex:
                for label in ("long", "short"):
                    pid, res = await ex_holder(b, f"[{exk(f'{label}_{b.name}')}, {exk('everyone', 'p')}]")
                    assert res == [OK, OK]
                    held[f"{label}_{b.name}"] = pid
            everyone = sorted(held.values(), key=repr)
            await everywhere(py, ex, "lookup_pids", k("everyone", "p"), exk("everyone", "p"), everyone, "all 8")

            # Process death, on each side.
            p1_short = held[f"short_{p1.name}"]
            p1.process(p1_short).kill(A("shutdown"))
            await ev(e1, ex_stop_holder(held[f"short_{e1.name}"]))
            for name in (f"short_{p1.name}", f"short_{e1.name}"):
                await everywhere(py, ex, "where", k(name), exk(name), UNDEF, f"{name} purged")
                everyone.remove(held.pop(name))
            await everywhere(py, ex, "lookup_pids", k("everyone", "p"), exk("everyone", "p"), everyone, "6 left")

            async def gone(node_name: str, nodes_py: list[Node], nodes_ex: list[BeamNode]) -> None:
                for name in [n for n in held if n.endswith(node_name)]:
                    await everywhere(nodes_py, nodes_ex, "where", k(name), exk(name), UNDEF, f"{name} purged")
                    everyone.remove(held.pop(name))
                await everywhere(nodes_py, nodes_ex, "lookup_pids", k("everyone", "p"), exk("everyone", "p"),
                                 everyone, f"{node_name}'s property entries purged")
                await all_members(nodes_py, nodes_ex)

            # kill -9 of an Elixir node.
            e2.kill()
            await gone(e2.name, py, [e1])
            # A Python node stopped.
            await p2.stop()
            await gone(str(p2.name), [p1], [e1])
            # Graceful stop of an Elixir node.
            assert e1.stop() == 0
            await gone(e1.name, [p1], [])
            assert p1.registry.members() == [p1.name]

    run(main, timeout=120)


_EX_CONCURRENT = """
parent = self()
Process.sleep(max(0, AT - System.system_time(:millisecond)))
for i <- 0..(N - 1) do
  spawn(fn ->
    Process.flag(:trap_exit, true)
    r = Pynode.Registry.reg({:n, :g, "PREFIX#{i}"}, node())
    send(parent, {:conc_res, i, self(), r})
    receive do
      {:EXIT, from, reason} -> send(parent, {:conc_exit, i, self(), from, reason}); receive do :stop -> :ok end
      :stop -> :ok
    end
  end)
end
for i <- 0..(N - 1) do
  receive do {:conc_res, ^i, pid, r} -> {pid, r} after 20_000 -> :timeout end
end
"""

_EX_CONCURRENT_EXITS = """
for _ <- 1..COUNT do
  receive do {:conc_exit, i, pid, from, reason} -> {i, pid, from, reason} after 10_000 -> :timeout end
end
"""


async def _concurrent_round(prefix: str, n: int, py_regs: list[Node], ex_regs: list[BeamNode],
                            py: list[Node], ex: list[BeamNode]) -> int:
    """Register ``prefix0..prefix{n-1}`` at once from every node of ``py_regs``/``ex_regs``
    and check convergence on the node-name rule everywhere."""
    boxes = {nd.name: [Mailbox(nd, trap_exit=True) for _ in range(n)] for nd in py_regs}
    # Everyone starts at one wall-clock instant (not a wait for a condition: it makes the
    # registrations overlap, so that the same names really are claimed concurrently).
    at = time.time() + 1.5  # room for the Elixir evals to be parsed and started under load

    async def py_side(nd: Node) -> list[tuple[Pid, Any]]:
        await asyncio.sleep(max(0.0, at - time.time()))
        res = await asyncio.gather(*(nd.registry.reg(b.proc, k(f"{prefix}{i}"), nd.name) for i, b in enumerate(boxes[nd.name])))
        return [(b.pid, r) for b, r in zip(boxes[nd.name], res)]

    src = _EX_CONCURRENT.replace("PREFIX", prefix).replace("N - 1", str(n - 1)).replace("AT", str(int(at * 1000)))
    results = await asyncio.gather(*(py_side(nd) for nd in py_regs), *(ev(b, src, timeout=60) for b in ex_regs))
    # Successful registrations per name, and the expected winner: smallest node name.
    won: list[list[Pid]] = [[] for _ in range(n)]
    for per_node in results:
        assert A("timeout") not in per_node
        for i, (pid, r) in enumerate(per_node):
            if r == OK:
                won[i].append(pid)
            else:
                assert r[0] == A("error") and r[1][0] == A("already_registered"), r
    assert all(won), "every name was registered by someone"
    expected = [min(pids, key=lambda p: p.node.encode()) for pids in won]
    conflicts = sum(len(w) > 1 for w in won)

    want = [[w] for w in expected]
    await wait_for(lambda: all([nd.registry.lookup_pids(k(f"{prefix}{i}")) for i in range(n)] == want for nd in py),
                   20, f"{prefix}: one holder per name on every Python node")
    for b in ex:
        await ex_until(b, f'for i <- 0..{n - 1}, do: Pynode.Registry.lookup_pids({{:n, :g, "{prefix}#{{i}}"}})',
                       lambda v: v == want, f"{prefix}: one holder per name", 20)

    # Every loser got the exit signal {name_conflict, Key, Winner} from its own registry.
    # Winner is the holder that beat it when its registry saw the conflict: the final winner,
    # or an intermediate one that lost to the final winner in turn (both on smaller nodes).
    def beat(i: int, loser: Pid, reason: Any) -> bool:
        return (type(reason) is tuple and len(reason) == 3 and reason[:2] == (A("name_conflict"), k(f"{prefix}{i}"))
                and reason[2] in won[i] and reason[2].node.encode() < loser.node.encode())

    losers = {pid: i for i in range(n) for pid in won[i] if pid != expected[i]}
    assert len(losers) >= conflicts
    for nd in py_regs:
        for i, b in enumerate(boxes[nd.name]):
            if b.pid in losers:
                msg = await b.get(timeout=10)
                assert msg[:2] == (A("EXIT"), nd.registry.pid) and beat(i, b.pid, msg[2]), msg
    for b in ex_regs:
        mine = [pid for pid in losers if pid.node == b.name]
        if not mine:
            continue
        got = await ev(b, _EX_CONCURRENT_EXITS.replace("COUNT", str(len(mine))), timeout=60)
        assert A("timeout") not in got
        reg_pid = await ev(b, "Process.whereis(:pynode_registry)")
        assert sorted((pid for _i, pid, _f, _r in got), key=repr) == sorted(mine, key=repr)
        for i, pid, frm, reason in got:
            assert frm == reg_pid
            assert beat(i, pid, reason), reason
    print(f"{prefix}: {conflicts} of {n} names were claimed by more than one node")
    return conflicts


def test_concurrent_registration_converges_on_the_node_name_rule(elixir_nodes):
    e1, e2 = elixir_nodes("b", "d")

    async def main():
        async with py_nodes("a", "c") as py:
            p1, p2 = py
            for nd in py:
                assert await nd.ping(e1.name) == A("pong")
            await ev(e2, f"Node.connect(:'{e1.name}')")
            ex = [e1, e2]
            await all_members(py, ex)
            # 3 nodes x 100 names, the smallest of them Elixir (b) ...
            c1 = await _concurrent_round("r1_", 100, [p2], [e1, e2], py, ex)
            # ... and again with a Python node (a) the smallest.
            c2 = await _concurrent_round("r2_", 100, [p1], [e1, e2], py, ex)
            assert c1 + c2 > 0, "the rounds must actually overlap"

    run(main, timeout=240)


def test_partition_and_heal_converges(elixir_nodes):
    # Discovery off: it would heal the hand-made split within a poll (5 s) while the two
    # sides are still registering; the test heals it itself (tests/test_partition.py covers
    # a real partition that discovery heals).
    e1, e2 = elixir_nodes("b", "d", discovery=False)

    async def main():
        async with py_nodes("a", "c", discovery=False) as py:
            p1, p2 = py
            for e in (e1, e2):
                assert await ev(e, "Application.get_env(:pynode, :discovery)") is False
            for nd in py:
                assert await nd.ping(e1.name) == A("pong")
            await ev(e2, f"Node.connect(:'{e1.name}')")
            ex = [e1, e2]
            await all_members(py, ex)

            # Split {p1 (a), e1 (b)} | {p2 (c), e2 (d)}: the BEAM side with disconnect_node,
            # the Python side by closing its links.
            assert await ev(e1, f"for n <- [:'{e2.name}', :'{p2.name}'], do: :erlang.disconnect_node(n)") == [True, True]
            for peer in (A(e2.name), p2.name):
                c = p1.dist.conns.get(peer)
                if c is not None:
                    c.close()
            left = sorted([p1.name, A(e1.name)])
            right = sorted([p2.name, A(e2.name)])
            await wait_for(lambda: p1.registry.members() == left and p2.registry.members() == right, 15, "split")
            await ex_until(e1, "Pynode.Registry.members()", lambda v: v == left, "split on e1")
            await ex_until(e2, "Pynode.Registry.members()", lambda v: v == right, "split on e2")

            # Both sides register the same names (and a property), each side on both languages.
            names = [f"split{i}" for i in range(20)]
            py_names = [nm for i, nm in enumerate(names) if i % 2 == 0]
            ex_names = [nm for i, nm in enumerate(names) if i % 2 == 1]
            keys_src = "[" + ", ".join([exk(nm) for nm in ex_names] + [exk("split", "p")]) + "]"
            holders: dict[str, dict[str, Pid]] = {"left": {}, "right": {}}
            for side, pnode, enode in (("left", p1, e1), ("right", p2, e2)):
                for nm in py_names:
                    box = Mailbox(pnode, trap_exit=True)
                    assert await pnode.registry.reg(box.proc, k(nm), A(side)) == OK
                    holders[side][nm] = box.pid
                pid, res = await ex_holder(enode, keys_src, f":{side}")
                assert res == [OK] * (len(ex_names) + 1)
                for nm in ex_names:
                    holders[side][nm] = pid
                holders[side]["prop"] = pid

            # Heal: p2 reaches e1; the member lists reconnect everything else.
            assert await p2.ping(e1.name) == A("pong")
            await all_members(py, ex, timeout=30)
            # The left side's nodes (a, b) are smaller than the right side's (c, d): left wins.
            for nm in names:
                await everywhere(py, ex, "lookup_values", k(nm), exk(nm), [(holders["left"][nm], A("left"))], nm)
            await everywhere(py, ex, "lookup_pids", k("split", "p"), exk("split", "p"),
                             [holders["left"]["prop"], holders["right"]["prop"]], "properties merged")
            # The losers were told.
            for nm in py_names:
                box = p2.process(holders["right"][nm])
                assert box is not None and box.alive  # it traps exits
                msg = await box.receive(timeout=10)
                assert msg == (A("EXIT"), p2.registry.pid, (A("name_conflict"), k(nm), holders["left"][nm]))
            exits = await ev(e2, "for _ <- 1..%d do receive do m when elem(m, 0) == :holder_exit -> m after 10_000 -> :timeout end end"
                             % len(ex_names), timeout=60)
            assert sorted(exits, key=repr) == sorted(
                [(A("holder_exit"), holders["right"][nm], await ev(e2, "Process.whereis(:pynode_registry)"),
                  (A("name_conflict"), k(nm), holders["left"][nm])) for nm in ex_names], key=repr)

    run(main, timeout=180)
