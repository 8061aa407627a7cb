"""OTP behaviour a Python process shows to BEAM peers, compared with what two BEAM nodes do:
the ``sys`` protocol on a Python GenServer (``:sys.get_state``, ``get_status``,
``replace_state``, ``suspend``, ``resume``), and exit signals that arrive together with an
rpc reply."""

from __future__ import annotations

import asyncio

import pytest

from erl_interop.terms import Pid, Reference
from pynode.core.process import Process
from pynode.otp.gen_server import GenServer
from pynode.otp.rpc import rpc_call

from node_helpers import A, beam, ev, py_node, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop


def load_module(beam_node, tmp_path, name: str, source: str) -> None:
    """Compile ``source`` (module ``name``) on ``beam_node`` and load it there only."""
    src = tmp_path / f"{name}.erl"
    src.write_text(source)
    assert beam_node.eval(
        f'{{ok, {name}, Bin}} = compile:file("{src}", [binary, return_errors]),'
        f' {{module, {name}}} = code:load_binary({name}, "{name}.erl", Bin), ok.'
    ) == A("ok")


# -- exit signals that arrive with the rpc reply ------------------------------------------

LNK = """-module(lnk).
-export([reply_and_die/1]).
%% Run by erpc: link to the caller, then die abnormally. The process's end sends the caller
%% both the rpc reply (the DOWN of erpc's monitor) and the exit signal of the link, back to
%% back on the connection.
reply_and_die(Caller) -> link(Caller), exit(boom).
"""

# On a BEAM node: what happens to a caller of erpc:call(Peer, lnk, reply_and_die, [self()]),
# trapping exits or not: how it ends (or what its mailbox holds and the call returned).
BEAM_CALLER = """
Self = self(),
Run = fun(Trap) ->
    {P, Mref} = spawn_monitor(fun() ->
        process_flag(trap_exit, Trap),
        R = rpc:call(Peer, lnk, reply_and_die, [self()]),
        Self ! {self(), returned, R, receive M -> M after 1000 -> nothing end}
    end),
    receive
        {'DOWN', Mref, process, P, Why} -> {died, Why};
        {P, returned, R, M} -> {returned, R, M}
    end
end,
{Run(false), Run(true)}.
"""


def test_link_exit_that_arrives_with_the_rpc_reply_is_not_lost(beam, tmp_path):
    """Issue 9: the linked process's exit signal and the rpc reply come in one read; the
    exit must still kill the caller (or reach it as an 'EXIT' message when it traps exits),
    as on the BEAM, where the caller dies with the process's reason ``{Ref, exit, boom}``."""
    erl = beam("erlang")
    peer = beam("erlang")
    load_module(peer, tmp_path, "lnk", LNK)
    died, returned = erl.eval(f"Peer = '{peer.name}', " + BEAM_CALLER.strip())
    assert died[0] == A("died")
    ref, cls, why = died[1]
    assert type(ref) is Reference and (cls, why) == (A("exit"), A("boom"))
    assert returned[0] == A("returned") and returned[1] == (A("badrpc"), (A("EXIT"), A("boom")))
    assert returned[2][0] == A("EXIT") and returned[2][2][1:] == (A("exit"), A("boom"))

    async def main():
        async with py_node() as py:
            load_module(erl, tmp_path, "lnk", LNK)
            got: dict = {}

            async def caller(proc: Process) -> None:
                got["returned"] = await rpc_call(proc, erl.name, "lnk", "reply_and_die", [proc.pid])
                got["mailbox"] = proc.flush()

            p = py.spawn(caller)
            await asyncio.wait_for(asyncio.shield(p.task), 10)
            assert "returned" not in got, got  # the process was killed inside rpc_call
            ref, cls, why = p.exit_reason
            assert type(ref) is Reference and (cls, why) == (A("exit"), A("boom"))

            t = py.spawn(caller, trap_exit=True)
            await asyncio.wait_for(asyncio.shield(t.task), 10)
            assert t.exit_reason == A("normal")
            assert got["returned"] == (A("badrpc"), (A("EXIT"), A("boom")))
            [(tag, frm, reason)] = got["mailbox"]
            assert tag == A("EXIT") and type(frm) is Pid and frm.node == A(erl.name)
            assert reason[1:] == (A("exit"), A("boom"))

    run(main)


