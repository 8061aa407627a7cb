"""Jobs in real mixed clusters: Elixir nodes running the mix_compat project (``Job``,
``Job.Otp``, ``Pynode.Jobs``) and Python nodes (``pynode.jobs``), as ``python -m pynode``
subprocesses and in-process ``Node`` objects, in one cluster.

Covered: the seed's ``mix run_job 10`` (and ``python -m pynode run_job 10``) against three
nodes of both languages, with jobs placed on every node; ``Job.Otp`` from Elixir, from a
Python node and from a client-only Elixir node (code loaded, no application, like the
seed's ``c1``); graceful shutdown moving jobs with their state Elixir -> Python and
Python -> Elixir while a client keeps calling; ``kill -9`` of an Elixir and of a Python
node, every job running again on exactly one node with its last acknowledged state; a
rolling restart of every node under three clients (client-only Elixir, client-only Python
through ``{client, op, [Id, Request, OpId]}``, Python through its registry) with no error,
no lost and no duplicated update.

Every wait is on a condition; every node has a unique name. Name prefixes fix the sorted
order of the nodes (``a`` < ``b`` < ``c``), which decides where replicas go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from erl_interop.terms import Atom, Pid
from pynode import jobs
from pynode.errors import CallError
from pynode.otp.gen_server import GenServer
from pynode.jobs import HOST_KEY, PYNODE_JOB, job_key
from pynode.node import Node
from pynode.testing import BeamNode, await_until, compile_mix_project, read_until, test_cookie, unique_name

import use_case
from node_helpers import NodeGroup, ev, holdings, run, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

A = Atom
OK = A("ok")
ERROR = A("error")
UPDATE = A("update")
ROOT = Path(__file__).resolve().parents[1]
MIX_PROJECT = str(ROOT / "mix_compat")
EBIN = str(use_case.EBIN)  # the build of the release under test (pynode.testing.mix_build_root)
PYNODE_EBIN = str(use_case.PYNODE_EBIN)  # its dependency's, the library (elixir/)
OPS_EX = "case :ets.whereis(:rolling) do :undefined -> 0; _ -> case :ets.lookup(:rolling, :ops) do [{_, n}] -> n; _ -> 0 end end"
HOSTS_EX = "length(Pynode.Registry.lookup_pids({:p, :g, :pynode_job_host}))"

#: small durations (ms) so the tests run quickly; replicas as in the protocol's default
SETTINGS = "{work_ms, 300}, {result_ttl, 60000}, {replicas, 1}"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mix_compiled() -> str:
    """``mix compile`` once per session (serialized across xdist workers)."""
    return compile_mix_project(MIX_PROJECT)


class PyCli:
    """``python -m pynode --sname NAME --cookie test --config FILE`` as a subprocess; its
    output is kept (drained by a thread) for diagnostics. Stopped by its own pid."""

    #: more command-line arguments, after ``--config FILE``
    extra_args: tuple[str, ...] = ()

    def __init__(self, name: str, config: str) -> None:
        self.name = name
        self.lang = "python"
        args = [sys.executable, "-m", "pynode", "--sname", name, "--cookie", test_cookie(), "--config", config,
                *self.extra_args]
        self.proc = subprocess.Popen(args, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        try:
            _, seen = read_until(self.proc.stdout, " up: ")
        except BaseException:
            self.proc.kill()
            self.proc.wait(10)
            raise
        self.output: collections.deque[str] = collections.deque(seen, maxlen=2000)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.output.append(raw.decode("utf-8", "replace").rstrip())

    def tail(self, n: int = 60) -> str:
        return "\n".join(list(self.output)[-n:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: hand every job off) and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)


class Mixed(NodeGroup):
    """The nodes of one test. Names are made up front so that the shared config file lists
    them all under ``connect``: a node that (re)starts joins the cluster by itself."""

    def __init__(self, tmp_path: Path, spec: str) -> None:
        # spec: one letter per node, "e" Elixir, "p" Python subprocess; prefixes a, b, c, ...
        self.spec = spec
        self.names = [unique_name("abcdefgh"[i]) + "@localhost" for i in range(len(spec))]
        self.config = tmp_path / "sys.config"
        connect = ", ".join(f"'{n}'" for n in self.names)
        self.config.write_text(f"[{{pynode, [{SETTINGS}, {{connect, [{connect}]}}]}}].\n")
        self.nodes: dict[str, Any] = {}
        self.started: list[Any] = []

    def start_one(self, i: int) -> Any:
        name, lang = self.names[i], self.spec[i]
        if lang == "e":
            n: Any = BeamNode.start(name, test_cookie(), lang="elixir", mix_project=MIX_PROJECT, args=["-config", str(self.config)])
        else:
            n = PyCli(name, str(self.config))
        self.nodes[name] = n
        self.started.append(n)
        return n

    def start_all(self) -> list[Any]:
        with ThreadPoolExecutor(len(self.names)) as pool:
            return list(pool.map(self.start_one, range(len(self.names))))

    def client_only_elixir(self) -> BeamNode:
        """An Elixir node with the project's code on its path and no application (no
        registry, no host), like the seed's ``c1``; connected to every cluster node."""
        n = BeamNode.start(unique_name("z") + "@localhost", test_cookie(), lang="elixir", args=["-pa", EBIN, PYNODE_EBIN, "-config", str(self.config)])
        self.started.append(n)
        n.eval("Application.load(:available_processes)")
        n.eval("Application.load(:pynode)")
        return n

    def elixir(self) -> list[BeamNode]:
        return [self.nodes[n] for n, l in zip(self.names, self.spec) if l == "e"]


