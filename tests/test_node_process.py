"""Processes across the wire: every way of addressing a message, links, monitors and exit
signals in both directions, checked against what an erl-erl pair does."""

from __future__ import annotations

import asyncio

import pytest

from erl_interop.terms import Reference
from pynode.core.process import Exit, Process, ReceiveTimeout

from node_helpers import A, beam, Mailbox, beam_wait, erl_recv, ev, py_node, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop


async def stash(beam, beam_pid, key: str, value, sender: Process) -> None:
    """Hand ``value`` to the BEAM eval process, which keeps it in its dictionary as ``key``."""
    sender.send(beam_pid, (A("$stash"), A(key), value))
    await ev(beam, f"receive {{'$stash', {key}, V}} -> put({key}, V), ok after 5000 -> error(no_stash) end.")


def test_send_to_pid_name_and_alias_both_ways(beam):
    erl = beam("erlang")

    async def main():
        async with py_node() as py:
            box = Mailbox(py, name="inbox")
            erl_pid = await ev(erl, "register(tinbox, self()), self().")
            # Python -> Erlang: pid, {name, node}, alias
            box.proc.send(erl_pid, A("to_pid"))
            assert await ev(erl, erl_recv()) == A("to_pid")
            box.proc.send((A("tinbox"), A(erl.name)), A("to_name"))
            assert await ev(erl, erl_recv()) == A("to_name")
            alias = await ev(erl, "A = alias(), put(alias, A), A.")
            assert type(alias) is Reference
            box.proc.send(alias, A("to_alias"))
            assert await ev(erl, erl_recv()) == A("to_alias")
            await ev(erl, "unalias(get(alias)).")
            box.proc.send(alias, A("dropped"))  # an inactive alias: dropped by the BEAM
            box.proc.send(erl_pid, A("marker"))
            assert await ev(erl, erl_recv()) == A("marker")
            assert await ev(erl, "process_info(self(), messages).") == (A("messages"), [])
            # Sending to a name that is not registered on the peer: silently dropped.
            box.proc.send((A("nobody"), A(erl.name)), A("lost"))
            # Erlang -> Python: pid, {name, node}, alias
            await stash(erl, erl_pid, "py", box.pid, box.proc)
            await ev(erl, "get(py) ! to_pid, ok.")
            assert await box.get() == A("to_pid")
            await ev(erl, f"{{inbox, '{py.name}'}} ! to_name, ok.")
            assert await box.get() == A("to_name")
            py_alias = box.proc.alias()
            await stash(erl, erl_pid, "pa", py_alias, box.proc)
            await ev(erl, "get(pa) ! to_alias, ok.")
            assert await box.get() == A("to_alias")
            box.proc.unalias(py_alias)
            await ev(erl, "get(pa) ! dropped, get(py) ! marker, ok.")
            assert await box.get() == A("marker")
            assert box.proc.message_queue_len == 0
            # Local sends on the Python node: pid, name, {name, node}, alias
            a2 = box.proc.alias()
            for dest in (box.pid, "inbox", ("inbox", py.name), a2):
                py.send(dest, ("local", str(dest)))
                assert await box.get() == ("local", str(dest))
            with pytest.raises(ValueError):
                py.send("nobody", 1)  # badarg, as `nobody ! 1`

    run(main)


# -- the same scenario against an erl peer and against the Python node ---------------------

# On the peer: a registered `factory` that makes target processes. A target obeys
# {die, R}, {forward_to, P} (then forwards every other message as {fwd, Self, M}),
# {link, P}, {unlink, P}.
ERL_FACTORY = """
Target = fun Tg(Fwd) -> receive
    {die, R} -> exit(R);
    {forward_to, P} -> Tg(P);
    {link, P} -> link(P), Tg(Fwd);
    {unlink, P} -> unlink(P), Tg(Fwd);
    M when is_pid(Fwd) -> Fwd ! {fwd, self(), M}, Tg(Fwd);
    _ -> Tg(Fwd) end end,
Fac = spawn(fun FL() -> receive {make, Name, Trap, From} ->
    spawn(fun() -> process_flag(trap_exit, Trap),
                   case Name of undefined -> ok; _ -> register(Name, self()) end,
                   From ! {made, self()}, Target(undefined) end),
    FL() end end),
register(factory, Fac), ok.
"""


