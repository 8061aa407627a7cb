"""Jobs benchmark: background jobs on a mixed Elixir/Python cluster beside an all-Elixir one.

Run from the repository root::

    .venv/bin/python bench/jobs_bench.py            # full run, 2-3 minutes
    .venv/bin/python bench/jobs_bench.py --quick    # about 40 s, smaller counts
    .venv/bin/python bench/jobs_bench.py --profile  # Python hosts under cProfile (CPU clock)
    .venv/bin/python bench/jobs_bench.py --only kill-mixed-E1,stop --jobs 3000 --clients 32

Theory of operation. Every figure is measured on a *mixed* cluster of three job hosts, one
Elixir node E1 (the mix_compat project, so ``Pynode.Jobs.Host`` runs) and two Python nodes
P1, P2 (``python -m pynode`` subprocesses, each with its own event loop, as deployed), and on
an *all-Elixir* cluster of three mix_compat nodes E1, E2, E3. A fresh cluster is started for
every scenario (so no scenario inherits jobs, replicas or a half-dead node from another) and
killed afterwards. Settings on every host: ``replicas`` 1, ``work_ms`` ``--work-ms`` (50).

Two client nodes sit outside the hosts:

- CE, an ``elixir`` node that has the mix_compat code on its path and runs only the registry
  (``Pynode.Registry.Impl``), no job host: ``Job.start/1`` and friends read the registry
  locally, as on any Elixir node of the cluster. It runs the compiled module
  :data:`EX_SOURCE` (``Code.compile_string``, not ``eval``), and it is also the observer of
  the handoff and kill scenarios, since a BEAM loop over ``Pynode.Registry.where/1`` (an ETS
  read) costs little and lags little. ``BeamNode.eval`` blocks, so it runs in a worker thread.
- CP, a Python node in this process (uvloop when installed) with ``host_jobs`` off: it has a
  registry, so ``pynode.jobs`` reads it locally too. It joins only for its own rows.

Scenarios:

1. *throughput*: K clients (``--clients``, 16), Elixir Tasks on CE or asyncio tasks on CP,
   each taking every K-th index: N ``Job.start`` (kind ``'Job'``), then 2N ``Job.update`` spread
   over those N jobs, then N ``Job.finish`` (which also leaves the cluster empty for the
   next client). ops/s = ops / wall time of the whole batch, median of ``--repeat`` (3)
   batches. Between batches the client waits until its registry mirror lists all N names
   (propagation is not what is timed). A warm-up
   of 64 jobs runs first on each client. Host CPU time (``/proc/PID/stat``) per operation is
   reported per language.
2. *graceful stop*: CE starts ``--jobs`` (1,000) ``'Job.Otp'`` jobs, round-robin over the
   three hosts, and waits until every one has its results. Then one host is stopped the way
   an operator would (a Python node: SIGTERM to ``python -m pynode``; an Elixir node:
   ``:init.stop()``, which stops ``:available_processes`` and then ``:pynode``, and runs the host's handoff). The
   figure is the time from the signal to the first moment CE's registry resolves every job
   id to a pid on a surviving host ("every job runs elsewhere"); also shown: when the
   node's OS process exited.
3. *kill -9*: the same 1,000 jobs; one host gets SIGKILL (``Popen.kill`` / ``BeamNode.kill``).
   The figure is the time from the kill to the moment every job id resolves to a pid on a
   surviving host (the replica holders have adopted them); also shown: when CE's registry
   had purged the dead node's names (its ``nodedown``).

4. *run kinds* (``--only run``): ``--run-jobs`` (1,000) jobs of simulated I/O, each
   ``--run-steps`` (5) steps of an ``await`` of ``--step-ms`` (20) ms sleep then a checkpoint
   (acknowledged once replicated), started by CE with ``Pynode.Jobs.start/3`` (K Tasks), on
   the mixed cluster as the Python run kind ``py_steps`` (:class:`PySteps`, defined here and
   loaded by the Python hosts with ``--import bench.jobs_bench``; the Elixir host does not
   know it, so P1 and P2 run them) and on the all-Elixir cluster as ``Job.Steps`` (the same
   shape, on E1-E3). Figures: jobs/s (N over the time from the first start to the moment CE
   read the last job's results), the latency of each checkpoint as ``run`` sees it (p50,
   p99 over every checkpoint, measured inside ``run`` and returned in its results), then
   the *move*: N long jobs (a step every ``--move-step-ms``, 2000 ms) are started on one
   host (P2 / E3) by its own ``{start, ...}`` call, and that host is stopped (SIGTERM /
   ``:init.stop()``); the figure is the time from the signal until every job id resolves
   to a survivor, and how many then answer ``status`` ``running`` there.

After 2 and 3, CE calls ``Job.Otp.check_results/1`` on every id: each must answer
``"results of <id>"`` (the state survived the move); the count that did is printed.
Clock: CE stamps ``:os.system_time(:microsecond)``, this process ``time.time_ns()``, one
clock on one machine. CE polls every ``--poll-ms`` (5) ms, the resolution of 2 and 3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import io
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from erl_interop.terms import Atom, Pid  # noqa: E402
from pynode import jobs  # noqa: E402
from pynode.jobs import HOST_KEY, job_key  # noqa: E402
from pynode.node import Node  # noqa: E402
from pynode.testing import BeamNode, mix_build_root, unique_name  # noqa: E402

COOKIE = "jobsbench"
MIX = os.path.join(_ROOT, "mix_compat")
EBIN = str(mix_build_root(MIX) / "dev" / "lib" / "available_processes" / "ebin")  # the release's own build
PYNODE_EBIN = str(mix_build_root(MIX) / "dev" / "lib" / "pynode" / "ebin")  # its dependency's (elixir/)
OK = Atom("ok")
CLK_TCK = os.sysconf("SC_CLK_TCK")

EX_SOURCE = r"""
defmodule JobsBench do
  @moduledoc false
  alias Pynode.Registry

  def id(prefix, i), do: prefix <> "-" <> Integer.to_string(i)

  # fun.(i) for i in 0..n-1, by k processes (process w takes i = w, w + k, ...).
  # {elapsed_us, errors, first_error}
  def par(n, k, fun) do
    parent = self()
    t0 = System.monotonic_time(:microsecond)
    pids =
      for w <- 0..(k - 1) do
        spawn_link(fn ->
          r =
            if w > n - 1 do
              {0, nil}
            else
              Enum.reduce(w..(n - 1)//k, {0, nil}, fn i, {c, first} ->
                case fun.(i) do
                  :ok -> {c, first}
                  other -> {c + 1, first || other}
                end
              end)
            end
          send(parent, {:par_done, self(), r})
        end)
      end
    rs = for p <- pids, do: (receive do {:par_done, ^p, r} -> r end)
    us = System.monotonic_time(:microsecond) - t0
    {us, Enum.sum(for {c, _} <- rs, do: c), Enum.find_value(rs, fn {_, f} -> f end)}
  end

  def starts(prefix, n, k), do: par(n, k, fn i -> ok_pid(Job.start(id(prefix, i))) end)
  def otp_starts(prefix, n, k), do: par(n, k, fn i -> ok_pid(Job.Otp.start(id(prefix, i))) end)

  def updates(prefix, jobs, n, k),
    do: par(n, k, fn i -> Job.update(id(prefix, rem(i, jobs)), i) end)

  def finishes(prefix, n, k) do
    par(n, k, fn i ->
      case Job.finish(id(prefix, i)) do
        l when is_list(l) -> :ok
        other -> other
      end
    end)
  end

  def checks(prefix, n, k) do
    par(n, k, fn i ->
      j = id(prefix, i)
      want = Pynode.Jobs.results_binary(j)
      case Job.Otp.check_results(j) do
        ^want -> :ok
        other -> {:not_ready, j, other}
      end
    end)
  end

  defp ok_pid({:ok, pid}) when is_pid(pid), do: :ok
  defp ok_pid(other), do: other

  def key(prefix, i), do: Pynode.Jobs.key(id(prefix, i))

  # How many of the n names the local registry resolves, and where: %{node => count}.
  def placement(prefix, n) do
    Enum.frequencies(
      for i <- 0..(n - 1) do
        case Registry.where(key(prefix, i)) do
          pid when is_pid(pid) -> node(pid)
          _ -> :missing
        end
      end
    )
  end

  # Poll until every name resolves to a pid on one of `survivors`. Returns
  # {t_gone, t_all, polls, max_missing, last_placement}: t_gone is the first poll at which
  # no name resolved to `victim` (nil: never), t_all the first at which all were on
  # survivors (nil: timed out); times are :os.system_time(:microsecond).
  def watch(prefix, n, victim, survivors, timeout_ms, poll_ms) do
    keys = for i <- 0..(n - 1), do: key(prefix, i)
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    watch_loop(keys, victim, MapSet.new(survivors), deadline, poll_ms, nil, 0, 0)
  end

  defp watch_loop(keys, victim, surv, deadline, poll_ms, t_gone, polls, max_missing) do
    {on_victim, missing, elsewhere} =
      Enum.reduce(keys, {0, 0, 0}, fn k, {v, m, e} ->
        case Registry.where(k) do
          pid when is_pid(pid) ->
            nd = node(pid)
            cond do
              nd == victim -> {v + 1, m, e}
              MapSet.member?(surv, nd) -> {v, m, e}
              true -> {v, m, e + 1}
            end
          _ -> {v, m + 1, e}
        end
      end)
    now = :os.system_time(:microsecond)
    t_gone = if t_gone == nil and on_victim == 0, do: now, else: t_gone
    max_missing = max(max_missing, missing)
    cond do
      on_victim == 0 and missing == 0 and elsewhere == 0 ->
        {t_gone, now, polls + 1, max_missing, %{}}
      System.monotonic_time(:millisecond) > deadline ->
        {t_gone, nil, polls + 1, max_missing, %{victim: on_victim, missing: missing, elsewhere: elsewhere}}
      true ->
        Process.sleep(poll_ms)
        watch_loop(keys, victim, surv, deadline, poll_ms, t_gone, polls + 1, max_missing)
    end
  end

  # Names with this prefix the local registry knows.
  def count(prefix, n), do: Enum.count(0..(n - 1), fn i -> is_pid(Registry.where(key(prefix, i))) end)

  def hosts, do: Registry.lookup_pids(Pynode.Jobs.host_key()) |> Enum.map(&node/1) |> Enum.sort()

  # Run kinds: starts with placement, or on one host by its own {start, ...} call.
  def run_starts(prefix, n, k, kind, args),
    do: par(n, k, fn i -> ok_pid(Pynode.Jobs.start(kind, id(prefix, i), args)) end)

  def host_starts(prefix, n, k, node, kind, args) do
    par(n, k, fn i ->
      ok_pid(GenServer.call({:pynode_jobs, node}, {:start, kind, id(prefix, i), args}, 30_000))
    end)
  end

  # Waits until every job is done; {us since t0_us (:os.system_time), errors, latencies}.
  def run_wait(prefix, n, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    rs = Enum.map(0..(n - 1), fn i -> wait_done(id(prefix, i), deadline) end)
    t = :os.system_time(:microsecond)
    errs = Enum.count(rs, &(not is_list(&1)))
    {t, errs, Enum.find(rs, &(not is_list(&1))), rs |> Enum.filter(&is_list/1) |> Enum.concat()}
  end

  defp wait_done(j, deadline) do
    case Pynode.Jobs.results(j) do
      {:ok, %{checkpoint_us: l}} -> l
      {:ok, other} -> {:no_latencies, j, other}
      {:error, :not_done} ->
        if System.monotonic_time(:millisecond) > deadline do
          {:timeout, j}
        else
          Process.sleep(5)
          wait_done(j, deadline)
        end
      other -> {j, other}
    end
  end

  # How many jobs answer status running on one of `survivors`.
  def running_on(prefix, n, k, survivors) do
    {_, bad, first} =
      par(n, k, fn i ->
        case Pynode.Jobs.status(id(prefix, i)) do
          {:ok, %{status: :running, node: nd}} -> if nd in survivors, do: :ok, else: {:on, nd}
          other -> other
        end
      end)
    {n - bad, first}
  end
end
:ok
"""


#: ``python -c`` wrapper for ``--profile``: runs ``python -m pynode`` with a cProfile that
#: SIGUSR1 switches on and SIGUSR2 switches off, dumping the stats to ``<out>.<n>`` (n = 1, 2,
#: ...); a window still open at exit is dumped too.
PROF_WRAPPER = r"""
import atexit, cProfile, os, signal, sys
out = sys.argv[1]
sys.argv = ["pynode"] + sys.argv[2:]
import time
pr = cProfile.Profile(time.process_time)
st = {"on": False, "n": 0}
def on(*_):
    if not st["on"]:
        st["on"] = True
        pr.enable()
def off(*_):
    if st["on"]:
        pr.disable()
        st["on"] = False
        st["n"] += 1
        pr.dump_stats(f"{out}.tmp")
        os.rename(f"{out}.tmp", f"{out}.{st['n']}")
        pr.clear()
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
atexit.register(off)
from pynode.cli import main
raise SystemExit(main())
"""


# --- nodes ----------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of process ``pid``, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class Host:
    """One job host of a cluster: an Elixir mix_compat node or a ``python -m pynode`` node."""

    lang: str
    name: str
    label: str

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def cpu(self) -> float:
        return cpu_s(self.pid)


class ExHost(Host):
    lang = "elixir"

    def __init__(self, label: str, work_ms: int) -> None:
        self.label = label
        self.name = unique_name("jb" + label) + "@localhost"
        self.beam = BeamNode.start(self.name, COOKIE, lang="elixir", mix_project=MIX, timeout=60)
        self.beam.eval(f"Application.put_env(:pynode, :work_ms, {work_ms}); "
                       "Application.put_env(:pynode, :replicas, 1)")

    @property
    def pid(self) -> int:
        return self.beam.proc.pid

    def stop(self) -> None:
        """``:init.stop()``: the application stops, its host hands every job off, the node exits."""
        self.beam.stop(timeout=120)

    def kill(self) -> None:
        self.beam.kill()


class PyHost(Host):
    lang = "python"

    def __init__(self, label: str, config_path: str, log_dir: str, profile: bool = False) -> None:
        self.label = label
        self.name = unique_name("jb" + label) + "@localhost"
        self.log_path = os.path.join(log_dir, self.name.split("@")[0] + ".log")
        self.prof_path = os.path.join(log_dir, self.name.split("@")[0] + ".prof")
        self.prof_n = 0
        self.log = open(self.log_path, "wb")
        args = ["--sname", self.name, "--cookie", COOKIE, "--config", config_path, "--import", "bench.jobs_bench"]
        cmd = [sys.executable, "-c", PROF_WRAPPER, self.prof_path, *args] if profile else [sys.executable, "-m", "pynode", *args]
        self.proc = subprocess.Popen(cmd, cwd=_ROOT, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.profile = profile

    def prof_on(self) -> None:
        if self.profile and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def prof_off(self, timeout: float = 20.0) -> str | None:
        """Close the profile window; the stats file it wrote (None when not profiling)."""
        if not self.profile:
            return None
        self.prof_n += 1
        path = f"{self.prof_path}.{self.prof_n}"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return path

    def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        marker = f"pynode {self.name} up".encode()
        while True:
            with open(self.log_path, "rb") as f:
                if marker in f.read():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 20) -> str:
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM: the node runs its host's handoff, then exits."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


@dataclass
class Cluster:
    kind: str  # "mixed" | "elixir"
    hosts: list[Host]

    def by_label(self, label: str) -> Host:
        return next(h for h in self.hosts if h.label == label)

    def kill_all(self) -> None:
        for h in self.hosts:
            h.kill()


def ex_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def atoms(names: list[str]) -> str:
    return "[" + ", ".join(f":{ex_str(n)}" for n in names) + "]"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: str) -> None:
        self.args = args
        self.tmp = tmp
        self.pool = ThreadPoolExecutor(8)
        self.config_path = os.path.join(tmp, "sys.config")
        with open(self.config_path, "w") as f:
            f.write(f"[{{pynode, [{{work_ms, {args.work_ms}}}, {{replicas, 1}}]}}].\n")
        self.ce: BeamNode | None = None

    # -- helpers ------------------------------------------------------------------------------
    async def ev(self, beam: BeamNode, src: str, timeout: float = 120.0) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: beam.eval(src, timeout))

    async def ce_ev(self, src: str, timeout: float = 120.0) -> Any:
        assert self.ce is not None
        return await self.ev(self.ce, src, timeout)

    async def until(self, what: str, fn: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await fn():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    def start_ce(self) -> None:
        self.ce = BeamNode.start(unique_name("jbCE") + "@localhost", COOKIE, lang="elixir", args=["-pa", EBIN, PYNODE_EBIN], timeout=60)
        r = self.ce.eval("{:ok, _} = Pynode.Registry.Impl.start_link([]); :ok")
        assert r == OK, r
        r = self.ce.eval(f"Code.compile_string({ex_str(EX_SOURCE)}); :ok", timeout=60)
        assert r == OK, r

    # -- clusters -----------------------------------------------------------------------------
    async def start_cluster(self, kind: str) -> Cluster:
        loop = asyncio.get_running_loop()
        labels = ["E1", "P1", "P2"] if kind == "mixed" else ["E1", "E2", "E3"]
        futs = []
        py: list[PyHost] = []
        for lb in labels:
            if lb.startswith("E"):
                futs.append(loop.run_in_executor(self.pool, ExHost, lb, self.args.work_ms))
            else:
                h = PyHost(lb, self.config_path, self.tmp, profile=self.args.profile)
                py.append(h)
        for h in py:
            await loop.run_in_executor(self.pool, h.wait_up)
        ex = await asyncio.gather(*futs)
        hosts: list[Host] = sorted([*ex, *py], key=lambda h: labels.index(h.label))
        cl = Cluster(kind, hosts)
        names = [h.name for h in hosts]
        for n in names:
            assert await self.ce_ev(f"Node.connect(:{ex_str(n)})") is True, n
        want = sorted(names)

        async def meshed() -> bool:
            if [str(x) for x in await self.ce_ev("JobsBench.hosts()")] != want:
                return False
            for h in hosts:
                if isinstance(h, ExHost):
                    v = await self.ev(h.beam, "Pynode.Registry.lookup_pids(Pynode.Jobs.host_key()) |> length()")
                    if v != len(hosts):
                        return False
                else:
                    info = await self.ce_ev(f"GenServer.call({{:pynode, :{ex_str(h.name)}}}, :info)")
                    conn = {str(x) for x in info[Atom("connected_nodes")]}
                    if not set(want) - {h.name} <= conn:
                        return False
            return True

        await self.until(f"{kind} cluster mesh", meshed, 60)
        return cl

    async def stop_cluster(self, cl: Cluster) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, cl.kill_all)
        await self.until("CE alone", self._ce_alone, 30)

    async def _ce_alone(self) -> bool:
        return await self.ce_ev("JobsBench.hosts()") == []

    def profile(self, res: "Results", h: Host, title: str) -> None:
        """Close ``h``'s profile window and keep its top functions for the report."""
        if not isinstance(h, PyHost):
            return
        path = h.prof_off()
        if path is None:
            if h.profile:
                res.profiles.append(f"profile of {title}: no stats written")
            return
        out = io.StringIO()
        try:
            st = pstats.Stats(path, stream=out)
        except Exception as e:  # a profile is a diagnostic: never fail the run for it
            res.profiles.append(f"profile of {title}: unreadable ({e!r})")
            return
        st.sort_stats("tottime").print_stats(self.args.profile_lines)
        text = out.getvalue()
        body = text[text.find("   ncalls"):] if "   ncalls" in text else text
        res.profiles.append(f"profile of {title}: {st.total_tt:.2f} s CPU (process time) in the window\n{body.rstrip()}")

    # -- throughput ---------------------------------------------------------------------------
    async def throughput(self, kind: str, res: "Results") -> None:
        a = self.args
        cl = await self.start_cluster(kind)
        try:
            # Elixir client (CE), with CP not connected yet.
            await self._tp_ex(cl, "wexa", 64, res, timed=False)
            py_hosts = [h for h in cl.hosts if isinstance(h, PyHost)]
            for h in py_hosts[:1]:
                h.prof_on()
            for rep in range(a.repeat):
                await self._tp_ex(cl, f"tpex{rep}", a.n, res, timed=True)
            for h in py_hosts[:1]:
                self.profile(res, h, f"{h.label} (Python host) during the Elixir client's throughput batches "
                             f"({a.repeat} x {a.n:,} starts, {2 * a.n:,} updates, {a.n:,} finishes, on 3 hosts)")
            cp = Node(unique_name("jbCP") + "@localhost", COOKIE)
            cp.config = {"host_jobs": False, "work_ms": a.work_ms}
            await cp.start()
            try:
                assert await cp.ping(cl.hosts[0].name) == Atom("pong")
                await self.until("CP sees every host", self._py_sees(cp, len(cl.hosts)), 30)
                await self._tp_py(cl, cp, "wpya", 64, res, timed=False)
                for rep in range(a.repeat):
                    await self._tp_py(cl, cp, f"tppy{rep}", a.n, res, timed=True)
            finally:
                await cp.stop()
        finally:
            await self.stop_cluster(cl)

    def _py_sees(self, cp: Node, n: int) -> Callable[[], Awaitable[bool]]:
        async def f() -> bool:
            return len(cp.registry.lookup_pids(HOST_KEY)) == n
        return f

    def _cpu(self, cl: Cluster) -> dict[str, float]:
        out = {"python": 0.0, "elixir": 0.0}
        for h in cl.hosts:
            out[h.lang] += h.cpu()
        assert self.ce is not None
        out["ce"] = cpu_s(self.ce.pid)
        out["cp"] = time.process_time()
        return out

    def _record(self, res: "Results", cl: Cluster, client: str, op: str, ops: int, secs: float, errs: int,
                first: Any, cpu0: dict[str, float]) -> None:
        cpu1 = self._cpu(cl)
        who = "ce" if client == "elixir" else "cp"
        res.tp_cpu.setdefault((cl.kind, client, op, "client"), []).append((cpu1[who] - cpu0[who]) / ops)
        res.tp.setdefault((cl.kind, client, op), []).append((ops / secs, errs, first))
        for lang in ("python", "elixir"):
            if any(h.lang == lang for h in cl.hosts):
                res.tp_cpu.setdefault((cl.kind, client, op, lang), []).append((cpu1[lang] - cpu0[lang]) / ops)
        if errs:
            print(f"    {cl.kind} {client} {op}: {errs} errors, first {first!r}", flush=True)

    async def _tp_ex(self, cl: Cluster, prefix: str, n: int, res: "Results", timed: bool) -> None:
        k = self.args.clients
        p = ex_str(prefix)
        steps = [
            ("start", n, f"JobsBench.starts({p}, {n}, {k})"),
            ("update", 2 * n, f"JobsBench.updates({p}, {n}, {2 * n}, {k})"),
            ("finish", n, f"JobsBench.finishes({p}, {n}, {k})"),
        ]
        for op, ops, src in steps:
            if op != "start":
                await self.until(f"CE sees {n} names", self._ce_count(prefix, n), 30)
            cpu0 = self._cpu(cl)
            us, errs, first = await self.ce_ev(src, 300)
            if timed:
                self._record(res, cl, "elixir", op, ops, us / 1e6, errs, first, cpu0)
                print(f"    {cl.kind} Elixir client {op}: {ops / (us / 1e6):,.0f}/s", flush=True)

    def _ce_count(self, prefix: str, n: int) -> Callable[[], Awaitable[bool]]:
        async def f() -> bool:
            return await self.ce_ev(f"JobsBench.count({ex_str(prefix)}, {n})") == n
        return f

    async def _tp_py(self, cl: Cluster, cp: Node, prefix: str, n: int, res: "Results", timed: bool) -> None:
        k = self.args.clients

        def jid(i: int) -> str:
            return f"{prefix}-{i}"

        async def start(i: int) -> Any:
            r = await jobs.start(cp, jid(i))
            return OK if type(r) is tuple and r[0] == OK and type(r[1]) is Pid else r

        async def update(i: int) -> Any:
            return await jobs.update(cp, jid(i % n), i)

        async def finish(i: int) -> Any:
            r = await jobs.finish(cp, jid(i))
            return OK if isinstance(r, list) else r

        async def par(count: int, fn: Callable[[int], Awaitable[Any]]) -> tuple[float, int, Any]:
            errs = [0]
            first: list[Any] = []

            async def worker(w: int) -> None:
                for i in range(w, count, k):
                    r = await fn(i)
                    if r != OK:
                        errs[0] += 1
                        if not first:
                            first.append(r)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(k)))
            return time.perf_counter() - t0, errs[0], first[0] if first else None

        keys = [job_key(jid(i).encode()) for i in range(n)]

        async def all_names() -> bool:
            return all(type(cp.registry.where(kk)) is Pid for kk in keys)

        for op, ops, fn in (("start", n, start), ("update", 2 * n, update), ("finish", n, finish)):
            if op != "start":
                await self.until(f"CP sees {n} names", all_names, 30)
            cpu0 = self._cpu(cl)
            secs, errs, first = await par(ops, fn)
            if timed:
                self._record(res, cl, "python", op, ops, secs, errs, first, cpu0)
                print(f"    {cl.kind} Python client {op}: {ops / secs:,.0f}/s", flush=True)

    # -- handoff and kill -9 --------------------------------------------------------------------
    async def disrupt(self, kind: str, victim_label: str, how: str, res: "Results") -> None:
        a = self.args
        n = a.jobs
        cl = await self.start_cluster(kind)
        prefix = f"{how[:2]}{kind[:2]}{victim_label.lower()}"
        p = ex_str(prefix)
        try:
            us, errs, first = await self.ce_ev(f"JobsBench.otp_starts({p}, {n}, {a.clients})", 300)
            assert errs == 0, first
            await self.until("every job has its results", self._all_results(prefix, n), 60)
            place = await self.ce_ev(f"JobsBench.placement({p}, {n})")
            victim = cl.by_label(victim_label)
            on_victim = int(place.get(Atom(victim.name), 0))
            survivors = [h.name for h in cl.hosts if h is not victim]
            loop = asyncio.get_running_loop()
            watch = asyncio.ensure_future(self.ce_ev(
                f"JobsBench.watch({p}, {n}, :{ex_str(victim.name)}, {atoms(survivors)}, {int(a.timeout * 1000)}, {a.poll_ms})",
                a.timeout + 30))
            await asyncio.sleep(0.05)  # let CE's first poll see the cluster as it is
            prof = [h for h in cl.hosts if isinstance(h, PyHost)]
            for h in prof:
                h.prof_on()
            t0 = time.time_ns() // 1000
            cpu0 = {h.name: h.cpu() for h in cl.hosts if h is not victim}
            if how == "stop":
                exit_fut = loop.run_in_executor(self.pool, lambda: (victim.stop(), time.time_ns() // 1000)[1])
            else:
                victim.kill()
                exit_fut = None
            t_gone, t_all, polls, max_missing, left = await watch
            t_exit = await exit_fut if exit_fut is not None else t0
            what = {"stop": "graceful stop", "kill": "kill -9"}[how]
            for h in prof:
                role = "the stopped node, from SIGTERM to its exit" if h is victim else \
                    "a survivor, from the signal until every job ran on a survivor"
                if h is victim and how == "kill":
                    continue
                await loop.run_in_executor(None, self.profile, res, h,
                                           f"{h.label} in {kind} {what} of {victim_label}: {role}")
            cpu = {h.name: h.cpu() - cpu0[h.name] for h in cl.hosts if h is not victim}
            cl.hosts = [h for h in cl.hosts if h is not victim]
            _, bad, bad_first = await self.ce_ev(f"JobsBench.checks({p}, {n}, {a.clients})", 300)
            row = Disrupt(
                kind=kind, victim=victim_label, victim_lang=victim.lang, how=how, jobs=n, on_victim=on_victim,
                all_s=(t_all - t0) / 1e6 if t_all else None,
                gone_s=(t_gone - t0) / 1e6 if t_gone else None,
                exit_s=(t_exit - t0) / 1e6 if how == "stop" else None,
                max_missing=max_missing, checked_ok=n - bad, first_bad=bad_first, left=left,
                survivor_cpu={next(h.label for h in cl.hosts if h.name == nm): c for nm, c in cpu.items()},
            )
            res.disrupt.append(row)
            print(f"    {kind} {how} {victim_label} ({on_victim} jobs there): all running on survivors after "
                  f"{row.all_s if row.all_s is not None else 'TIMEOUT'} s; check_results ok {n - bad}/{n}", flush=True)
            if bad:
                print(f"      first bad: {bad_first!r}", flush=True)
        finally:
            await self.stop_cluster(cl)

    # -- run kinds ------------------------------------------------------------------------------
    async def run_kinds(self, kind: str, res: "Results") -> None:
        a = self.args
        n, k = a.run_jobs, a.clients
        cl = await self.start_cluster(kind)
        rk = ":py_steps" if kind == "mixed" else ':"Job.Steps"'
        try:
            p = ex_str(f"rk{kind[:2]}")
            t0 = await self.ce_ev(":os.system_time(:microsecond)")
            _, errs, first = await self.ce_ev(f"JobsBench.run_starts({p}, {n}, {k}, {rk}, [{a.run_steps}, {a.step_ms}, 0, true])",
                                              300)
            t_end, werrs, wfirst, lat = await self.ce_ev(f"JobsBench.run_wait({p}, {n}, {int(a.timeout * 1000)})",
                                                         a.timeout + 60)
            if isinstance(lat, (bytes, str)):  # a list of small integers travels as a string
                lat = [ord(x) if isinstance(x, str) else x for x in lat]
            jobs_s = n / ((t_end - t0) / 1e6)
            print(f"    {kind} run kind: {jobs_s:,.0f} jobs/s, checkpoint p50 {_pct(lat, 50):,.0f} µs "
                  f"p99 {_pct(lat, 99):,.0f} µs ({len(lat)} checkpoints, {errs + werrs} errors)", flush=True)
            # the move: n long jobs on the victim, which is then stopped
            victim = cl.by_label("P2" if kind == "mixed" else "E3")
            survivors = [h.name for h in cl.hosts if h is not victim]
            mp = ex_str(f"mv{kind[:2]}")
            _, merrs, mfirst = await self.ce_ev(
                f"JobsBench.host_starts({mp}, {n}, {k}, :{ex_str(victim.name)}, {rk}, [1000000, {a.move_step_ms}, 0])", 300)
            assert merrs == 0, mfirst

            async def all_there() -> bool:
                pl = await self.ce_ev(f"JobsBench.placement({mp}, {n})")
                return int(pl.get(Atom(victim.name), 0)) == n
            await self.until("every long job on the victim", all_there, 60)
            loop = asyncio.get_running_loop()
            watch = asyncio.ensure_future(self.ce_ev(
                f"JobsBench.watch({mp}, {n}, :{ex_str(victim.name)}, {atoms(survivors)}, {int(a.timeout * 1000)}, {a.poll_ms})",
                a.timeout + 30))
            await asyncio.sleep(0.05)
            t_sig = time.time_ns() // 1000
            exit_fut = loop.run_in_executor(self.pool, victim.stop)
            _t_gone, t_all, _polls, _mm, left = await watch
            await exit_fut
            cl.hosts = [h for h in cl.hosts if h is not victim]
            running, bad = await self.ce_ev(f"JobsBench.running_on({mp}, {n}, {k}, {atoms(survivors)})", 300)
            row = RunRow(kind=kind, jobs=n, jobs_s=jobs_s, errs=errs + werrs, first_err=first or wfirst,
                         ckpt_p50_us=_pct(lat, 50), ckpt_p99_us=_pct(lat, 99), ckpts=len(lat), move_jobs=n,
                         on_victim=n, move_s=(t_all - t_sig) / 1e6 if t_all else None, running_after=running,
                         first_bad=bad if running < n else left or None)
            res.runs.append(row)
            print(f"    {kind} move of {n} running jobs off {victim.label}: {_s(row.move_s)} s; "
                  f"{running}/{n} running on survivors", flush=True)
        finally:
            await self.stop_cluster(cl)

    def _all_results(self, prefix: str, n: int) -> Callable[[], Awaitable[bool]]:
        async def f() -> bool:
            _, bad, _ = await self.ce_ev(f"JobsBench.checks({ex_str(prefix)}, {n}, {self.args.clients})", 120)
            return bad == 0
        return f


# --- the Python run kind of scenario 4 (loaded by the Python hosts: --import bench.jobs_bench) ---
@jobs.job_kind("py_steps")
class PySteps(jobs.RunKind):
    """The twin of Elixir ``Job.Steps``: args ``[Steps, StepMs, FailingAttempts, Timed]``;
    each step awaits a sleep of StepMs then checkpoints the number of steps done; the result
    ``#{steps, attempt}``, with Timed also ``checkpoint_us`` (each checkpoint's latency)."""

    async def run(self, ctx: jobs.RunContext) -> Any:
        steps, step_ms, *rest = ctx.args
        timed = len(rest) > 1 and rest[1] in (True, Atom("true"))
        lat: list[int] = []
        for i in range(int(ctx.state or 0), steps):
            await asyncio.sleep(step_ms / 1000.0)
            t = time.perf_counter_ns()
            await ctx.checkpoint(i + 1)
            lat.append((time.perf_counter_ns() - t) // 1000)
            ctx.progress(done=i + 1, total=steps)
        out: dict[Atom, Any] = {Atom("steps"): steps, Atom("attempt"): ctx.attempt}
        if timed:
            out[Atom("checkpoint_us")] = lat
        return out


def _pct(xs: list[int], p: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]) if s else float("nan")


@dataclass
class RunRow:
    kind: str
    jobs: int
    jobs_s: float
    errs: int
    first_err: Any
    ckpt_p50_us: float
    ckpt_p99_us: float
    ckpts: int
    move_jobs: int
    on_victim: int
    move_s: float | None
    running_after: int
    first_bad: Any


@dataclass
class Disrupt:
    kind: str
    victim: str
    victim_lang: str
    how: str
    jobs: int
    on_victim: int
    all_s: float | None
    gone_s: float | None
    exit_s: float | None
    max_missing: int
    checked_ok: int
    first_bad: Any
    left: Any
    survivor_cpu: dict[str, float]


@dataclass
class Results:
    tp: dict[tuple[str, str, str], list[tuple[float, int, Any]]] = field(default_factory=dict)
    tp_cpu: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    disrupt: list[Disrupt] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)


# --- report ---------------------------------------------------------------------------------


def _rate(v: float) -> str:
    return f"{v / 1e3:,.2f}k" if v >= 1e3 else f"{v:,.0f}"


def _s(v: float | None) -> str:
    return "timeout" if v is None else f"{v:.3f}"


def report(res: Results, a: argparse.Namespace) -> str:
    L: list[str] = []
    L.append(f"throughput: K = {a.clients} concurrent clients; N = {a.n:,} Job.start, {2 * a.n:,} Job.update "
             f"(over those N jobs), N Job.finish (ops/s, median of {a.repeat})")
    head = (f"{'client':<28} {'op':<7} {'mixed 1E+2P':>11} {'all-Elixir':>10} {'mixed/ex':>8}"
            f" | µs CPU/op: {'mixed P1+P2':>11} {'E1':>5} {'client':>6} | {'all-Ex E1-3':>11} {'client':>6}")
    L.append(head)
    L.append("-" * len(head))
    for client, title in (("elixir", f"Elixir node CE, {a.clients} Tasks"), ("python", f"Python node CP, {a.clients} tasks")):
        for op in ("start", "update", "finish"):
            ms = res.tp.get(("mixed", client, op))
            es = res.tp.get(("elixir", client, op))
            if not ms or not es:
                continue
            m = statistics.median(x[0] for x in ms)
            e = statistics.median(x[0] for x in es)

            def c(kind: str, what: str) -> float:
                return statistics.median(res.tp_cpu.get((kind, client, op, what)) or [float("nan")]) * 1e6

            errs = sum(x[1] for x in ms) + sum(x[1] for x in es)
            L.append(f"{title if op == 'start' else '':<28} {op:<7} {_rate(m):>11} {_rate(e):>10} "
                     f"{m / e:>8.2f} | {'':>10} {c('mixed', 'python'):>11,.0f} {c('mixed', 'elixir'):>5,.0f} "
                     f"{c('mixed', 'client'):>6,.0f} | {c('elixir', 'elixir'):>11,.0f} {c('elixir', 'client'):>6,.0f}"
                     + (f"  ({errs} errors)" if errs else ""))
    L.append("")
    L.append(f"graceful stop and kill -9: {a.jobs:,} Job.Otp jobs (work_ms {a.work_ms}, replicas 1) round-robin over "
             f"3 hosts; seconds from the signal (one run each)")
    head = (f"{'cluster':<12} {'event':<22} {'jobs there':>10} {'names off it':>12} {'all running':>11} "
            f"{'node exit':>9} {'vs all-Elixir':>13} {'max missing':>11} {'results ok':>10}")
    L.append(head)
    L.append("-" * len(head))
    base = {(d.how): d.all_s for d in res.disrupt if d.kind == "elixir"}
    for d in res.disrupt:
        ev = f"{'SIGTERM' if d.how == 'stop' and d.victim_lang == 'python' else ':init.stop()' if d.how == 'stop' else 'kill -9'} " \
             f"{d.victim} ({'Py' if d.victim_lang == 'python' else 'Ex'})"
        b = base.get(d.how)
        ratio = f"{b / d.all_s:.2f}" if (b and d.all_s) else "-"
        L.append(f"{('mixed 1E+2P' if d.kind == 'mixed' else 'all-Elixir'):<12} {ev:<22} {d.on_victim:>10} "
                 f"{_s(d.gone_s):>12} {_s(d.all_s):>11} {(_s(d.exit_s) if d.exit_s is not None else '-'):>9} "
                 f"{ratio:>13} {d.max_missing:>11} {d.checked_ok:>5}/{d.jobs:<4}")
        if d.left:
            L.append(f"    not done at the timeout: {d.left!r}")
    L.append("")
    L.append("  survivors' CPU seconds from the signal to 'all running': " + "; ".join(
        f"{d.kind} {d.how} {d.victim}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(d.survivor_cpu.items()))
        for d in res.disrupt))
    L.append("")
    L.append("names off it: CE's registry lists no job on the stopped/killed node (handoff: each job "
             "unregistered; kill: the nodedown purge). all running: every id resolves to a pid on a survivor. "
             "max missing: most ids without a holder at one poll. results ok: Job.Otp.check_results/1 "
             "afterwards. Ratios: mixed/all-Elixir for rates, all-Elixir/mixed for times (below 1: mixed slower).")
    if res.runs:
        L.append("")
        L.append(f"run kinds: {a.run_jobs:,} jobs of {a.run_steps} steps (await a {a.step_ms} ms sleep, then a checkpoint), "
                 f"mixed: Python kind py_steps on P1+P2; all-Elixir: Job.Steps on E1-E3; move: {a.run_jobs:,} running "
                 f"jobs (a step every {a.move_step_ms} ms) off a stopping P2 / E3")
        head = f"{'':<34} {'mixed (Python kind)':>20} {'all-Elixir (BEAM)':>18} {'Python/BEAM':>11}"
        L.append(head)
        L.append("-" * len(head))
        m = next((r for r in res.runs if r.kind == "mixed"), None)
        e = next((r for r in res.runs if r.kind == "elixir"), None)

        def row(title: str, get: Callable[[RunRow], float | None], fmt: str) -> None:
            mv = get(m) if m else None
            evv = get(e) if e else None
            ratio = f"{mv / evv:.2f}" if mv and evv else "-"
            L.append(f"{title:<34} {(format(mv, fmt) if mv is not None else '-'):>20} "
                     f"{(format(evv, fmt) if evv is not None else '-'):>18} {ratio:>11}")
        row("jobs/s", lambda r: r.jobs_s, ",.0f")
        row("checkpoint latency p50 (ms)", lambda r: r.ckpt_p50_us / 1e3, ",.2f")
        row("checkpoint latency p99 (ms)", lambda r: r.ckpt_p99_us / 1e3, ",.2f")
        row("move running jobs off a stop (s)", lambda r: r.move_s, ",.3f")
        for r in res.runs:
            L.append(f"  {r.kind}: {r.ckpts:,} checkpoints, {r.errs} errors"
                     + (f" (first {r.first_err!r})" if r.errs else "")
                     + f"; after the move {r.running_after}/{r.move_jobs} running on survivors"
                     + (f" (first other {r.first_bad!r})" if r.running_after < r.move_jobs else ""))
        L.append("  ratio: the Python figure over the BEAM one (jobs/s: below 1, the mixed cluster is slower; "
                 "latency and move time: above 1, slower)")
    return "\n".join(L)


async def run(a: argparse.Namespace, tmp: str) -> Results:
    b = Bench(a, tmp)
    res = Results()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(b.pool, b.start_ce)
    try:
        only = set(a.only.split(",")) if a.only else None
        if only is None or "throughput" in only:
            t = time.perf_counter()
            for kind in ("mixed", "elixir"):
                await b.throughput(kind, res)
            print(f"  [throughput: {time.perf_counter() - t:.1f} s]", flush=True)
        scen = [("mixed", "P2", "stop"), ("elixir", "E3", "stop"), ("mixed", "P2", "kill"), ("elixir", "E3", "kill")]
        if not a.quick:
            scen += [("mixed", "E1", "stop"), ("mixed", "E1", "kill")]
        if only is not None:
            scen = [x for x in scen if f"{x[2]}-{x[0]}-{x[1]}" in only or x[2] in only]
        t = time.perf_counter()
        for kind, victim, how in scen:
            await b.disrupt(kind, victim, how, res)
        print(f"  [stop / kill -9: {time.perf_counter() - t:.1f} s]", flush=True)
        if only is None or "run" in only:
            t = time.perf_counter()
            for kind in ("mixed", "elixir"):
                await b.run_kinds(kind, res)
            print(f"  [run kinds: {time.perf_counter() - t:.1f} s]", flush=True)
    finally:
        if b.ce is not None:
            b.ce.kill()
        b.pool.shutdown(wait=False)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, no Elixir-victim rows on the mixed cluster")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients K (default 16)")
    ap.add_argument("--n", type=int, help="jobs started per throughput batch (default 2000; 500 quick)")
    ap.add_argument("--jobs", type=int, help="jobs in the stop / kill scenarios (default 1000; 300 quick)")
    ap.add_argument("--work-ms", type=int, default=50, help="Job.Otp work_ms on every host (default 50)")
    ap.add_argument("--poll-ms", type=int, default=5, help="CE's poll interval in stop / kill (default 5)")
    ap.add_argument("--timeout", type=float, default=60.0, help="give up on a stop / kill after this long (s)")
    ap.add_argument("--run-jobs", type=int, help="run-kind jobs in scenario 4 (default 1000; 200 quick)")
    ap.add_argument("--run-steps", type=int, default=5, help="steps (sleep + checkpoint) per run-kind job (5)")
    ap.add_argument("--step-ms", type=int, default=20, help="the simulated I/O of one step, ms (20)")
    ap.add_argument("--move-step-ms", type=int, default=2000, help="a step of the long jobs moved off a stop, ms (2000)")
    ap.add_argument("--only", help="comma-separated subset: throughput, stop, kill, run, or one scenario such as "
                    "kill-mixed-P2, stop-elixir-E3, stop-mixed-E1")
    ap.add_argument("--repeat", type=int, help="throughput batches per client and cluster, median kept (3; 1 quick)")
    ap.add_argument("--profile", action="store_true",
                    help="run the Python hosts under cProfile and print where P1 / P2 spend their time")
    ap.add_argument("--profile-lines", type=int, default=22, help="functions per profile (default 22)")
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"], help="CP's event loop")
    a = ap.parse_args(argv)
    a.n = a.n or (500 if a.quick else 2000)
    a.jobs = a.jobs or (300 if a.quick else 1000)
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.run_jobs = a.run_jobs or (200 if a.quick else 1000)
    t_start = time.perf_counter()
    r = subprocess.run(["mix", "compile"], cwd=MIX, env=dict(os.environ, MIX_ENV="dev"), capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        return 1
    loop_name = a.loop
    if loop_name == "uvloop":
        try:
            import uvloop  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            loop_name = "asyncio"
    from erl_interop import codec

    print(f"jobs_bench: Python {platform.python_version()} ({loop_name}), "
          f"codec {'C accelerator' if codec.ACCELERATED else 'pure Python'}, {os.cpu_count()} CPUs, "
          f"K = {a.clients}, N = {a.n}, jobs = {a.jobs}, work_ms = {a.work_ms}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pynode_jobs_bench_") as tmp:
        if loop_name == "uvloop":
            import uvloop  # type: ignore[import-not-found]

            res = uvloop.run(run(a, tmp))
        else:
            res = asyncio.run(run(a, tmp))
    print()
    print(report(res, a))
    for text in res.profiles:
        print()
        print(text)
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