@pytest.fixture
def mixed(tmp_path: Path, mix_compiled: str):
    made: list[Mixed] = []

    def make(spec: str) -> Mixed:
        m = Mixed(tmp_path, spec)
        made.append(m)
        return m

    yield make
    for m in made:
        m.kill_all()


@contextlib.asynccontextmanager
async def observer(cluster: Mixed, hosts: int | None = None) -> AsyncIterator[Node]:
    """An in-process Python node that hosts no jobs (a client), connected to the cluster;
    returns once it and every Elixir node see ``hosts`` job hosts (default: all)."""
    node = Node(unique_name("y") + "@localhost", test_cookie())
    node.config = {"host_jobs": False, "work_ms": 300, "result_ttl": 60000}
    await node.start()
    try:
        for name in cluster.names:
            if name in cluster.nodes and _running(cluster.nodes[name]):
                assert await node.dist.connect(name), f"cannot connect to {name}"
        await settled(node, cluster, hosts)
        yield node
    finally:
        await node.stop()


def _running(n: Any) -> bool:
    return n.proc.poll() is None


async def settled(obs: Node, cluster: Mixed, hosts: int | None = None, timeout: float = 20.0) -> None:
    """Wait until the observer and every running Elixir node see ``hosts`` job hosts."""
    want = hosts if hosts is not None else sum(1 for n in cluster.nodes.values() if _running(n))
    await wait_for(lambda: len(obs.registry.lookup_pids(HOST_KEY)) == want, timeout, f"{want} hosts on the observer")
    for b in cluster.elixir():
        if _running(b):
            await ex_until(b, HOSTS_EX, lambda v: v == want, f"{want} hosts on {b.name}", timeout)


async def ex_until(beam: BeamNode, src: str, pred: Any, what: str, timeout: float = 15.0) -> Any:
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


def record_job_nodes(obs: Node) -> dict[Any, set[str]]:
    """Every node a job name was registered from, as the observer's registry mirror sees it
    (a test hook on the mirror's ``put``)."""
    seen: dict[Any, set[str]] = {}
    mirror = obs.registry.server.mirror
    orig = mirror.put

    def put(kb: bytes, key: Any, pid: Pid, value: Any) -> None:
        if type(key) is tuple and len(key) == 3 and type(key[2]) is tuple and key[2][:1] == (PYNODE_JOB,):
            seen.setdefault(key[2][1], set()).add(str(pid.node))
        orig(kb, key, pid, value)

    mirror.put = put  # type: ignore[method-assign]
    return seen