def py_factory(node) -> None:
    async def target(proc: Process) -> None:
        fwd = None
        while True:
            m = await proc.receive()
            if type(m) is tuple and len(m) == 2 and m[0] == "die":
                raise Exit(m[1])
            if type(m) is tuple and len(m) == 2 and m[0] == "forward_to":
                fwd = m[1]
            elif type(m) is tuple and len(m) == 2 and m[0] == "link":
                proc.link(m[1])
            elif type(m) is tuple and len(m) == 2 and m[0] == "unlink":
                proc.unlink(m[1])
            elif fwd is not None:
                proc.send(fwd, (A("fwd"), proc.pid, m))

    async def factory(proc: Process) -> None:
        while True:
            _, name, trap, frm = await proc.receive()
            t = node.spawn(target, trap_exit=trap, name=None if name == "undefined" else name)
            proc.send(frm, (A("made"), t.pid))

    node.spawn(factory, name="factory")


# Run on the observer (an erl node) against the peer T: one result per case.
OBSERVER = """
fun() ->
Make = fun(Name, Trap) -> {factory, T} ! {make, Name, Trap, self()},
                          receive {made, P} -> P after 5000 -> error(no_target) end end,
Down = fun(Ref) -> receive {'DOWN', Ref, process, O, Re} -> {O, Re} after 5000 -> timeout end end,
process_flag(trap_exit, true),
P1 = Make(tgt1, false), R1 = monitor(process, {tgt1, T}), P1 ! {die, boom},
{O1, Re1} = Down(R1), S1 = {O1 =:= {tgt1, T}, Re1},
R2 = monitor(process, {nosuch, T}), {O2, Re2} = Down(R2), S2 = {O2 =:= {nosuch, T}, Re2},
R3 = monitor(process, P1), {O3, Re3} = Down(R3), S3 = {O3 =:= P1, Re3},
P4 = Make(undefined, false), link(P4), P4 ! {die, {shutdown, x}},
S4 = receive {'EXIT', P4, Re4} -> Re4 after 5000 -> timeout end,
link(P4), S5 = receive {'EXIT', P4, Re5} -> Re5 after 5000 -> timeout end,
P6 = Make(undefined, true), R6 = monitor(process, P6), exit(P6, kill), {_, S6} = Down(R6),
P7 = Make(undefined, false), R7 = monitor(process, P7), exit(P7, normal),
P7 ! {forward_to, self()}, P7 ! ping,
S7a = receive {fwd, P7, ping} -> alive after 5000 -> timeout end,
P7 ! {die, normal}, {_, S7b} = Down(R7),
P8 = Make(undefined, true), P8 ! {forward_to, self()}, exit(P8, foo),
S8 = receive {fwd, P8, {'EXIT', F8, Re8}} -> {F8 =:= self(), Re8} after 5000 -> timeout end,
P8b = Make(undefined, false), R8b = monitor(process, P8b), exit(P8b, foo), {_, S8b} = Down(R8b),
P9 = Make(undefined, false), R9 = monitor(process, P9),
W9 = spawn(fun() -> link(P9), receive {die, R} -> exit(R) end end), RW9 = monitor(process, W9),
W9 ! {die, normal}, Down(RW9), P9 ! {forward_to, self()}, P9 ! ping,
S9a = receive {fwd, P9, ping} -> alive after 5000 -> timeout end,
W9b = spawn(fun() -> link(P9), receive {die, R} -> exit(R) end end), W9b ! {die, boom},
{_, S9b} = Down(R9),
P10 = Make(undefined, false), link(P10), unlink(P10), R10 = monitor(process, P10), P10 ! {die, boom},
{_, S10} = Down(R10), S10b = receive {'EXIT', P10, _} = E10 -> E10 after 0 -> none end,
P11 = Make(undefined, true), P11 ! {forward_to, self()}, P11 ! {link, self()}, P11 ! {unlink, self()},
R11 = monitor(process, P11), P11 ! {die, boom}, {_, S11} = Down(R11),
S11b = receive {'EXIT', P11, _} = E11 -> E11 after 0 -> none end,
P12 = Make(undefined, true), P12 ! {forward_to, self()}, P12 ! {link, self()}, P12 ! ping,
receive {fwd, P12, ping} -> ok after 5000 -> error(no_fwd) end,
exit(normal_is_ignored_by_the_observer),
[S1, S2, S3, S4, S5, S6, {S7a, S7b}, S8, S8b, {S9a, S9b}, {S10, S10b}, {S11, S11b}]
end
"""

EXPECTED = [
    (True, A("boom")),
    (True, A("noproc")),
    (True, A("noproc")),
    (A("shutdown"), A("x")),
    A("noproc"),
    A("killed"),
    (A("alive"), A("normal")),
    (True, A("foo")),
    A("foo"),
    (A("alive"), A("boom")),
    (A("boom"), A("none")),
    (A("boom"), A("none")),
]


