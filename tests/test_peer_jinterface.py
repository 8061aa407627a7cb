"""JInterface (OTP's Java node library, Debian's ``erlang-jinterface``) as an independent
peer: what a BEAM node gets from it, a Python node gets too (issue 9).

JInterface offers no ``DIST_MONITOR``, ``SPAWN`` or ``ALIAS``. A BEAM node talking to it
sends no ``MONITOR_P`` (a monitor of a Java pid lives on the BEAM side and fires only with
``noconnection``), and replies to a gen call go to the pid. JInterface drops a connection
that carries a control message it does not know (``MONITOR_P``), so a node that sent one
got ``pang``, ``nodedown`` and ``noconnection`` where the BEAM gets ``pong``, a reply and a
live monitor. The peer is ``tests/peers/JPeer.java``, compiled at test time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from erl_interop.flags import DistFlags
from erl_interop.terms import Atom, Pid
from pynode.testing import BeamNode, test_cookie, unique_name

from node_helpers import A, beam_wait, ev, py_node, run, wait_for

HERE = Path(__file__).resolve().parent
JARS = [Path("/usr/share/java/OtpErlang.jar"), *sorted(Path("/usr/lib/erlang/lib").glob("jinterface-*/priv/OtpErlang.jar"))]


def _jar() -> Path | None:
    return next((j for j in JARS if j.exists()), None)


@pytest.fixture(scope="session")
def jpeer_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    jar = _jar()
    if jar is None or shutil.which("javac") is None:
        if os.environ.get("CI"):
            pytest.fail("JInterface tests need javac and OtpErlang.jar (default-jdk-headless, erlang-jinterface)")
        pytest.skip("javac or OtpErlang.jar missing (apt-get install default-jdk-headless erlang-jinterface)")
    out = tmp_path_factory.mktemp("jpeer")
    subprocess.run(["javac", "-cp", str(jar), "-d", str(out), str(HERE / "peers" / "JPeer.java")], check=True)
    return jar, out


class JPeer:
    """A running JPeer: ``name`` is its node name; :meth:`stop` closes its stdin (it exits)."""

    def __init__(self, classes: tuple[Path, Path], cookie: str) -> None:
        jar, out = classes
        self.name = unique_name("jv") + "@localhost"
        self.proc = subprocess.Popen(
            ["java", "-cp", f"{jar}:{out}", "JPeer", self.name, cookie],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(30):
            self.stop()
            raise RuntimeError(f"JPeer did not start: {self.lines}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
            if line.startswith("READY"):
                self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def jpeer(jpeer_classes: tuple[Path, Path]) -> Iterator[Any]:
    started: list[JPeer] = []

    def start(cookie: str) -> JPeer:
        p = JPeer(jpeer_classes, cookie)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_beam_baseline_ping_call_and_live_monitor(jpeer):
    """What two OTP parties do, for comparison: an erl node pings the Java node, calls its
    mailbox and monitors the mailbox's pid; the monitor stays quiet while the link is up and
    fires ``noconnection`` when the Java node goes."""
    cookie = test_cookie()
    beam = BeamNode.start(unique_name("erl") + "@localhost", cookie=cookie)  # EPMD first: JInterface needs one
    try:
        j = jpeer(cookie)
        assert beam.eval(f"net_adm:ping('{j.name}').") == A("pong")
        assert beam.eval(f"gen_server:call({{echo, '{j.name}'}}, hello).") == (A("java"), A("hello"))
        beam.eval(f"{{echo, '{j.name}'}} ! {{self(), x}}, receive {{P, x}} -> persistent_term:put(jp, P) end, ok.")
        assert beam.eval("R = monitor(process, persistent_term:get(jp)), persistent_term:put(jr, R), is_reference(R).") is True
        assert beam.eval(f"gen_server:call({{echo, '{j.name}'}}, again).") == (A("java"), A("again"))
        assert beam.eval("receive {'DOWN', _, _, _, _} = D -> D after 200 -> quiet end.") == A("quiet")
        j.stop()
        down = beam.eval("R = persistent_term:get(jr), receive {'DOWN', R, process, _, Why} -> Why after 10000 -> timeout end.")
        assert down == A("noconnection")
    finally:
        beam.stop()


def test_python_node_ping_call_link_and_live_monitor(jpeer):
    """The same from a Python node: ``pong``, the mailbox's reply, and a monitor that stays
    quiet while the link is up and fires ``noconnection`` when the Java node goes; the
    connection carries no MONITOR_P (JInterface would drop it)."""

    async def main():
        async with py_node(config={"discovery": False, "host_jobs": False}) as py:
            j = jpeer(test_cookie())
            assert await py.ping(j.name) == A("pong")
            c = py.dist.conns[A(j.name)]
            assert not c.flags & DistFlags.DIST_MONITOR  # what this test is about
            assert await py.call((A("echo"), A(j.name)), A("hello")) == (A("java"), A("hello"))

            box: list[Any] = []

            async def watcher(proc):
                proc.send((A("echo"), A(j.name)), (proc.pid, A("x")))
                jp, _ = await proc.receive(lambda m: type(m) is tuple and len(m) == 2 and m[1] == A("x"), 10)
                ref = proc.monitor(jp)
                box.append(await proc.call((A("echo"), A(j.name)), A("again"), 10))
                box.append(await proc.receive(lambda m: type(m) is tuple and m[:1] == (A("DOWN"),), 30))
                box.append(ref)

            w = py.spawn(watcher)
            await wait_for(lambda: len(box) == 1, what="the call after the monitor")
            assert box[0] == (A("java"), A("again"))
            assert w.alive and py.dist.conns[A(j.name)] is c  # the link survived the monitor
            j.stop()
            await wait_for(lambda: len(box) == 3, timeout=20, what="the DOWN")
            down, ref = box[1], box[2]
            assert down[1] == ref and down[4] == A("noconnection")

    run(main, timeout=90)


def test_python_node_links_with_a_java_mailbox(jpeer):
    """A link between a Python process and a Java mailbox carries the exit both ways' shape:
    the Java mailbox exits with ``boom`` and the trapping Python process gets its EXIT."""

    async def main():
        async with py_node(config={"discovery": False, "host_jobs": False}) as py:
            j = jpeer(test_cookie())
            got: list[Any] = []

            async def body(proc):
                proc.send((A("echo"), A(j.name)), (proc.pid, A("x")))
                jp, _ = await proc.receive(lambda m: type(m) is tuple and len(m) == 2 and m[1] == A("x"), 10)
                proc.send((A("echo"), A(j.name)), (A("link"), proc.pid))
                # the link is in place once the mailbox has answered something sent after it
                proc.send((A("echo"), A(j.name)), (proc.pid, A("y")))
                await proc.receive(lambda m: type(m) is tuple and len(m) == 2 and m[1] == A("y"), 10)
                proc.send(jp, (A("exit"), A("boom")))
                got.append(await proc.receive(lambda m: type(m) is tuple and m[:1] == (A("EXIT"),), 10))
                got.append(jp)

            py.spawn(body, trap_exit=True)
            await wait_for(lambda: len(got) == 2, timeout=20, what="the EXIT from the Java mailbox")
            assert got[0] == (A("EXIT"), got[1], A("boom"))

    run(main, timeout=60)