async def cmd(*args: str, cwd: str, timeout: float = 90.0) -> tuple[int, str, str]:
    env = dict(os.environ, MIX_ENV="dev")
    p = await asyncio.create_subprocess_exec(*args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    return p.returncode or 0, out.decode(), err.decode()


def ex_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the seed's check --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["epp", "eep"])
def test_seed_run_job_against_mixed_cluster(mixed, spec):
    cluster = mixed(spec)
    cluster.start_all()

    async def main():
        async with observer(cluster) as obs:
            seen = record_job_nodes(obs)
            connect = [x for n in cluster.names for x in ("--connect", n)]
            client = unique_name("c") + "@localhost"
            rc, out, err = await cmd("elixir", "--sname", client, "--cookie", test_cookie(), "-S", "mix", "run_job", "10",
                                     *connect, cwd=MIX_PROJECT)
            assert rc == 0, out + err + cluster.tails()
            want = [f"job {i}: ok" for i in range(1, 11)] + ["run_job: 10 ok, 0 failed"]
            assert [ln for ln in out.splitlines() if ln.startswith(("job ", "run_job:"))] == want, out
            await wait_for(lambda: set(range(1, 11)) <= set(seen), what="every job seen by the observer")
            assert set().union(*(seen[i] for i in range(1, 11))) == set(cluster.names), seen

            seen.clear()
            rc, out, err = await cmd(sys.executable, "-m", "pynode", "run_job", "10", "--cookie", test_cookie(), *connect,
                                     cwd=str(ROOT))
            assert rc == 0, out + err + cluster.tails()
            assert out.splitlines() == want, out
            await wait_for(lambda: set(range(1, 11)) <= set(seen), what="every job seen by the observer")
            assert set().union(*(seen[i] for i in range(1, 11))) == set(cluster.names), seen
            # the same through a host's {client, ...} (client path), from the Python CLI
            rc, out, err = await cmd(sys.executable, "-m", "pynode", "run_job", "6", "--cookie", test_cookie(), "--via",
                                     "client", *connect, cwd=str(ROOT))
            assert rc == 0 and out.splitlines()[-1] == "run_job: 6 ok, 0 failed", out + err

            # jobs that stay: the `jobs` table (asked of an Elixir node) shows them on every node
            for i in range(6):
                assert (await jobs.start(obs, f"t{i}"))[0] == OK
            rc, out, err = await cmd(sys.executable, "-m", "pynode", "jobs", "--node", cluster.elixir()[0].name,
                                     "--cookie", test_cookie(), cwd=str(ROOT))
            assert rc == 0, out + err
            lines = out.splitlines()
            assert lines[0].split() == ["ID", "KIND", "NODE", "PID"]
            rows = [ln.split() for ln in lines[1:-1]]
            assert sorted(r[0] for r in rows) == [f'"t{i}"' for i in range(6)], out
            assert {r[2] for r in rows} == set(cluster.names), out
            assert lines[-1].startswith("6 job(s) on 3 host(s)"), out

    run(main, timeout=150)


# -- Job.Otp from iex-like evaluation and from Python ---------------------------------------------
def test_job_otp_from_elixir_python_and_client_only_nodes(mixed):
    cluster = mixed("ep")
    cluster.start_all()
    ex = cluster.elixir()[0]
    c1 = cluster.client_only_elixir()

    async def main():
        async with observer(cluster) as obs:
            for n in cluster.names:
                assert await ev(c1, f"Node.connect(:{ex_str(n)})") is True
            # on the Elixir node, as in iex
            r = await ev(ex, 'Job.Otp.start("ohai")')
            assert r[0] == OK and type(r[1]) is Pid
            assert await ev(ex, 'Job.Otp.check_results("ohai")') is None
            await ex_until(ex, 'Job.Otp.check_results("ohai")', lambda v: v == b"results of ohai", "results of ohai")
            assert await jobs.check_results(obs, "ohai") == b"results of ohai"
            assert await ev(c1, 'Job.Otp.check_results("ohai")') == b"results of ohai"
            assert await ev(ex, 'Job.Otp.start("ohai")') == (ERROR, A("job_already_started"))
            # from Python (its registry, then the client path)
            for jid, via in (("ohai-py", None), ("ohai-cl", "client")):
                r = await jobs.otp_start(obs, jid, via=via)
                assert r[0] == OK, r
                assert await jobs.check_results(obs, jid, via=via) is None
                await wait_for_async(lambda: jobs.check_results(obs, jid, via=via), lambda v: v == b"results of " + jid.encode())
                assert await ev(ex, f"Job.Otp.check_results({ex_str(jid)})") == b"results of " + jid.encode()
            # from the client-only Elixir node (through a host node)
            r = await ev(c1, "Job.Otp.start(42)")
            assert r[0] == OK, r
            assert await ev(c1, "Job.Otp.check_results(42)") is None
            await ex_until(c1, "Job.Otp.check_results(42)", lambda v: v == b"results of 42", "results of 42")
            assert await jobs.check_results(obs, 42) == b"results of 42"
            # {client, op, [Id, Request, OpId]}: a repeat of the same OpId, through either host,
            # is answered from Recent and not applied twice
            assert (await ev(c1, 'Job.start("dup")'))[0] == OK
            hosts = "[" + ", ".join(f":{ex_str(n)}" for n in cluster.names) + "]"
            r = await ev(c1, f"""
                ref = make_ref()
                for n <- {hosts}, do: GenServer.call({{:pynode_jobs, n}}, {{:client, :op, ["dup", {{:update, :x}}, ref]}})
            """)
            assert r == [(OK, OK), (OK, OK)], r
            assert await ev(c1, 'Job.finish("dup")') == [A("x"), b"dup"]
            # no such job: nil, after missing_grace
            assert await ev(c1, 'Job.Otp.check_results("nope")') is None
            # the jobs are spread over both hosts (round-robin placement)
            where = {str(obs.registry.where(job_key(i)).node) for i in (b"ohai", b"ohai-py", b"ohai-cl", 42)}
            assert where == set(cluster.names), where

    run(main, timeout=90)


async def wait_for_async(fn: Any, pred: Any, timeout: float = 10.0) -> Any:
    """The first value of ``await fn()`` for which ``pred`` holds."""
    async def check() -> Any:
        v = await fn()
        return (v,) if pred(v) else None

    return (await await_until(check, timeout=timeout, interval=0.02, what="the awaited value"))[0]


# -- graceful shutdown -------------------------------------------------------------------------
class Caller:
    """A client that keeps calling ``get_state`` on every job (through the given path) and
    records what it sees; it must never see ``no_such_job`` or any error."""

    def __init__(self, obs: Node, ids: list[Any], via: str | None) -> None:
        self.obs, self.ids, self.via = obs, ids, via
        self.calls = 0
        self.bad: list[Any] = []
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.stop.is_set():
            for i in self.ids:
                r = await jobs.get_state(self.obs, i, via=self.via)
                self.calls += 1
                if type(r) is not list:
                    self.bad.append((i, r))

    async def done(self) -> None:
        self.stop.set()
        await self.task
        assert self.bad == [], self.bad[:5]
        assert self.calls > 0


def test_graceful_shutdown_moves_jobs_elixir_to_python_and_back(mixed):
    cluster = mixed("epe")  # a: Elixir, b: Python subprocess, c: Elixir
    cluster.start_all()
    e1, p1, e2 = (cluster.nodes[n] for n in cluster.names)

    async def main():
        async with observer(cluster) as obs:
            ids = [f"g{i}".encode() for i in range(12)]
            for i in ids:
                assert (await jobs.start(obs, i))[0] == OK
                assert await jobs.update(obs, i, A("before")) == OK
            assert (await jobs.otp_start(obs, b"otp-g"))[0] == OK
            held = await holdings(obs, cluster.names)
            assert {n for i in ids for n in held[i]} == set(cluster.names)
            on_e1 = [i for i in ids if held[i] == [e1.name]]
            callers = [Caller(obs, ids, None), Caller(obs, ids, "client")]

            # Elixir node stops (:init.stop): its jobs go to the Python and the other Elixir node
            assert await asyncio.to_thread(e1.stop, 30) == 0
            await settled(obs, cluster, 2)
            held = await holdings(obs, [p1.name, e2.name])
            assert all(len(held.get(i, [])) == 1 for i in ids), held
            assert {held[i][0] for i in on_e1} == {p1.name, e2.name}, (on_e1, held)
            for i in ids:
                assert await jobs.get_state(obs, i) == [A("before"), i]
                assert await ev(e2, f"Job.update({ex_str(i.decode())}, :after)") == OK

            # Python node gets SIGTERM: every job goes to the Elixir node, state included
            on_p1 = [i for i in ids if held[i] == [p1.name]]
            assert on_p1
            assert await asyncio.to_thread(p1.stop) == 0, p1.tail()
            await settled(obs, cluster, 1)
            held = await holdings(obs, [e2.name])
            assert all(held.get(i) == [e2.name] for i in ids), held
            for c in callers:
                await c.done()
            for i in ids:
                assert await ev(e2, f"Job.finish({ex_str(i.decode())})") == [A("after"), A("before"), i]
            await wait_for_async(lambda: jobs.check_results(obs, b"otp-g"), lambda v: v == b"results of otp-g")

    run(main, timeout=120)


# -- sudden death ------------------------------------------------------------------------------
def test_kill_9_elixir_then_python_jobs_run_again_once_with_last_acked_state(mixed):
    cluster = mixed("epe")  # replicas: a's on b (Python), b's on c (Elixir), c's on a
    cluster.start_all()
    e1, p1, e2 = (cluster.nodes[n] for n in cluster.names)

    async def main():
        async with observer(cluster) as obs:
            ids = [f"k{i}".encode() for i in range(12)]
            for i in ids:
                assert (await jobs.start(obs, i))[0] == OK
                assert await jobs.update(obs, i, A("u1")) == OK
            for i in (b"ko1", b"ko2", b"ko3"):
                assert (await jobs.otp_start(obs, i))[0] == OK
            for i in (b"ko1", b"ko2", b"ko3"):
                await wait_for_async(lambda: jobs.check_results(obs, i), lambda v: v == b"results of " + i)
            held = await holdings(obs, cluster.names)
            assert {n for i in ids for n in held[i]} == set(cluster.names)
            every = ids + [b"ko1", b"ko2", b"ko3"]

            # kill -9 the first Elixir node: the Python node (its replica holder) adopts its jobs
            on_e1 = [i for i in every if held[i] == [e1.name]]
            assert on_e1
            e1.kill()
            live = [p1.name, e2.name]

            async def once_each() -> bool:
                h = await holdings(obs, live)
                return all(len(h.get(i, [])) == 1 for i in every)

            await wait_for_async(once_each, bool, timeout=10)
            held = await holdings(obs, live)
            assert {held[i][0] for i in on_e1} == {p1.name}, held
            for i in ids:
                assert await jobs.get_state(obs, i) == [A("u1"), i]
                assert await jobs.update(obs, i, A("u2")) == OK
            for i in (b"ko1", b"ko2", b"ko3"):
                assert await ev(e2, f"Job.Otp.check_results({ex_str(i.decode())})") == b"results of " + i

            # SIGKILL the Python node: the last (Elixir) node runs everything, once
            held = await holdings(obs, live)
            assert any(held[i] == [p1.name] for i in every)
            p1.kill()
            live = [e2.name]
            await wait_for_async(once_each, bool, timeout=10)
            for i in ids:
                assert await ev(e2, f"Job.finish({ex_str(i.decode())})") == [A("u2"), A("u1"), i]
            assert await jobs.finish(obs, ids[0]) == (ERROR, A("no_such_job"))  # after missing_grace
            for i in (b"ko1", b"ko2", b"ko3"):
                assert await jobs.check_results(obs, i) == b"results of " + i

    run(main, timeout=120)


# -- the client path's OpId and a stopping host (Python host fixes) ------------------------------
class OldHost(GenServer):
    """A ``pynode_jobs`` that predates ``op [Id, Request, OpId]``: it answers
    ``{error, {unknown_client_op, op, 3}}`` to it and ``ok`` to a named ``update``."""

    async def init(self, *args: Any) -> None:
        self.calls: list[Any] = []

    async def handle_call(self, request: Any, from_: Any) -> Any:
        self.calls.append(request)
        if request[:2] == (A("client"), A("op")) and len(request[2]) == 3:
            return (ERROR, (A("unknown_client_op"), A("op"), 3))
        return OK


def test_client_path_sends_its_op_id_and_falls_back_for_an_old_host():
    async def main():
        old = Node(unique_name("o") + "@localhost", test_cookie())
        old.config = {"host_jobs": False}
        await old.start()
        cl = Node(unique_name("q") + "@localhost", test_cookie())
        cl.config = {"host_jobs": False}
        await cl.start()
        try:
            host = await OldHost.start(old, name=jobs.HOST_NAME)
            assert await cl.dist.connect(old.name)
            assert await jobs.update(cl, b"j", A("e"), via="client") == OK
            (c, op, args), legacy = host.calls
            assert (c, op, args[:2]) == (A("client"), A("op"), [b"j", (UPDATE, A("e"))])
            assert legacy == (A("client"), UPDATE, [b"j", A("e")])
        finally:
            await cl.stop()
            await old.stop()

    run(main, timeout=30)


def test_stopping_python_host_leaves_new_client_calls_and_finishes_running_ones():
    async def main():
        conf = {"missing_grace": 800, "work_ms": 300}
        a = Node(unique_name("a") + "@localhost", test_cookie())
        a.config = dict(conf)
        b = Node(unique_name("b") + "@localhost", test_cookie())
        b.config = dict(conf)
        cl = Node(unique_name("q") + "@localhost", test_cookie())
        cl.config = dict(conf, host_jobs=False)
        for nd in (a, b, cl):
            await nd.start()
        try:
            assert await b.dist.connect(a.name) and await cl.dist.connect(a.name) and await cl.dist.connect(b.name)
            await wait_for(lambda: len(cl.registry.lookup_pids(HOST_KEY)) == 2, what="2 hosts")
            host_a = (A(jobs.HOST_NAME), a.name)
            # a client operation already running on a (it waits missing_grace for a job that
            # does not exist) is answered even though a is asked to stop meanwhile
            running = asyncio.ensure_future(cl.call(host_a, (A("client"), A("get_state"), [b"none"]), 10))
            await wait_for(lambda: a.jobs.client_workers, what="a client worker on a")
            stopping = asyncio.ensure_future(a.stop())
            await wait_for(lambda: a.jobs.stopping, what="a stopping")
            # a new client call to the stopping host is left unanswered: it ends with the node
            with pytest.raises(CallError) as e:
                await cl.call(host_a, (A("client"), A("start"), [A("Job"), b"late", []]), 10)
            assert jobs.retryable(e.value.reason), e.value.reason
            assert await running == (ERROR, A("no_such_job"))
            await stopping
            # nothing was started by the unanswered call
            assert cl.registry.where(job_key(b"late")) == A("undefined")
            r = await jobs.start(cl, b"late", via="client")
            assert r[0] == OK, r
            await wait_for(lambda: cl.registry.where(job_key(b"late")) == r[1], what="the late job's name")
        finally:
            for nd in (cl, b, a):
                await nd.stop()

    run(main, timeout=30)


# -- rolling deploy ----------------------------------------------------------------------------
_EX_CLIENT = """
nodes = NODES
run = fn run, st ->
  receive do
    :stop ->
      errors = st.errors
      results =
        for {id, acked} <- st.live do
          r = Job.finish(id)
          if r == acked ++ [id], do: :ok, else: {:finish_mismatch, id, acked ++ [id], r}
        end
      bad = Enum.reject(results, &(&1 == :ok))
      :persistent_term.put(:rolling_result, %{ops: st.ops, jobs: st.next, errors: errors ++ bad})
  after
    0 ->
      Enum.each(nodes, &Node.connect/1)
      st = %{st | ops: st.ops + 1}
      :ets.insert(:rolling, {:ops, st.ops})
      st =
        cond do
          map_size(st.live) < 4 ->
            id = "e#{st.next}"
            case Job.start(id) do
              {:ok, pid} when is_pid(pid) -> %{st | live: Map.put(st.live, id, []), next: st.next + 1}
              other -> %{st | errors: [{:start, id, other} | st.errors], next: st.next + 1}
            end
          rem(st.ops, 7) == 0 ->
            {id, acked} = Enum.max_by(st.live, fn {_, a} -> length(a) end)
            r = Job.finish(id)
            st = %{st | live: Map.delete(st.live, id)}
            if r == acked ++ [id], do: st, else: %{st | errors: [{:finish_mismatch, id, acked ++ [id], r} | st.errors]}
          true ->
            ids = Map.keys(st.live)
            id = Enum.at(ids, rem(st.ops, length(ids)))
            case Job.update(id, st.ops) do
              :ok -> %{st | live: Map.update!(st.live, id, &[st.ops | &1])}
              other -> %{st | errors: [{:update, id, other} | st.errors]}
            end
        end
      run.(run, st)
  end
end
pid = spawn(fn ->
  :ets.new(:rolling, [:named_table, :public])
  run.(run, %{live: %{}, next: 0, ops: 0, errors: []})
end)
Process.register(pid, :rolling_client)
:ok
"""


class PyClient:
    """A Python client that keeps starting, updating, finishing and checking jobs, and
    records every acknowledged update; ``errors`` lists every answer it had to handle."""

    def __init__(self, obs: Node, prefix: str, via: str | None) -> None:
        self.obs, self.prefix, self.via = obs, prefix, via
        self.live: dict[bytes, list[Any]] = {}
        self.errors: list[Any] = []
        self.ops = 0
        self.next = 0
        self.otp: list[bytes] = []
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        obs, via = self.obs, self.via
        while not self.stop.is_set():
            self.ops += 1
            if len(self.live) < 4:
                jid = f"{self.prefix}{self.next}".encode()
                self.next += 1
                if self.next % 5 == 0:  # now and then a Job.Otp, checked at the end
                    r = await jobs.otp_start(obs, jid, via=via)
                    if not (type(r) is tuple and r[0] == OK):
                        self.errors.append(("otp_start", jid, r))
                    else:
                        self.otp.append(jid)
                    continue
                r = await jobs.start(obs, jid, via=via)
                if type(r) is tuple and r[0] == OK and type(r[1]) is Pid:
                    self.live[jid] = []
                else:
                    self.errors.append(("start", jid, r))
            elif self.ops % 7 == 0:
                jid = max(self.live, key=lambda k: len(self.live[k]))
                await self._finish(jid)
            else:
                ids = sorted(self.live)
                jid = ids[self.ops % len(ids)]
                r = await jobs.update(obs, jid, self.ops, via=via)
                if r == OK:
                    self.live[jid].insert(0, self.ops)
                else:
                    self.errors.append(("update", jid, r))
                if self.ops % 11 == 0 and self.otp:
                    o = self.otp[self.ops % len(self.otp)]
                    r = await jobs.check_results(obs, o, via=via)
                    if r not in (None, b"results of " + o):
                        self.errors.append(("check_results", o, r))

    async def _finish(self, jid: bytes) -> None:
        acked = self.live.pop(jid)
        r = await jobs.finish(self.obs, jid, via=self.via)
        if r != acked + [jid]:
            self.errors.append(("finish_mismatch", jid, acked + [jid], r))

    async def done(self) -> None:
        self.stop.set()
        await self.task
        for jid in sorted(self.live):
            await self._finish(jid)
        for o in self.otp:
            r = await wait_for_async(lambda: jobs.check_results(self.obs, o, via=self.via), lambda v: v is not None)
            if r != b"results of " + o:
                self.errors.append(("otp_results", o, r))


@pytest.mark.parametrize("spec", ["epe", "pep"])
def test_rolling_restart_of_every_node_loses_and_duplicates_nothing(mixed, spec):
    cluster = mixed(spec)
    cluster.start_all()
    c1 = cluster.client_only_elixir()

    async def main():
        async with observer(cluster) as obs:
            nodes = "[" + ", ".join(f":{ex_str(n)}" for n in cluster.names) + "]"
            await ev(c1, _EX_CLIENT.replace("NODES", nodes))
            clients = [PyClient(obs, "pc", "client"), PyClient(obs, "pl", None)]

            async def progress(n: int) -> None:
                base_ex = await ev(c1, OPS_EX)
                base_py = [c.ops for c in clients]
                await ex_until(c1, OPS_EX, lambda v: v >= base_ex + n, "Elixir client progress")
                await wait_for(lambda: all(c.ops >= b + n for c, b in zip(clients, base_py)) or any(c.task.done() for c in clients),
                               what="Python clients' progress")

            await progress(20)
            for idx, name in enumerate(cluster.names):
                old = cluster.nodes[name]
                rc = await asyncio.to_thread(old.stop, 30)
                assert rc == 0, old.tail()
                await progress(10)  # the clients go on with one node missing
                await asyncio.to_thread(cluster.start_one, idx)
                await settled(obs, cluster, 3)
                await progress(20)
            for c in clients:
                assert not c.task.done() or c.task.exception() is None
                await c.done()
            await ev(c1, "send(:rolling_client, :stop)")
            ex_result = await ex_until(c1, ":persistent_term.get(:rolling_result, nil)", lambda v: v is not None,
                                       "the Elixir client's result", timeout=60)
            assert ex_result[A("errors")] == [], f"{ex_result}\n{cluster.tails()}"
            assert ex_result[A("ops")] > 60
            for c in clients:
                assert c.errors == [], f"{c.prefix}: {c.errors[:5]}\n{cluster.tails()}"
                assert c.ops > 60
            # nothing left behind but the Job.Otp jobs, each once
            held = await holdings(obs, cluster.names)
            otp = {o for c in clients for o in c.otp}
            assert set(held) == otp, held
            assert all(len(v) == 1 for v in held.values()), held

    run(main, timeout=170)