# -- the sys protocol ------------------------------------------------------------------------

class SysKv(GenServer):
    """State kept as attributes: ``:sys.get_state`` shows the public ones that are terms."""

    async def init(self) -> None:
        self.count = 1
        self.label = b"x"
        self.gate = asyncio.Event()  # not a term: left out of the state
        self._secret = 42  # private: left out
        self._terminated = None

    async def handle_call(self, request, from_):
        if request == A("get"):
            return self.count
        return (A("unknown"), request)

    async def terminate(self, reason) -> None:
        self._terminated = reason


EX_SYS_KV = """
defmodule SysKv do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(:get, _from, s), do: {:reply, s.count, s}
end
{:ok, pid} = GenServer.start(SysKv, %{count: 1, label: "x"}, name: :kv_sys)
pid
"""

# Steps run on an Elixir node against @t (a {name, node} of a Python or an Elixir server).
SYS_STEPS = {
    "read": """
        {:sys.get_state(@t), :sys.get_status(@t), :sys.get_status(@t, 1000),
         :sys.replace_state(@t, fn s -> %{s | count: s.count + 41} end),
         :sys.get_state(@t, 1000), GenServer.call(@t, :get)}
    """,
    "suspend": """
        :ok = :sys.suspend(@t)
        Process.put(:queued, Task.async(fn -> GenServer.call(@t, :get, 10_000) end))
        :ok
    """,
    "while_suspended": """
        {Task.yield(Process.get(:queued), 0), elem(:sys.get_status(@t), 3) |> Enum.at(1),
         :sys.replace_state(@t, fn s -> %{s | count: 7} end), :sys.get_state(@t)}
    """,
    "resume": """
        {:sys.resume(@t, 1000), Task.await(Process.get(:queued)), :sys.suspend(@t, 1000), :sys.resume(@t)}
    """,
    "errors": """
        for f <- [fn _ -> raise "x" end, fn _ -> throw(:x) end, fn _ -> exit(:x) end] do
          try do :sys.replace_state(@t, f) catch c, r -> {c, r} end
        end ++
        [:sys.get_state(@t), :sys.change_code(@t, :m, 1, []), :sys.log(@t, :get),
         :sys.statistics(@t, :get), :sys.no_debug(@t), Process.info(self(), :messages)]
    """,
    "terminate": """
        ref = Process.monitor(@t)
        r = :sys.terminate(@t, :because)
        receive do {:DOWN, ^ref, :process, _, why} -> {r, why} after 5000 -> :no_down end
    """,
}


def _no_pids(t):
    """``t`` with every pid replaced by the atom ``pid`` (pids differ between the nodes)."""
    if type(t) is Pid:
        return A("pid")
    if type(t) is tuple:
        return tuple(_no_pids(x) for x in t)
    if type(t) is list:
        return [_no_pids(x) for x in t]
    if type(t) is dict:
        return {k: _no_pids(v) for k, v in t.items()}
    return t


def _status_shape(status):
    """get_status with pids and the process dictionary's values out: what must match."""
    tag, pid, module, [pdict, sys_state, parent, debug, formatted] = status
    return (tag, type(pid), module, [sorted(k for k, _ in pdict), sys_state, type(parent), debug, _no_pids(formatted)])