def observe(observer, peer_name: str) -> list:
    # The scenario runs in its own process (it traps exits) and reports back.
    src = OBSERVER.strip().replace("exit(normal_is_ignored_by_the_observer),", "")
    return observer.eval(
        f"T = '{peer_name}', Self = self(), F = {src}, "
        "spawn(fun() -> Self ! {scenario, F()} end), "
        "receive {scenario, Res} -> Res after 60000 -> timeout end.",
        timeout=70,
    )


def test_links_monitors_exits_erl_observes_python_like_erl(beam):
    """An erl node runs the same link/monitor/exit scenario against an erl peer and against
    the Python node: the results must be identical."""
    observer = beam("erlang")
    peer = beam("erlang")
    peer.eval(ERL_FACTORY)
    assert observe(observer, peer.name) == EXPECTED

    async def main():
        async with py_node() as py:
            py_factory(py)
            assert await asyncio.to_thread(observe, observer, str(py.name)) == EXPECTED
            # Only what is alive on an erl peer too: built-ins (3), the factory and the two
            # trapping targets (P8, P12) that got their exit signals as messages.
            # Left alive, as on an erl peer: the two trapping targets (P8, P12) that got
            # their exit signals as messages; every other target is gone.
            await wait_for(lambda: len([p for p in py.processes if p.name is None]) == 2,
                           what=f"dead targets gone: {py.processes}")
            assert all(p.trap_exit for p in py.processes if p.name is None)

    run(main)


async def py_observe(py, T) -> list:
    """The OBSERVER scenario written with the Python API, run by a Python process against
    the factory on node ``T`` (a BEAM node, another Python node, or ``py`` itself)."""
    T = A(T)
    results: list = []

    async def scenario(me: Process) -> None:
        async def make(name, trap):
            me.send((A("factory"), T), (A("make"), A(name), trap, me.pid))
            return (await me.receive(lambda m: type(m) is tuple and m[0] == "made", 5))[1]

        async def down(ref):
            m = await me.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref, 5)
            assert m[2] == "process"
            return m[3], m[4]

        async def fwd(p, what):
            m = await me.receive(lambda m: type(m) is tuple and m[0] == "fwd" and m[1] == p, 5)
            assert m[2] == what or what is None
            return m[2]

        def exit_msg(p, timeout=5):
            return me.receive(lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == p, timeout)

        p1 = await make("tgt1", False)
        r1 = me.monitor(("tgt1", T))
        me.send(p1, (A("die"), A("boom")))
        o, re = await down(r1)
        results.append((o == (A("tgt1"), T), re))
        r2 = me.monitor(("nosuch", T))
        o, re = await down(r2)
        results.append((o == (A("nosuch"), T), re))
        r3 = me.monitor(p1)
        o, re = await down(r3)
        results.append((o == p1, re))
        p4 = await make("undefined", False)
        me.link(p4)
        me.send(p4, (A("die"), (A("shutdown"), A("x"))))
        results.append((await exit_msg(p4))[2])
        me.link(p4)
        results.append((await exit_msg(p4))[2])
        p6 = await make("undefined", True)
        r6 = me.monitor(p6)
        me.exit(p6, A("kill"))
        results.append((await down(r6))[1])
        p7 = await make("undefined", False)
        r7 = me.monitor(p7)
        me.exit(p7, A("normal"))
        me.send(p7, (A("forward_to"), me.pid))
        me.send(p7, A("ping"))
        await fwd(p7, A("ping"))
        me.send(p7, (A("die"), A("normal")))
        results.append((A("alive"), (await down(r7))[1]))
        p8 = await make("undefined", True)
        me.send(p8, (A("forward_to"), me.pid))
        me.exit(p8, A("foo"))
        m = await fwd(p8, None)
        results.append((m[0] == "EXIT" and m[1] == me.pid, m[2]))
        p8b = await make("undefined", False)
        r8b = me.monitor(p8b)
        me.exit(p8b, A("foo"))
        results.append((await down(r8b))[1])
        # 9: a local (Python) process linked to the remote target dies normal, then boom
        p9 = await make("undefined", False)
        r9 = me.monitor(p9)

        async def linker(w: Process, reason) -> None:
            w.link(p9)
            raise Exit(reason)

        w = py.spawn(linker, A("normal"))
        rw = me.monitor(w.pid)
        await down(rw)
        me.send(p9, (A("forward_to"), me.pid))
        me.send(p9, A("ping"))
        await fwd(p9, A("ping"))
        py.spawn(linker, A("boom"))
        results.append((A("alive"), (await down(r9))[1]))
        # 10: link, unlink (UNLINK_ID), the peer dies: no exit signal
        p10 = await make("undefined", False)
        me.link(p10)
        me.unlink(p10)
        r10 = me.monitor(p10)
        me.send(p10, (A("die"), A("boom")))
        re = (await down(r10))[1]
        try:
            e = await exit_msg(p10, 0)
        except ReceiveTimeout:
            e = A("none")
        results.append((re, e))
        # 11: the remote side links and unlinks; then it dies: no exit signal
        p11 = await make("undefined", True)
        me.send(p11, (A("link"), me.pid))
        me.send(p11, (A("unlink"), me.pid))
        r11 = me.monitor(p11)
        me.send(p11, (A("die"), A("boom")))
        re = (await down(r11))[1]
        try:
            e = await exit_msg(p11, 0)
        except ReceiveTimeout:
            e = A("none")
        results.append((re, e))


    s = py.spawn(scenario, trap_exit=True)
    await asyncio.wait_for(asyncio.shield(s.task), 30)
    assert s.exit_reason == A("normal"), s.exit_reason
    return results


