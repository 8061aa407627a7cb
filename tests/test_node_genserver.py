"""GenServer both ways: Elixir/Erlang callers into a Python GenServer, Python callers into
Elixir and Erlang gen_servers; noproc, nodedown, timeouts (late replies dropped) and
crashing callbacks shaped as gen.erl shapes them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from erl_interop.terms import Pid
from pynode.errors import CallError
from pynode.otp.gen_server import NOREPLY, GenServer, Stop
from pynode.core.process import Exit, Process

from node_helpers import A, beam, Mailbox, beam_wait, ev, py_node, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop


class Kv(GenServer):
    async def init(self, value=0):
        self.value = value
        self.pending = []
        self.sleeping = False

    async def handle_call(self, request, from_):
        if request == "get":
            return self.value
        if request == "pid":
            return self.pid
        if request == "crash":
            raise RuntimeError("boom")
        if request == "stop":
            raise Stop(A("normal"), reply=A("stopping"))
        if type(request) is tuple and request[0] == "sleep":
            self.sleeping = True
            await asyncio.sleep(request[1] / 1000)
            return request[2]
        if type(request) is tuple and request[0] == "later":
            self.pending.append((from_, request[1]))  # answered by a later cast
            return NOREPLY
        if type(request) is tuple and request[0] == "double":
            return request[1] * 2
        return (A("unknown"), request)

    async def handle_cast(self, request):
        if type(request) is tuple and request[0] == "set":
            self.value = request[1]
        elif request == "release":
            for from_, v in self.pending:
                self.reply(from_, v)
            self.pending.clear()


EX_KV = """
defmodule ExKv do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(:get, _from, s), do: {:reply, s, s}
  def handle_call(:crash, _from, _s), do: raise "boom"
  def handle_call({:sleep, ms, r}, _from, s) do
    Process.sleep(ms)
    {:reply, r, s}
  end
  def handle_cast({:set, v}, _s), do: {:noreply, v}
