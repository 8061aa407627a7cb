"""Built-ins against real BEAM peers: ping (and wrong cookies), rpc/erpc/rex into exposed
functions with errors shaped as the BEAM shapes them, rpc out of Python, pynode:info."""

from __future__ import annotations

import asyncio
import glob
import logging

import pytest

from pynode.errors import ErlangError, RpcError, Throw
from pynode.core.process import Exit, Process
from pynode.otp.rpc import erpc_call, rpc_call
from pynode.testing import test_cookie

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
            found = glob.glob("/usr/lib/erlang/lib/erl_interface-*/bin/erl_call")
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
