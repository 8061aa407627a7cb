"""Built-ins against real BEAM peers: ping (and wrong cookies), rpc/erpc/rex into exposed
functions with errors shaped as the BEAM shapes them, rpc out of Python, pynode:info."""

from __future__ import annotations

import asyncio
import logging

import pytest

from erl_interop.terms import Pid
from pynode.errors import ErlangError, RpcError, Throw
from pynode.core.process import Exit, Process
from pynode.otp.rpc import erpc_call, rpc_call
from pynode.testing import beam_program, test_cookie

from node_helpers import A, beam, ev, py_node, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop


def test_ping_both_ways_and_wrong_cookie(beam, caplog):
    erl = beam("erlang")
    ex = beam("elixir")
    bad = beam("erlang", cookie="not-the-cookie")

    async def main():
        async with py_node() as py:
            caplog.set_level(logging.WARNING, logger="pynode")
            assert await ev(erl, f"net_adm:ping('{py.name}').") == A("pong")
            assert await ev(ex, f"Node.ping(:'{py.name}')") == A("pong")
            assert await py.ping(erl.name) == A("pong")
            assert await py.ping(ex.name) == A("pong")
            # wrong cookie: pang on the BEAM side and a logged refusal here
            assert await ev(bad, f"net_adm:ping('{py.name}').") == A("pang")
            await wait_for(lambda: any("refused" in r.getMessage() and bad.name in r.getMessage() for r in caplog.records),
                           what="logged refusal")
            assert A(bad.name) not in py.connected_nodes
            # and a Python node with the wrong cookie gets pang from the BEAM
            assert await py.ping(bad.name) == A("pang")
            assert await py.ping("nonode@localhost") == A("pang")

    run(main)


def expose_all(py):
    calls = []
    py.expose("erlang", "error", lambda r: (_ for _ in ()).throw(ErlangError(r)))

    def do_exit(r):
        raise Exit(r)

    def do_throw(t):
        raise Throw(t)

    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    def crash():
        raise ValueError("bad value")

    py.expose("erlang", "exit", do_exit)
    py.expose("erlang", "throw", do_throw)
    py.expose("erlang", "node", lambda: py.name)
    py.expose("lists", "sum", lambda xs: sum(xs))
    py.expose("math", "add", add)
    py.expose("t", "crash", crash)
    py.expose("t", "record", lambda x: calls.append(x))
    return calls


# Run on an erl node against target node N: the same calls against an erl peer and a Python
# peer must give the same results (stacks of the BEAM's own error/1 differ, so they are
# normalised to 'stack').
RPC_CASES = """
Norm = fun({badrpc, {'EXIT', {R, S}}}) when is_list(S), R =/= undef -> {badrpc, {'EXIT', {R, stack}}};
          (X) -> X end,
E = fun(M, F, A) -> try erpc:call(N, M, F, A, 5000) of V -> {value, V}
                    catch error:{exception, R, S} when is_list(S), R =/= undef -> {error, {exception, R, stack}};
                          C:R -> {C, R} end end,
[rpc:call(N, lists, sum, [[1,2,3]]),
 rpc:call(N, erlang, node, []) =:= N,
 Norm(rpc:call(N, erlang, error, [badarg])),
 rpc:call(N, erlang, exit, [foo]),
 rpc:call(N, erlang, throw, [bar]),
 rpc:call(N, nosuch, f, [1, <<"x">>]),
 rpc:call(N, lists, sum, [1, 2]),
 E(lists, sum, [[4,5]]),
 E(erlang, error, [{my, reason}]),
 E(erlang, exit, [foo]),
 E(erlang, throw, [bar]),
 E(nosuch, f, [])].
"""