end
{:ok, pid} = GenServer.start(ExKv, 0, name: :exkv)
pid
"""

ERL_KV = """-module(erlkv).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).
init(S) -> {ok, S}.
handle_call(get, _From, S) -> {reply, S, S};
handle_call(crash, _From, _S) -> error(boom);
handle_call({sleep, Ms, R}, _From, S) -> timer:sleep(Ms), {reply, R, S}.
handle_cast({set, V}, _S) -> {noreply, V}.
handle_info(_M, S) -> {noreply, S}.
"""


def load_erlkv(erl, tmp_path) -> Pid:
    src = tmp_path / "erlkv.erl"
    src.write_text(ERL_KV)
    return erl.eval(
        f'{{ok, erlkv, Bin}} = compile:file("{src}", [binary, return_errors]),'
        ' {module, erlkv} = code:load_binary(erlkv, "erlkv.erl", Bin),'
        " {ok, P} = gen_server:start({local, erlkv}, erlkv, 0, []), P."
    )


def test_beam_calls_python_genserver(beam):
    ex = beam("elixir")
    erl = beam("erlang")

    async def main():
        async with py_node() as py:
            srv = await Kv.start(py, 7, name="kv")
            n = f":'{py.name}'"
            # Elixir: by {name, node}, then by pid
            assert await ev(ex, f"GenServer.call({{:kv, {n}}}, :get)") == 7
            assert await ev(ex, f"Process.put(:srv, GenServer.call({{:kv, {n}}}, :pid)); GenServer.call(Process.get(:srv), :get)") == 7
            assert await ev(ex, "Process.get(:srv)") == srv.pid
            await ev(ex, "GenServer.cast(Process.get(:srv), {:set, 8})")
            assert await ev(ex, f"GenServer.call({{:kv, {n}}}, :get)") == 8
            await ev(ex, f"GenServer.cast({{:kv, {n}}}, {{:set, 9}})")
            assert await ev(ex, "GenServer.call(Process.get(:srv), {:double, 21})") == 42
            assert await ev(ex, f"GenServer.call({{:kv, {n}}}, :get)") == 9
            # NOREPLY + reply later
            await ev(ex, f"Process.put(:t, Task.async(fn -> GenServer.call({{:kv, {n}}}, {{:later, :answer}}) end))")
            await wait_for(lambda: srv.pending, what="deferred call")
            assert await ev(ex, f"GenServer.cast({{:kv, {n}}}, :release); Task.await(Process.get(:t))") == A("answer")
            # Erlang: gen_server:call by name and by pid, cast
            assert await ev(erl, f"gen_server:call({{kv, '{py.name}'}}, get).") == 9
            await ev(erl, f"gen_server:cast({{kv, '{py.name}'}}, {{set, 10}}).")
            assert await ev(erl, f"P = gen_server:call({{kv, '{py.name}'}}, pid), gen_server:call(P, get).") == 10
            # Stop with a reply: the caller gets it, the server is gone
            assert await ev(erl, f"gen_server:call({{kv, '{py.name}'}}, stop).") == A("stopping")
            await wait_for(lambda: py.whereis("kv") is None, what="server stopped")
            assert srv.process.exit_reason == A("normal")
            # No stray messages left in the callers' mailboxes (replies went to aliases)
            assert await ev(ex, "Process.info(self(), :messages)") == (A("messages"), [])
            assert await ev(erl, "process_info(self(), messages).") == (A("messages"), [])

    run(main)


def test_python_calls_beam_genservers(beam, tmp_path):
    ex = beam("elixir")
    erl = beam("erlang")
    ex_pid = ex.eval(EX_KV)
    erl_pid = load_erlkv(erl, tmp_path)

    async def main():
        async with py_node() as py:
            for target_name, pid, beam in (("exkv", ex_pid, ex), ("erlkv", erl_pid, erl)):
                dest = (target_name, beam.name)
                assert await py.call(dest, A("get")) == 0
                caller = Mailbox(py)
                caller.proc.cast(dest, (A("set"), 5))
                assert await caller.proc.call(pid, A("get")) == 5
                assert await caller.proc.call(dest, (A("sleep"), 1, [1, 2.5, b"x", "é"])) == [1, 2.5, b"x", "é".encode()]
                # replies came by alias; nothing stray in the mailbox, monitors cleaned up
                assert caller.proc.message_queue_len == 0
                assert caller.proc.monitors == {} and caller.proc.aliases == set()
            # Python -> Python through the BEAM-style path works as well
            await Kv.start(py, 1, name="kv")
            assert await py.call("kv", "get") == 1

    run(main)


def test_call_noproc_and_nodedown_shapes(beam):
    ex = beam("elixir")
    erl = beam("erlang")

    async def main():
        async with py_node() as py:
            n = py.name
            # BEAM -> Python: a missing process fails at once with noproc (same shape as BEAM-BEAM)
            t0 = time.monotonic()
            r = await ev(ex, f"try do GenServer.call({{:nosuch, :'{n}'}}, :x) catch :exit, r -> r end")
            assert r == (A("noproc"), (A("Elixir.GenServer"), A("call"), [(A("nosuch"), n), A("x"), 5000]))
            r = await ev(erl, f"catch gen_server:call({{nosuch, '{n}'}}, x).")
            assert r == (A("EXIT"), (A("noproc"), (A("gen_server"), A("call"), [(A("nosuch"), n), A("x")])))
            dead = py.spawn(lambda p: asyncio.sleep(0))
            await wait_for(lambda: not dead.alive)
            caller = Mailbox(py)
            caller.proc.send(await ev(erl, "self()."), dead.pid)
            r = await ev(erl, "receive P -> catch gen_server:call(P, x, 1000) end.")
            assert r == (A("EXIT"), (A("noproc"), (A("gen_server"), A("call"), [dead.pid, A("x"), 1000])))
            # the same calls between two BEAM nodes give the same shapes
            r = await ev(erl, f"catch gen_server:call({{nosuch, '{ex.name}'}}, x).")
            assert r == (A("EXIT"), (A("noproc"), (A("gen_server"), A("call"), [(A("nosuch"), A(ex.name)), A("x")])))
            assert time.monotonic() - t0 < 5
            # Python -> BEAM: noproc at once, by name and by dead pid
            t0 = time.monotonic()
            with pytest.raises(CallError) as ei:
                await py.call(("nosuch", erl.name), A("x"), timeout=10)
            assert ei.value.reason == A("noproc")
            assert ei.value.exit_reason == (A("noproc"), (A("gen_server"), A("call"), [(A("nosuch"), A(erl.name)), A("x"), 10000]))
            gone = await ev(erl, "P = spawn(fun() -> ok end), Ref = monitor(process, P), receive {'DOWN', Ref, _, _, _} -> P end.")
            with pytest.raises(CallError) as ei:
                await py.call(gone, A("x"), timeout=10)
            assert ei.value.reason == A("noproc")
            with pytest.raises(CallError) as ei:
                await py.call("nosuch", A("x"), timeout=10)  # a local name
            assert ei.value.reason == A("noproc")
            assert time.monotonic() - t0 < 2
            # nodedown: a node that does not exist, and a node that dies mid-call
            with pytest.raises(CallError) as ei:
                await py.call(("x", "nonode@localhost"), A("x"), timeout=10)
            assert ei.value.reason == (A("nodedown"), A("nonode@localhost"))
            ex.eval(EX_KV)
            call = asyncio.ensure_future(py.call(("exkv", ex.name), (A("sleep"), 5000, A("late")), timeout=20))
            await beam_wait(ex, "{:current_function, f} = Process.info(Process.whereis(:exkv), :current_function); f", (A("Elixir.Process"), A("sleep"), 1))
            ex.kill()
            with pytest.raises(CallError) as ei:
                await call
            assert ei.value.reason == (A("nodedown"), A(ex.name))
            # BEAM -> Python node that stops mid-call: {nodedown, Node}, as between BEAM nodes
            srv = await Kv.start(py, name="kv")
            calling = asyncio.ensure_future(ev(erl, f"catch gen_server:call({{kv, '{n}'}}, {{sleep, 5000, late}}, 20000)."))
            await wait_for(lambda: srv.sleeping, what="call in progress")
            await py.stop()
            r = await calling
            assert r[0] == "EXIT" and r[1][0] == (A("nodedown"), n)

    run(main)


def test_timeouts_drop_late_replies(beam, tmp_path):
    ex = beam("elixir")
    erl = beam("erlang")
    load_erlkv(erl, tmp_path)

    async def main():
        async with py_node() as py:
            await Kv.start(py, 3, name="kv")
            n = f":'{py.name}'"
            # Elixir -> Python: timeout, then the late reply must not reach the caller
            r = await ev(ex, f"try do GenServer.call({{:kv, {n}}}, {{:sleep, 300, :late}}, 50) catch :exit, r -> r end")
            assert r == (A("timeout"), (A("Elixir.GenServer"), A("call"), [(A("kv"), A(py.name)), (A("sleep"), 300, A("late")), 50]))
            # the next call is served after the slow one, so its late reply is already sent
            assert await ev(ex, f"GenServer.call({{:kv, {n}}}, :get)") == 3
            assert await ev(ex, "Process.info(self(), :messages)") == (A("messages"), [])
            # Python -> Erlang: same
            results = []

            async def caller(proc: Process) -> None:
                try:
                    await proc.call(("erlkv", erl.name), (A("sleep"), 300, A("late")), timeout=0.05)
                except CallError as e:
                    results.append(e.reason)
                results.append(await proc.call(("erlkv", erl.name), A("get")))
                results.append(proc.flush())

            p = py.spawn(caller)
            await asyncio.shield(p.task)
            assert results == [A("timeout"), 0, []]
            # Python -> Python: same, the reply is dropped at the alias
            results.clear()

            async def caller2(proc: Process) -> None:
                try:
                    await proc.call("kv", ("sleep", 200, "late"), timeout=0.05)
                except CallError as e:
                    results.append(e.reason)
                results.append(await proc.call("kv", "get"))
                results.append(proc.flush())

            p = py.spawn(caller2)
            await asyncio.shield(p.task)
            assert results == [A("timeout"), 3, []]

    run(main)


def test_crashing_callback(beam, tmp_path, caplog):
    ex = beam("elixir")
    erl = beam("erlang")
    load_erlkv(erl, tmp_path)
    ex.eval(EX_KV)

    async def main():
        async with py_node() as py:
            caplog.set_level(logging.ERROR, logger="pynode")
            srv = await Kv.start(py, name="kv")
            n = f":'{py.name}'"
            reason = (A("python_error"), b"RuntimeError", b"boom")
            r = await ev(ex, f"try do GenServer.call({{:kv, {n}}}, :crash) catch :exit, r -> r end")
            assert r == (reason, (A("Elixir.GenServer"), A("call"), [(A("kv"), A(py.name)), A("crash"), 5000]))
            assert srv.process.exit_reason == reason
            assert any("crashed" in rec.getMessage() and "RuntimeError" in rec.getMessage() + (rec.exc_text or "")
                       for rec in caplog.records), caplog.text
            assert "boom" in caplog.text
            # Python caller into a crashing Python server
            await Kv.start(py, name="kv")
            with pytest.raises(CallError) as ei:
                await py.call("kv", "crash")
            assert ei.value.reason == reason
            # Python callers into crashing BEAM servers get the BEAM's exit reason
            with pytest.raises(CallError) as ei:
                await py.call(("erlkv", erl.name), A("crash"))
            assert ei.value.reason[0] == A("boom") and type(ei.value.reason[1]) is list
            with pytest.raises(CallError) as ei:
                await py.call(("exkv", ex.name), A("crash"))
            exc, stack = ei.value.reason
            assert exc[A("__struct__")] == A("Elixir.RuntimeError") and exc[A("message")] == b"boom"

    run(main)


class SlowInit(GenServer):
    async def init(self, gate: asyncio.Event) -> None:
        await gate.wait()


def test_start_raises_when_the_server_is_killed_during_init():
    """gen_server:start answers {error, Reason} when the process dies in init: here an exit
    signal arrives while init waits. The starter gets a CallError with that reason, never a
    CancelledError that nothing asked for."""

    async def main():
        async with py_node(config={"discovery": False}) as py:
            gate = asyncio.Event()
            start = asyncio.ensure_future(SlowInit.start(py, gate, name="slow"))
            await wait_for(lambda: py.whereis("slow") is not None, what="the server process")
            py.process(py.whereis("slow")).kill(A("shutdown"))
            with pytest.raises(CallError) as e:
                await asyncio.wait_for(start, 5)
            assert e.value.reason == A("shutdown")

    run(main)


def test_start_returns_when_the_server_is_killed_before_its_first_step():
    """A kill that lands before the new process ever ran (Node.stop racing a start) ends
    GenServer.start with the reason instead of leaving it waiting forever."""

    async def main():
        async with py_node(config={"discovery": False}) as py:
            start = asyncio.ensure_future(Kv.start(py, 1, name="early"))
            await asyncio.sleep(0)  # start() has spawned the process; it has not run yet
            proc = py.process(py.whereis("early"))
            assert proc is not None and not proc._started
            proc.kill(A("shutdown"))
            with pytest.raises(CallError) as e:
                await asyncio.wait_for(start, 5)
            assert e.value.reason == A("shutdown")

    run(main)


class Trapper(GenServer):
    ended: list[Any] = []

    async def init(self) -> None:
        pass

    async def handle_info(self, msg: Any) -> None:
        Trapper.ended.append(("info", msg))

    async def terminate(self, reason: Any) -> None:
        Trapper.ended.append(("terminate", reason))


@pytest.mark.parametrize("suspended", [False, True])
def test_parents_exit_terminates_a_trapping_server(suspended):
    """gen_server (gen_server.erl's loop, and sys's suspended loop): a server that traps
    exits and gets ``{'EXIT', Parent, Reason}`` from its parent terminates with ``Reason``
    (``terminate/2`` runs); it is never handed to ``handle_info``. An EXIT from any other
    linked process still is."""

    async def main():
        async with py_node(config={"discovery": False, "host_jobs": False}) as py:
            Trapper.ended = []
            servers: list[Any] = []
            release = asyncio.Event()

            async def parent(proc):
                servers.append(await Trapper.start(py, link=proc, trap_exit=True))
                await release.wait()
                raise Exit(A("shutdown"))

            py.spawn(parent)
            await wait_for(lambda: servers, what="the server")
            server = servers[0]
            other = py.spawn(lambda p: release.wait())
            server.process.link(other.pid)
            other.kill(A("other_reason"))
            await wait_for(lambda: Trapper.ended, what="the other EXIT in handle_info")
            assert Trapper.ended == [("info", (A("EXIT"), other.pid, A("other_reason")))]
            if suspended:  # sys:suspend(Server): a system message, answered ok
                box = Mailbox(py)
                ref = py.make_ref()
                box.proc.send(server.pid, (A("system"), (box.pid, ref), A("suspend")))
                assert await box.get() == (ref, A("ok"))
                assert server._suspended
            release.set()
            await wait_for(lambda: server.process.exit_reason is not None, what="the server's end")
            assert server.process.exit_reason == A("shutdown")
            assert Trapper.ended[-1] == ("terminate", A("shutdown"))

    run(main)