def test_sys_protocol_on_a_python_genserver_like_on_an_elixir_one(beam):
    """:sys.get_state/get_status/replace_state/suspend/resume/terminate from Elixir answer
    from a Python GenServer what they answer from an Elixir GenServer on another node."""
    ex = beam("elixir")
    other = beam("elixir")
    other.eval(EX_SYS_KV)

    async def steps(target: str, on_suspended) -> dict:
        out = {}
        for step, src in SYS_STEPS.items():
            out[step] = await ev(ex, src.replace("@t", target))
            if step == "suspend":
                await on_suspended()
        return out

    async def main():
        async with py_node() as py:
            srv = await SysKv.start(py, name="kv_sys")

            async def beam_queued():
                async def one_queued():
                    n = await ev(other, "Process.info(Process.whereis(:kv_sys), :message_queue_len)")
                    return n == (A("message_queue_len"), 1)

                await wait_for(one_queued, what="the call queued on the suspended server")

            async def py_queued():
                await wait_for(lambda: srv.process.message_queue_len == 1, what="the call queued on the suspended server")

            want = await steps(f"{{:kv_sys, :'{other.name}'}}", beam_queued)
            got = await steps(f"{{:kv_sys, :'{py.name}'}}", py_queued)

            state0 = {A("count"): 1, A("label"): b"x"}
            state1 = {A("count"): 42, A("label"): b"x"}
            for out in (want, got):
                st, status, status2, replaced, st1, count = out["read"]
                assert st == state0 and replaced == st1 == state1 and count == 42
                assert status[1] == status2[1] and status[2] == (A("module"), A("gen_server"))
                # suspended: the call waits, system messages are still answered
                assert out["suspend"] == A("ok")
                assert out["while_suspended"] == (None, A("suspended"), {A("count"): 7, A("label"): b"x"},
                                                  {A("count"): 7, A("label"): b"x"})
                assert out["resume"] == (A("ok"), 7, A("ok"), A("ok"))
                assert out["terminate"] == (A("ok"), A("because"))
            # the same answers, pids aside
            assert _status_shape(got["read"][1]) == _status_shape(want["read"][1])
            [_pdict, _s, parent, _d, formatted] = got["read"][1][3]
            assert parent == srv.pid  # not started linked: its own parent, as gen_server
            assert formatted[0] == (A("header"), list(b"Status for generic server kv_sys"))
            assert formatted[2] == (A("data"), [(list(b"State"), state0)])
            assert got["errors"] == want["errors"], (got["errors"], want["errors"])
            failed = (A("callback_failed"), (A("gen_server"), A("system_replace_state")))
            raised, thrown, exited = got["errors"][:3]
            assert raised[0] == A("error") and raised[1][:2] == failed
            assert raised[1][2][1][A("__struct__")] == A("Elixir.RuntimeError")
            assert thrown == (A("error"), failed + ((A("throw"), A("x")),))
            assert exited == (A("error"), failed + ((A("exit"), A("x")),))
            assert got["errors"][3] == {A("count"): 7, A("label"): b"x"}  # a failed fun changes nothing
            assert got["errors"][-1] == (A("messages"), [])
            # terminate ran with the reason; the attributes were replaced by the funs' maps
            assert srv._terminated == A("because") and srv.process.exit_reason == A("because")
            assert srv.count == 7 and srv._secret == 42 and isinstance(srv.gate, asyncio.Event)

            # from Erlang, by pid; a server started linked has its starter as parent
            erl = beam("erlang")
            starter = py.spawn(lambda proc: asyncio.Event().wait())
            srv = await SysKv.start(py, link=starter)
            erl_pid = await ev(erl, "self().")
            starter.send(erl_pid, srv.pid)
            r = await ev(erl, "receive P -> {sys:get_state(P), sys:get_status(P)} end.")
            assert r[0] == {A("count"): 1, A("label"): b"x"}
            _, pid, _, [pdict, _, parent, _, formatted] = r[1]
            assert pid == srv.pid and parent == starter.pid
            assert (A("$ancestors"), [starter.pid]) in pdict
            assert formatted[0] == (A("header"), list(f"Status for generic server <0.{pid.id}.{pid.serial}>".encode()))

    run(main, timeout=120)