def test_rpc_and_erpc_into_python_like_into_erl(beam):
    erl = beam("erlang")
    peer = beam("erlang")

    def cases(n):
        return erl.eval(f"N = '{n}', " + RPC_CASES.strip())

    expected = cases(peer.name)
    assert expected[0] == 6 and expected[5][1][1][0] == A("undef")

    async def main():
        async with py_node() as py:
            calls = expose_all(py)
            assert await asyncio.to_thread(cases, py.name) == expected
            # Anything not exposed is undef, even what exists on every BEAM node
            r = await ev(erl, f"rpc:call('{py.name}', os, getpid, []).")
            assert r == (A("badrpc"), (A("EXIT"), (A("undef"), [(A("os"), A("getpid"), [], [])])))
            # Python exceptions: error class, reason {python_error, Type, Message}
            r = await ev(erl, f"rpc:call('{py.name}', t, crash, []).")
            assert r == (A("badrpc"), (A("EXIT"), ((A("python_error"), b"ValueError", b"bad value"), [])))
            r = await ev(erl, f"try erpc:call('{py.name}', t, crash, []) catch C:R -> {{C, R}} end.")
            assert r == (A("error"), (A("exception"), (A("python_error"), b"ValueError", b"bad value"), []))
            # async exposed functions
            assert await ev(erl, f"rpc:call('{py.name}', math, add, [40, 2]).") == 42
            # rpc:cast and erpc:cast run exposed functions, nothing comes back
            assert await ev(erl, f"rpc:cast('{py.name}', t, record, [one]).") is True
            assert await ev(erl, f"erpc:cast('{py.name}', t, record, [two]).") == A("ok")
            await wait_for(lambda: sorted(calls) == ["one", "two"], what="casts ran")
            # Elixir's :rpc.call and :erpc.call are the same protocol
            # pynode:info over rpc and the pynode GenServer
            info = await ev(erl, f"rpc:call('{py.name}', pynode, info, []).")
            assert info[A("node")] == py.name and A(erl.name) in info[A("connected_nodes")]
            assert info[A("process_count")] >= 3 and info[A("jobs")] == []

    run(main)


def test_info_from_elixir(beam):
    ex = beam("elixir")

    async def main():
        async with py_node() as py:
            n = f":'{py.name}'"
            info = await ev(ex, f"GenServer.call({{:pynode, {n}}}, :info)")
            info2 = await ev(ex, f":rpc.call({n}, :pynode, :info, [])")
            info3 = await ev(ex, f":erpc.call({n}, :pynode, :info, [])")
            for i in (info, info2, info3):
                assert {"node", "connected_nodes", "process_count", "jobs"} <= set(i)
                assert i[A("node")] == py.name
                assert i[A("connected_nodes")] == [A(ex.name)]
                assert type(i[A("process_count")]) is int and i[A("process_count")] >= 3
                assert type(i[A("jobs")]) is list
            # only exposed functions are callable
            r = await ev(ex, f":rpc.call({n}, :os, :cmd, [~c\"ls\"])")
            assert r == (A("badrpc"), (A("EXIT"), (A("undef"), [(A("os"), A("cmd"), [[108, 115]], [])])))
            r = await ev(ex, f"try do :erpc.call({n}, System, :halt, []) catch c, r -> {{c, r}} end")
            assert r == (A("error"), (A("exception"), A("undef"), [(A("Elixir.System"), A("halt"), [], [])]))

    run(main)