def test_links_monitors_exits_python_observes_erl(beam):
    """The same scenario with the Python node as the observer of an erl peer."""
    erl = beam("erlang")
    erl.eval(ERL_FACTORY)

    async def main():
        async with py_node() as py:
            assert await py_observe(py, erl.name) == EXPECTED
            # the peer has nothing left linked to or monitoring anything of ours
            assert await ev(erl, "length(processes()) < 100.") is True

    run(main)


def test_links_monitors_exits_python_local_and_py_py():
    """Erlang semantics inside one Python node, and between two Python nodes."""

    async def main():
        async with py_node() as py, py_node(prefix="other") as other:
            py_factory(py)
            py_factory(other)
            assert await py_observe(py, py.name) == EXPECTED
            assert await py_observe(py, other.name) == EXPECTED
            assert await py_observe(other, py.name) == EXPECTED

    run(main)


def test_noconnection_both_ways(beam):
    """The peer node dies: links and monitors held here fire with noconnection; the Python
    node stops: the BEAM side gets noconnection (as when an erl node halts)."""
    erl = beam("erlang")
    erl2 = beam("erlang")

    async def main():
        async with py_node() as py:
            erl_pid = await ev(erl, "self().")
            nlinks = await ev(erl, "{links, L} = process_info(self(), links), length(L).")
            trapper = Mailbox(py, trap_exit=True)
            plain = Mailbox(py)
            watcher = Mailbox(py)
            trapper.proc.link(erl_pid)
            plain.proc.link(erl_pid)
            await ev(erl, "register(tgt, self()).")
            r1 = watcher.proc.monitor(erl_pid)
            r2 = watcher.proc.monitor(("tgt", erl.name))
            await beam_wait(erl, "{links, L} = process_info(self(), links), length(L).", nlinks + 2)
            await beam_wait(erl, "{monitored_by, L} = process_info(self(), monitored_by), length(L).", 2)
            erl.kill()
            assert await trapper.get() == (A("EXIT"), erl_pid, A("noconnection"))
            await wait_for(lambda: not plain.proc.alive, what="plain linked process killed")
            assert plain.proc.exit_reason == A("noconnection")
            got = {await watcher.get(), await watcher.get()}
            assert got == {
                (A("DOWN"), r1, A("process"), erl_pid, A("noconnection")),
                (A("DOWN"), r2, A("process"), (A("tgt"), A(erl.name)), A("noconnection")),
            }
            # Now the other way: erl2 links to and monitors Python processes; the Python node stops.
            box = Mailbox(py, name="inbox")
            e2 = await ev(erl2, "self().")
            await stash(erl2, e2, "py", box.pid, box.proc)
            await ev(erl2, f"process_flag(trap_exit, true), link(get(py)), put(r1, monitor(process, get(py))),"
                           f" put(r2, monitor(process, {{inbox, '{py.name}'}})), ok.")
            await wait_for(lambda: len(box.proc.monitored_by) == 2 and e2 in box.proc.links, what="erl2 watching")
            await ev(erl2, "ok = net_kernel:monitor_nodes(true, [{node_type, hidden}]).")
            await py.stop()
            got = await ev(erl2, "[receive M -> M after 3000 -> timeout end || _ <- [1,2,3,4]].")
            py_name = py.name
            assert (A("EXIT"), box.pid, A("noconnection")) in got
            assert (A("nodedown"), py_name, [(A("node_type"), A("hidden"))]) in got
            downs = [m for m in got if m[0] == "DOWN"]
            assert sorted(d[3] == box.pid for d in downs) == [False, True]
            assert all(d[4] == A("noconnection") for d in downs)
            assert (A("inbox"), py_name) in [d[3] for d in downs]

    run(main)
