"""Elixir-specific interop: monitors of Python processes (exit, crash, node stopped),
Python processes linked to Elixir processes, and 1,000 concurrent GenServer.call's."""

from __future__ import annotations

import asyncio
import time

import pytest

from pynode.otp.gen_server import GenServer
from pynode.core.process import Exit, Process

from node_helpers import A, beam, Mailbox, beam_wait, ev, py_node, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop


def test_elixir_monitors_python_process(beam):
    ex = beam("elixir")

    async def main():
        async with py_node() as py:
            ex_pid = await ev(ex, "self()")
            gates = {k: asyncio.Event() for k in ("normal", "custom", "crash")}

            async def worker(proc: Process, how: str) -> None:
                await gates[how].wait()
                if how == "custom":
                    raise Exit((A("shutdown"), A("bye")))
                if how == "crash":
                    raise KeyError("nope")

            procs = {k: py.spawn(worker, k) for k in gates}
            stay = Mailbox(py, name="stay")
            sender = Mailbox(py)
            sender.proc.send(ex_pid, (A("pids"), procs["normal"].pid, procs["custom"].pid, procs["crash"].pid, stay.pid))
            await ev(ex, "receive do {:pids, a, b, c, d} -> Process.put(:refs, Enum.map([a, b, c, d], fn p -> {p, Process.monitor(p)} end)) end")
            await ev(ex, f"Process.put(:named, Process.monitor({{:stay, :'{py.name}'}}))")
            await wait_for(lambda: all(p.monitored_by for p in procs.values()) and len(stay.proc.monitored_by) == 2,
                           what="monitors")
            for k in gates:
                gates[k].set()
            got = await ev(ex, """
                refs = Process.get(:refs)
                for {p, r} <- Enum.take(refs, 3) do
                  receive do {:DOWN, ^r, :process, ^p, reason} -> reason after 5000 -> :timeout end
                end""")
            assert got == [A("normal"), (A("shutdown"), A("bye")), (A("python_error"), b"KeyError", b"'nope'")]
            # The node stops: the remaining monitors (by pid and by name) say :noconnection
            await py.stop()
            got = await ev(ex, """
                [{p, r}] = Enum.drop(Process.get(:refs), 3)
                n = Process.get(:named)
                a = receive do {:DOWN, ^r, :process, ^p, reason} -> reason after 5000 -> :timeout end
                b = receive do {:DOWN, ^n, :process, obj, reason} -> {obj, reason} after 5000 -> :timeout end
                {a, b}""")
            assert got == (A("noconnection"), ((A("stay"), py.name), A("noconnection")))

    run(main)


def test_python_process_linked_to_elixir_process(beam):
    ex = beam("elixir")

    async def main():
        async with py_node() as py:
            ex_pid = await ev(ex, "self()")
            victims = await ev(ex, """
                f = fn -> receive do {:die, r} -> exit(r) end end
                pids = for _ <- 1..3, do: spawn(f)
                Process.put(:victims, pids)
                pids""")
            normal, boom, killed = victims
            plain = {k: Mailbox(py) for k in ("normal", "boom", "killed")}
            trap = {k: Mailbox(py, trap_exit=True) for k in ("normal", "boom", "killed")}
            for k, v in zip(("normal", "boom", "killed"), victims):
                plain[k].proc.link(v)
                trap[k].proc.link(v)
            await beam_wait(ex, "Enum.map(Process.get(:victims), fn p -> length(elem(Process.info(p, :links), 1)) end)", [2, 2, 2])
            await ev(ex, "[a, b, c] = Process.get(:victims); send(a, {:die, :normal}); send(b, {:die, :boom}); Process.exit(c, :kill)")
            assert await trap["normal"].get() == (A("EXIT"), normal, A("normal"))
            assert await trap["boom"].get() == (A("EXIT"), boom, A("boom"))
            assert await trap["killed"].get() == (A("EXIT"), killed, A("killed"))
            await wait_for(lambda: not plain["boom"].proc.alive and not plain["killed"].proc.alive, what="linked die")
            assert plain["boom"].proc.exit_reason == A("boom")
            assert plain["killed"].proc.exit_reason == A("killed")
            # 'normal' does not kill a linked process: still alive after a later signal round trip
            sender = Mailbox(py)
            sender.proc.send(ex_pid, A("sync"))
            assert await ev(ex, "receive do :sync -> :ok after 5000 -> :timeout end") == A("ok")
            assert plain["normal"].proc.alive and all(t.proc.alive for t in trap.values())
            # and the other way: an Elixir process linked to a Python process that crashes dies with it
            async def crasher(proc: Process) -> None:
                await proc.receive()
                raise RuntimeError("py crash")

            c = py.spawn(crasher)
            sender.proc.send(ex_pid, c.pid)
            await ev(ex, """
                p = receive do p when is_pid(p) -> p end
                me = self()
                l = spawn(fn -> Process.link(p); send(me, :linked); receive do _ -> :ok end end)
                receive do :linked -> :ok end
                Process.put(:l, {l, Process.monitor(l)})""")
            await wait_for(lambda: len(c.links) == 1, what="link from Elixir")
            sender.proc.send(c.pid, A("go"))
            got = await ev(ex, "{l, r} = Process.get(:l); receive do {:DOWN, ^r, :process, ^l, reason} -> reason after 5000 -> :timeout end")
            assert got == (A("python_error"), b"RuntimeError", b"py crash")

    run(main)


class Doubler(GenServer):
    async def init(self):
        self.count = 0

    async def handle_call(self, request, from_):
        self.count += 1
        if type(request) is tuple and request[0] == "double":
            return (request[1], request[1] * 2)
        return self.count


def test_thousand_concurrent_calls_from_elixir(beam):
    ex = beam("elixir")

    async def main():
        async with py_node() as py:
            srv = await Doubler.start(py, name="doubler")
            t0 = time.monotonic()
            ok = await ev(ex, f"""
                n = :'{py.name}'
                tasks = for i <- 1..1000, do: Task.async(fn -> GenServer.call({{:doubler, n}}, {{:double, i}}, 30_000) end)
                res = Task.await_many(tasks, 60_000)
                res == Enum.map(1..1000, fn i -> {{i, 2 * i}} end) and Process.info(self(), :message_queue_len) == {{:message_queue_len, 0}}
                """, timeout=90)
            assert ok is True
            assert srv.count == 1000
            assert time.monotonic() - t0 < 30
            # every caller's monitor is removed (the DEMONITORs follow the replies on the wire)
            await wait_for(lambda: srv.process.monitored_by == {}, timeout=10, what="every caller's demonitor")

    run(main, timeout=120)