def test_legacy_rex(beam):
    erl = beam("erlang")

    async def main():
        async with py_node() as py:
            expose_all(py)
            n = py.name
            # the ei/erl_call form, by hand: {Pid, {call, M, F, A, user}} -> {rex, Result}
            r = await ev(erl, f"{{rex, '{n}'}} ! {{self(), {{call, lists, sum, [[1,2]], user}}}}, "
                              "receive {rex, R} -> R after 5000 -> timeout end.")
            assert r == 3
            r = await ev(erl, f"{{rex, '{n}'}} ! {{self(), {{call, nosuch, f, [], user}}}}, "
                              "receive {rex, R} -> R after 5000 -> timeout end.")
            assert r == (A("badrpc"), (A("EXIT"), (A("undef"), [(A("nosuch"), A("f"), [], [])])))
            # the gen_server form
            r = await ev(erl, f"gen_server:call({{rex, '{n}'}}, {{call, math, add, [1, 2], user}}).")
            assert r == 3
            # erl_call (erl_interface) when installed
            found = [beam_program("erl_call")]  # the release's own; never skipped
            if found:
                for args, want in (("pynode info []", b"runtime => python"),
                                   ("lists sum [[1,2,3]]", b"6"),
                                   ('os cmd ["ls"]', b"{badrpc, {'EXIT', {undef, [{os, cmd, [\"ls\"], []}]}}}")):
                    p = await asyncio.create_subprocess_exec(found[0], "-c", test_cookie(), "-sname", str(n), "-a", args,
                                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    out, err = await asyncio.wait_for(p.communicate(), 15)
                    assert p.returncode == 0, (args, out, err)
                    assert want in out, (args, out)

    run(main)


def test_python_rpc_into_beam(beam):
    erl = beam("erlang")
    peer = beam("erlang")
    ex = beam("elixir")

    async def main():
        async with py_node() as py:
            out: dict = {}

            async def body(proc: Process) -> None:
                out["node"] = await erpc_call(proc, erl.name, "erlang", "node", [])
                out["sum"] = await erpc_call(proc, ex.name, "Elixir.Enum", "sum", [[1, 2, 3]])
                out["upcase"] = await erpc_call(proc, ex.name, "Elixir.String", "upcase", ["abc"])
                for key, (m, f, a) in {
                    "error": ("erlang", "error", [A("badarg")]),
                    "exit": ("erlang", "exit", [A("foo")]),
                    "throw": ("erlang", "throw", [A("bar")]),
                    "undef": ("nosuch", "f", [1]),
                }.items():
                    try:
                        await erpc_call(proc, erl.name, m, f, a)
                    except RpcError as e:
                        out["erpc_" + key] = e.reason
                    out["rpc_" + key] = await rpc_call(proc, erl.name, m, f, a)
                try:
                    await erpc_call(proc, erl.name, "timer", "sleep", [2000], timeout=0.1)
                except RpcError as e:
                    out["timeout"] = e.reason
                out["rpc_timeout"] = await rpc_call(proc, erl.name, "timer", "sleep", [2000], timeout=0.1)
                try:
                    await erpc_call(proc, "nonode@localhost", "erlang", "node", [])
                except RpcError as e:
                    out["noconnection"] = e.reason
                out["rpc_nodedown"] = await rpc_call(proc, "nonode@localhost", "erlang", "node", [])
                out["mailbox"] = proc.flush()

            p = py.spawn(body)
            await asyncio.shield(p.task)
            assert p.exit_reason == A("normal"), p.exit_reason
            assert out["node"] == A(erl.name)
            assert out["sum"] == 6 and out["upcase"] == b"ABC"
            cls, reason, stack = out["erpc_error"]
            assert (cls, reason) == (A("error"), A("badarg")) and type(stack) is list
            assert out["erpc_exit"] == (A("exit"), A("foo"))
            assert out["erpc_throw"] == (A("throw"), A("bar"))
            assert out["erpc_undef"] == (A("error"), A("undef"), [(A("nosuch"), A("f"), [1], [])])
            assert out["timeout"] == (A("erpc"), A("timeout"))
            assert out["noconnection"] == (A("erpc"), A("noconnection"))
            assert out["mailbox"] == []  # nothing late or stray
            # rpc_call gives what rpc:call gives between two BEAM nodes
            for key, call in {
                "rpc_error": "erlang, error, [badarg]",
                "rpc_exit": "erlang, exit, [foo]",
                "rpc_throw": "erlang, throw, [bar]",
                "rpc_undef": "nosuch, f, [1]",
                "rpc_timeout": "timer, sleep, [2000], 100",
            }.items():
                beam = await ev(peer, f"rpc:call('{erl.name}', {call}).")
                if key == "rpc_error":
                    assert beam[1][1][0] == out[key][1][1][0] == A("badarg")
                else:
                    assert out[key] == beam, key
            assert out["rpc_nodedown"] == await ev(peer, "rpc:call('nonode@localhost', erlang, node, []).")

    run(main)


# rpc's other entry points, run on an erl node against node N: the same against an erl peer
# and a Python peer must give the same results (error stacks normalised, as in RPC_CASES).
RPC_FLAVOURS = """
Norm = fun({badrpc, {'EXIT', {R, S}}}) when is_list(S), R =/= undef -> {badrpc, {'EXIT', {R, stack}}};
          (X) -> X end,
[rpc:block_call(N, lists, sum, [[1,2,3]]),
 rpc:block_call(N, lists, sum, [[1,2,3]], 5000),
 rpc:block_call(N, nosuch, f, [1]),
 rpc:block_call(N, erlang, exit, [foo]),
 rpc:block_call(N, erlang, throw, [bar]),
 Norm(rpc:block_call(N, erlang, error, [badarg])),
 rpc:block_call(N, timer, sleep, [3000], 100),
 rpc:multicall([N], lists, sum, [[1,2]]),
 rpc:multicall([N, 'nonode@nohost'], lists, sum, [[1,2]], 5000),
 rpc:multicall([N], nosuch, f, []),
 rpc:yield(rpc:async_call(N, lists, sum, [[4]])),
 rpc:nb_yield(rpc:async_call(N, lists, sum, [[5]]), 5000),
 rpc:yield(rpc:async_call(N, nosuch, f, [])),
 rpc:cast(N, t, record, [three]),
 rpc:eval_everywhere([N], t, record, [four]),
 erpc:multicall([N], lists, sum, [[1,2]]),
 erpc:multicall([N, 'nonode@nohost'], lists, sum, [[1,2]], 5000),
 erpc:multicall([N], nosuch, f, []),
 rpc:sbcast([N], rex, hello) =:= {[N], []},
 rpc:sbcast([N], nosuch_name, hello) =:= {[], [N]},
 begin {rex, N} ! {self(), {send, nosuch_name, hello}}, receive {rex, _, R} -> R after 5000 -> timeout end end,
 rpc:block_call(N, lists, sum, [[10]])].
"""


def test_block_call_multicall_async_call_sbcast_like_into_erl(beam):
    """:rpc.block_call hung forever against a Python node (issue 9): rex never answered
    {block_call, M, F, A, GL}. It and the rest of rpc's entry points now give what an erl
    peer gives."""
    erl = beam("erlang")
    peer = beam("erlang")

    def cases(n):
        return erl.eval(f"N = '{n}', " + RPC_FLAVOURS.strip(), timeout=60)

    expected = cases(peer.name)
    assert expected[0] == 6 and expected[6] == (A("badrpc"), A("timeout")) and expected[-1] == 10

    async def main():
        async with py_node() as py:
            calls = expose_all(py)

            async def sleep(ms):
                await asyncio.sleep(ms / 1000)
                return A("ok")

            py.expose("timer", "sleep", sleep)
            got = await asyncio.to_thread(cases, py.name)
            assert got == expected
            await wait_for(lambda: sorted(calls) == ["four", "three"], what="the casts ran")

    run(main, timeout=120)


SP = """-module(sp).
-export([f/1]).
f(X) -> fun() -> X end.
"""

# Run on an erl node that has module sp, against node N that does not: how processes spawned
# there with a fun of sp, or an undefined M:F, end for a monitor, a trapping link, a link.
SPAWN_CASES = """
Self = self(),
spawn(fun() ->
    Fun = sp:f(42),
    Down = fun(Ref) -> receive {'DOWN', Ref, process, _, Why} -> Why after 5000 -> timeout end end,
    {_, R1} = spawn_monitor(N, Fun),
    D1 = Down(R1),
    {_, R2} = spawn_monitor(N, nosuch, f, [1]),
    D2 = Down(R2),
    {_, R3} = spawn_monitor(fun() -> spawn_link(N, Fun), receive after 5000 -> alive end end),
    D3 = Down(R3),
    process_flag(trap_exit, true),
    P4 = spawn_link(N, Fun),
    E4 = receive {'EXIT', P4, W4} -> W4 after 5000 -> timeout end,
    P5 = spawn_link(N, nosuch, f, [2]),
    E5 = receive {'EXIT', P5, W5} -> W5 after 5000 -> timeout end,
    Self ! {spawn_cases, Fun, [D1, D2, D3, E4, E5]}
end),
receive {spawn_cases, F, L} -> {F, L} after 30000 -> timeout end.
"""


def test_spawned_fun_ends_with_undef_as_on_a_beam_node_and_is_logged(beam, tmp_path, caplog):
    """Node.spawn(py, fn -> ... end) gave a pid that died with {undef, [{erlang, apply,
    [Fun, []], []}]} and nothing was logged (issue 9). A BEAM node that lacks the fun's code
    ends it with {undef, [{Fun, [], []}]} (monitors and links alike) and logs "Error in
    process ..."; the Python node now does both, on one bounded line."""
    erl = beam("erlang")
    peer = beam("erlang")
    ex = beam("elixir")
    src = tmp_path / "sp.erl"
    src.write_text(SP)
    erl.eval(f'{{ok, sp, Bin}} = compile:file("{src}", [binary]), {{module, sp}} = code:load_binary(sp, "sp.erl", Bin), ok.')

    def expected(fun):
        undef_fun = (A("undef"), [(fun, [], [])])
        return [undef_fun, (A("undef"), [(A("nosuch"), A("f"), [1], [])]), undef_fun, undef_fun,
                (A("undef"), [(A("nosuch"), A("f"), [2], [])])]

    fun, on_beam = erl.eval(f"N = '{peer.name}', " + SPAWN_CASES.strip())
    assert on_beam == expected(fun)

    async def main():
        async with py_node() as py:
            caplog.set_level(logging.ERROR, logger="pynode.rpc")
            fun, got = await asyncio.to_thread(erl.eval, f"N = '{py.name}', " + SPAWN_CASES.strip(), 60)
            assert got == expected(fun)
            # Elixir: Node.spawn / spawn_monitor with a closure
            n = f":'{py.name}'"
            r = await ev(ex, f"f = fn -> :ok end; {{pid, ref}} = Node.spawn_monitor({n}, f); "
                             "receive do {:DOWN, ^ref, :process, ^pid, why} -> {pid, why == {:undef, [{f, [], []}]}} "
                             "after 5000 -> :timeout end")
            pid, same = r
            assert same is True and pid.node == py.name
            assert type(await ev(ex, f"Node.spawn({n}, fn -> :ok end)")) is Pid
            # (only pynode.rpc's: another run's node with another cookie may knock meanwhile)
            def rpc_records():
                return [rec for rec in caplog.records if rec.name == "pynode.rpc"]

            await wait_for(lambda: len(rpc_records()) >= 7, what="seven logged errors")
            lines = [rec.getMessage() for rec in rpc_records()]
            assert all("\n" not in line and len(line) < 1500 for line in lines), lines
            assert all(line.startswith("Error in process <") and f"on node {py.name}" in line for line in lines), lines
            assert sum("{undef,[{#Fun<sp.0." in line and "erlang:apply(#Fun<sp.0." in line for line in lines) == 3, lines
            assert sum("{undef,[{nosuch,f,[1],[]}]}" in line and "as nosuch:f(1)" in line for line in lines) == 1, lines
            assert any(str(pid) in line and "#Fun<erl_eval." in line for line in lines), lines

    run(main, timeout=120)
