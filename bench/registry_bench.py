"""Registry benchmark: pynode's cluster registry (Python and Elixir halves) beside OTP's ``pg``.

Run from the repository root::

    .venv/bin/python bench/registry_bench.py            # full run, about 2 minutes
    .venv/bin/python bench/registry_bench.py --quick    # under a minute, noisier
    .venv/bin/python bench/registry_bench.py --profile  # also cProfile the Python side

Theory of operation. Eight nodes run for the whole benchmark:

- the *mixed* cluster: two Elixir nodes E1, E2 running the mix_compat project (so
  ``Pynode.Registry`` is started by its application) and two Python nodes P1, P2 started in
  this process, on one event loop (uvloop when installed);
- the *pg* cluster: four ``erl`` nodes G1..G4, each running a ``pg`` scope ``bench_pg``.

Timed code on the BEAM is compiled (an Erlang module, :data:`ERL_SOURCE`, compiled and
loaded on G1..G4; an Elixir module, :data:`EX_SOURCE`, defined on E1 and E2), never
``erl_eval``. ``BeamNode.eval`` blocks, so it is called from a worker thread and the event
loop keeps serving P1 and P2.

1. *Registrations/s on one node* (before any node is connected, so no peer to tell):
   N unique names from one process (sequential ``reg`` calls), and from N processes that
   register one name each, started together by one ``go`` (spawning is not timed). Python
   ``node.registry.reg`` on P1, ``Pynode.Registry.reg`` on E1, ``pg:join(bench_pg, Group,
   self())`` on G1 with one group per name (pg's equivalent work: a call to the local scope
   server, an ETS insert, a monitor). Interleaved, ``--repeat`` runs, median kept; every
   holder exits after its run and the next run starts once the table is empty again.
2. The clusters are formed (P1-E1, P2-E2, E1-E2; the registries mesh the rest; G1..G4
   fully connected), then *visibility latency*: one origin node registers K names, one at
   a time, ``--gap`` ms apart; each of the 3 other nodes notes the moment its own mirror
   has the name. Pynode nodes use the registry's own ``await`` hook (Elixir: a process per
   name blocked in ``Pynode.Registry.await``, woken by the registry right after its ETS
   insert; Python: a future added with ``Registry.add_waiter``, stamped by its done
   callback). pg nodes use ``pg:monitor_scope`` (notified right after pg's ETS insert; the
   watcher also checks ``pg:get_members``). Nothing spins, which matters on a small shared
   machine. Stamps are ``os:system_time(nanosecond)`` / ``time.time_ns()``: one clock
   (CLOCK_REALTIME) for all the processes of the machine. A name's latency is the latest
   of the 3 stamps minus the origin's stamp just before its ``reg``/``join``; p50 and p99
   over K names (500; 60 with --quick). Origins: P1 (Python) and E1 (Elixir) in the mixed
   cluster, G1 in pg.
3. *Resync*: 10,000 entries are registered, 5,000 on E1 and 5,000 on P1 from one process
   each (their rate, with 3 peers to tell, is reported too), likewise 5,000 + 5,000 pg
   groups joined on G1 and G2. Then a node holding none of them leaves (it drops all its
   connections and waits until its mirror is empty and the others have dropped it) and
   rejoins: P2 by ``ping`` of E1 and E2 by ``Node.connect`` of E1 (the registries' member
   lists connect the rest); G4 by ``net_kernel:connect_node`` of G1, G2, G3. The figure is
   the time from the connect call until the rejoiner's mirror holds all 10,000 (polled
   every millisecond), ``--repeat`` rejoins, median kept; *connect* is the handshake part.

Ratios are pynode / pg for rates and pg / pynode for times, so below 1 means pynode is
slower.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import fcntl
import io
import math
import os
import platform
import pstats
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

from erl_interop.terms import Atom  # noqa: E402
from pynode.node import Node  # noqa: E402
from pynode.core.process import Process  # noqa: E402
from pynode.registry import key_bytes  # noqa: E402
from pynode.testing import BeamNode, unique_name  # noqa: E402

COOKIE = "regbench"
MIX_PROJECT = os.path.join(_ROOT, "mix_compat")
SCOPE = "bench_pg"
N_, G_ = Atom("n"), Atom("g")
OK = Atom("ok")
RESYNC_TOTAL = 10_000

ERL_SOURCE = r"""
-module(pynode_reg_bench).
-export([group/1, stop_group/1, gsize/1, wait_size/3, solo_one/4, solo_many/4,
         lat_arm/3, lat_collect/3, lat_drive/5, populate/4, isolate/0, rejoin/4]).

now_us() -> erlang:monotonic_time(microsecond).

gsize(Scope) -> ets:info(Scope, size).

%% Holders link to a registered group process; stopping it kills them all.
group(Name) ->
    stop_group(Name),
    register(Name, spawn(fun() -> receive stop -> exit(stopped) end end)),
    ok.

stop_group(Name) ->
    case whereis(Name) of
        undefined -> ok;
        P -> Ref = monitor(process, P), P ! stop, receive {'DOWN', Ref, _, _, _} -> ok end
    end.

%% Microseconds until ets:info(Scope, size) == N (polled every ms), or timeout.
wait_size(Scope, N, TimeoutMs) ->
    T0 = now_us(),
    poll(Scope, N, T0 + TimeoutMs * 1000),
    now_us() - T0.

poll(Scope, N, Deadline) ->
    case gsize(Scope) of
        N -> ok;
        _ ->
            case now_us() > Deadline of
                true -> exit({timeout, gsize(Scope), N});
                false -> receive after 1 -> poll(Scope, N, Deadline) end
            end
    end.

%% One process joins groups {Prefix, 1..N}: microseconds.
solo_one(Scope, Prefix, N, Grp) ->
    Parent = self(),
    G = whereis(Grp),
    Pid = spawn(fun() ->
        link(G),
        T0 = now_us(),
        join_loop(Scope, Prefix, 1, N),
        Parent ! {solo_done, self(), now_us() - T0},
        receive never -> ok end
    end),
    receive {solo_done, Pid, Us} -> Us after 120000 -> exit(solo_timeout) end.

join_loop(_Scope, _Prefix, I, N) when I > N -> ok;
join_loop(Scope, Prefix, I, N) ->
    ok = pg:join(Scope, {Prefix, I}, self()),
    join_loop(Scope, Prefix, I + 1, N).

%% N processes, spawned first, each join one group on go: microseconds from go to the last.
solo_many(Scope, Prefix, N, Grp) ->
    Parent = self(),
    G = whereis(Grp),
    Pids = [spawn(fun() ->
                link(G),
                receive go -> ok end,
                ok = pg:join(Scope, {Prefix, I}, self()),
                Parent ! joined,
                receive never -> ok end
            end) || I <- lists:seq(1, N)],
    T0 = now_us(),
    [P ! go || P <- Pids],
    wait_n(N),
    now_us() - T0.

wait_n(0) -> ok;
wait_n(N) -> receive joined -> wait_n(N - 1) after 120000 -> exit(many_timeout) end.

%% A watcher (registered Name) stamps os:system_time(nanosecond) when group {Prefix, I}
%% is joined, as soon as pg tells it, after checking pg:get_members shows it.
lat_arm(Scope, Prefix, Name) ->
    Parent = self(),
    P = spawn(fun() ->
        {Ref, _} = pg:monitor_scope(Scope),
        Parent ! {armed, self()},
        watch(Scope, Ref, Prefix, #{})
    end),
    register(Name, P),
    receive {armed, P} -> ok after 10000 -> exit(arm_timeout) end.

watch(Scope, Ref, Prefix, M) ->
    receive
        {Ref, join, {Prefix, I} = Group, _Pids} ->
            seen(Scope, Group),
            watch(Scope, Ref, Prefix, M#{I => os:system_time(nanosecond)});
        {get, From} ->
            From ! {lat, self(), M},
            watch(Scope, Ref, Prefix, M);
        stop ->
            ok;
        _ ->
            watch(Scope, Ref, Prefix, M)
    end.

seen(Scope, Group) ->
    case pg:get_members(Scope, Group) of
        [] -> erlang:yield(), seen(Scope, Group);
        _ -> ok
    end.

%% The stamps [{I, Ns}] once the watcher has K of them (or at the timeout); stops it.
lat_collect(Name, K, TimeoutMs) ->
    P = whereis(Name),
    Deadline = now_us() + TimeoutMs * 1000,
    M = collect(P, K, Deadline),
    unregister(Name),
    P ! stop,
    maps:to_list(M).

collect(P, K, Deadline) ->
    P ! {get, self()},
    M = receive {lat, P, X} -> X end,
    case map_size(M) >= K orelse now_us() > Deadline of
        true -> M;
        false -> receive after 5 -> collect(P, K, Deadline) end
    end.

%% One holder joins {Prefix, 1..K}, GapMs apart; the os:system_time(nanosecond) before each.
lat_drive(Scope, Prefix, K, GapMs, Grp) ->
    Parent = self(),
    G = whereis(Grp),
    Pid = spawn(fun() ->
        link(G),
        Ts = [begin
                  T = os:system_time(nanosecond),
                  ok = pg:join(Scope, {Prefix, I}, self()),
                  receive after GapMs -> ok end,
                  T
              end || I <- lists:seq(1, K)],
        Parent ! {drive_done, self(), Ts},
        receive never -> ok end
    end),
    receive {drive_done, Pid, Ts} -> Ts after 300000 -> exit(drive_timeout) end.

populate(Scope, Prefix, N, Grp) -> solo_one(Scope, Prefix, N, Grp).

isolate() -> [erlang:disconnect_node(N) || N <- nodes(connected)].

%% Connect to Nodes, then poll until the scope holds N groups: {ConnectUs, TotalUs}.
rejoin(Scope, Nodes, N, TimeoutMs) ->
    T0 = now_us(),
    [true = net_kernel:connect_node(Nd) || Nd <- Nodes],
    T1 = now_us(),
    poll(Scope, N, T0 + TimeoutMs * 1000),
    {T1 - T0, now_us() - T0}.
"""

EX_SOURCE = r"""
defmodule PynodeRegBench do
  @moduledoc false
  alias Pynode.Registry, as: R

  defp now_us, do: :erlang.monotonic_time(:microsecond)
  def size, do: :ets.info(:pynode_registry_names, :size)

  # Holders link to a registered group process; stopping it kills them all.
  def group(name) do
    stop_group(name)
    Process.register(spawn(fn -> receive do :stop -> exit(:stopped) end end), name)
    :ok
  end

  def stop_group(name) do
    case Process.whereis(name) do
      nil -> :ok
      p ->
        ref = Process.monitor(p)
        send(p, :stop)
        receive do {:DOWN, ^ref, _, _, _} -> :ok end
    end
  end

  def wait_size(n, timeout_ms) do
    t0 = now_us()
    poll(n, t0 + timeout_ms * 1000)
    now_us() - t0
  end

  defp poll(n, deadline) do
    s = size()
    cond do
      s == n -> :ok
      now_us() > deadline -> exit({:timeout, s, n})
      true -> Process.sleep(1); poll(n, deadline)
    end
  end

  # One process registers {:n, :g, {prefix, 1..n}}: microseconds.
  def solo_one(prefix, n, grp) do
    parent = self()
    g = Process.whereis(grp)
    pid = spawn(fn ->
      Process.link(g)
      t0 = now_us()
      reg_loop(prefix, 1, n)
      send(parent, {:solo_done, self(), now_us() - t0})
      receive do :never -> :ok end
    end)
    receive do {:solo_done, ^pid, us} -> us after 120_000 -> exit(:solo_timeout) end
  end

  defp reg_loop(_prefix, i, n) when i > n, do: :ok
  defp reg_loop(prefix, i, n) do
    :ok = R.reg({:n, :g, {prefix, i}})
    reg_loop(prefix, i + 1, n)
  end

  # n processes, spawned first, each register one name on :go: microseconds.
  def solo_many(prefix, n, grp) do
    parent = self()
    g = Process.whereis(grp)
    pids = for i <- 1..n do
      spawn(fn ->
        Process.link(g)
        receive do :go -> :ok end
        :ok = R.reg({:n, :g, {prefix, i}})
        send(parent, :registered)
        receive do :never -> :ok end
      end)
    end
    t0 = now_us()
    Enum.each(pids, &send(&1, :go))
    wait_n(n)
    now_us() - t0
  end

  defp wait_n(0), do: :ok
  defp wait_n(n), do: (receive do :registered -> wait_n(n - 1) after 120_000 -> exit(:many_timeout) end)

  # One process per name blocks in R.await and stamps os:system_time when the registry
  # answers; a collector registered `name` keeps the stamps. Returns once the registry
  # holds all k waiters.
  def lat_arm(prefix, k, name) do
    coll = spawn(fn -> collector(%{}) end)
    Process.register(coll, name)
    base = map_size(:sys.get_state(:pynode_registry).waiters)
    for i <- 1..k do
      spawn(fn ->
        case R.await({:n, :g, {prefix, i}}, 300_000) do
          {_pid, _value} -> send(coll, {:seen, i, :os.system_time(:nanosecond)})
          _ -> :ok
        end
      end)
    end
    wait_waiters(base + k, now_us() + 10_000_000)
  end

  defp wait_waiters(want, deadline) do
    have = map_size(:sys.get_state(:pynode_registry).waiters)
    cond do
      have >= want -> :ok
      now_us() > deadline -> exit({:arm_timeout, have, want})
      true -> Process.sleep(1); wait_waiters(want, deadline)
    end
  end

  defp collector(m) do
    receive do
      {:seen, i, t} -> collector(Map.put(m, i, t))
      {:get, from} -> send(from, {:lat, self(), m}); collector(m)
      :stop -> :ok
    end
  end

  def lat_collect(name, k, timeout_ms) do
    p = Process.whereis(name)
    m = collect(p, k, now_us() + timeout_ms * 1000)
    Process.unregister(name)
    send(p, :stop)
    Map.to_list(m)
  end

  defp collect(p, k, deadline) do
    send(p, {:get, self()})
    m = receive do {:lat, ^p, x} -> x end
    if map_size(m) >= k or now_us() > deadline, do: m, else: (Process.sleep(5); collect(p, k, deadline))
  end

  # One holder registers {:n, :g, {prefix, 1..k}}, gap_ms apart: os:system_time before each.
  def lat_drive(prefix, k, gap_ms, grp) do
    parent = self()
    g = Process.whereis(grp)
    pid = spawn(fn ->
      Process.link(g)
      ts = for i <- 1..k do
        t = :os.system_time(:nanosecond)
        :ok = R.reg({:n, :g, {prefix, i}})
        Process.sleep(gap_ms)
        t
      end
      send(parent, {:drive_done, self(), ts})
      receive do :never -> :ok end
    end)
    receive do {:drive_done, ^pid, ts} -> ts after 300_000 -> exit(:drive_timeout) end
  end

  def populate(prefix, n, grp), do: solo_one(prefix, n, grp)

  def isolate, do: for(n <- Node.list(:connected), do: :erlang.disconnect_node(n))

  # Connect to target, then poll until the mirror holds n names: {connect_us, total_us}.
  def rejoin(target, n, timeout_ms) do
    t0 = now_us()
    true = Node.connect(target)
    t1 = now_us()
    poll(n, t0 + timeout_ms * 1000)
    {t1 - t0, now_us() - t0}
  end
end
:ok
"""


# --- nodes -----------------------------------------------------------------------------------


def mix_compile() -> None:
    """``mix compile`` once, under the lock the test suite uses."""
    lock_path = os.path.join(MIX_PROJECT, "_build", ".pynode-compile.lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    env = dict(os.environ, MIX_ENV="dev")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            r = subprocess.run(["mix", "compile"], cwd=MIX_PROJECT, env=env, capture_output=True, text=True, timeout=300)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if r.returncode != 0:
        raise RuntimeError(f"mix compile failed:\n{r.stdout}\n{r.stderr}")


@dataclass
class Beams:
    e1: BeamNode
    e2: BeamNode
    g: list[BeamNode]

    def all(self) -> list[BeamNode]:
        return [self.e1, self.e2, *self.g]

    def stop(self) -> None:
        def one(n: BeamNode) -> None:
            try:
                n.stop(timeout=10)
            except Exception:
                n.kill()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, self.all()))


def start_beams() -> Beams:
    mix_compile()
    started: list[BeamNode] = []
    tmp = tempfile.mkdtemp(prefix="pynode_reg_bench_")
    path = os.path.join(tmp, "pynode_reg_bench.erl")
    with open(path, "w", encoding="utf-8") as f:
        f.write(ERL_SOURCE)

    def elixir(tag: str) -> BeamNode:
        n = BeamNode.start(unique_name(tag) + "@localhost", cookie=COOKIE, lang="elixir",
                           mix_project=MIX_PROJECT, timeout=60)
        started.append(n)
        n.eval(EX_SOURCE, timeout=60)
        return n

    def erl(tag: str) -> BeamNode:
        n = BeamNode.start(unique_name(tag) + "@localhost", cookie=COOKIE)
        started.append(n)
        res = n.eval(
            '{ok, M, Bin} = compile:file("%s", [binary, report]), {module, M} = code:load_binary(M, "%s", Bin),'
            " {ok, _} = pg:start(%s), ok." % (path, path, SCOPE)
        )
        if res != OK:
            raise RuntimeError(f"could not set up {n.name}: {res!r}")
        return n

    try:
        with ThreadPoolExecutor(6) as pool:
            fe = [pool.submit(elixir, t) for t in ("rbE1", "rbE2")]
            fg = [pool.submit(erl, t) for t in ("rbG1", "rbG2", "rbG3", "rbG4")]
            return Beams(fe[0].result(), fe[1].result(), [f.result() for f in fg])
    except BaseException:
        for n in started:
            n.kill()
        raise
    finally:
        try:
            os.unlink(path)
            os.rmdir(tmp)
        except OSError:
            pass


async def ev(node: BeamNode, src: str, timeout: float = 120.0) -> Any:
    """Evaluate on a BEAM node from a worker thread (the event loop keeps running)."""
    return await asyncio.to_thread(node.eval, src, timeout)


async def until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def ev_until(node: BeamNode, src: str, pred: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = await ev(node, src)
        if pred(v):
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s on {node.name} waiting for {what}; last {v!r}")
        await asyncio.sleep(0.01)


# --- the Python side -------------------------------------------------------------------------


def key(prefix: Atom, i: int) -> tuple[Atom, Atom, tuple[Atom, int]]:
    return (N_, G_, (prefix, i))


_BASE: dict[Atom, int] = {}
_NAMES: dict[str, str] = {}  # node name -> E1/E2/P1/P2/G1.. for the report


def mirror_size(node: Node) -> int:
    """Keys in ``node``'s mirror, less those present when it started (the job hosts'
    ``{p, g, pynode_job_host}`` property: one key, whoever holds it)."""
    return len(node.registry.server.mirror.claims) - _BASE[node.name]


class Holders:
    """Python processes that live until :meth:`stop` (then exit normally, and the registry
    drops their names)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.done = asyncio.Event()

    def spawn(self, body: Callable[[Process], Awaitable[Any]] | None = None) -> Process:
        async def idle(proc: Process) -> None:
            if body is not None:
                await body(proc)
            await self.done.wait()

        return self.node.spawn(idle)

    def stop(self) -> None:
        self.done.set()


async def py_solo_one(node: Node, prefix: Atom, n: int) -> float:
    """Registrations/s of one process registering ``n`` names, sequentially."""
    hs = Holders(node)
    proc = hs.spawn()
    reg = node.registry.reg
    keys = [key(prefix, i) for i in range(1, n + 1)]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for k in keys:
        r = await reg(proc, k)
        if r != OK:
            raise RuntimeError(f"reg {k}: {r!r}")
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    hs.stop()
    await until(lambda: mirror_size(node) == 0, 60, "python mirror empty")
    return n / dt, cpu * 1e6 / n


async def py_solo_many(node: Node, prefix: Atom, n: int) -> float:
    """Registrations/s of ``n`` processes registering one name each, started by one ``go``."""
    hs = Holders(node)
    go = asyncio.Event()
    all_done = asyncio.Event()
    count = [0]
    reg = node.registry.reg

    def body_for(i: int) -> Callable[[Process], Awaitable[None]]:
        async def body(proc: Process) -> None:
            await go.wait()
            r = await reg(proc, key(prefix, i))
            if r != OK:
                raise RuntimeError(f"reg {i}: {r!r}")
            count[0] += 1
            if count[0] == n:
                all_done.set()

        return body

    for i in range(1, n + 1):
        hs.spawn(body_for(i))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    c0 = time.process_time()
    t0 = time.perf_counter()
    go.set()
    await asyncio.wait_for(all_done.wait(), 120)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    hs.stop()
    await until(lambda: mirror_size(node) == 0, 60, "python mirror empty")
    return n / dt, cpu * 1e6 / n


def py_arm(node: Node, prefix: Atom, k: int, out: dict[int, int]) -> None:
    """Stamp ``time.time_ns()`` into ``out[i]`` when ``node``'s registry has name ``i``."""
    server = node.registry.server
    loop = asyncio.get_running_loop()
    for i in range(1, k + 1):
        fut: asyncio.Future[Any] = loop.create_future()
        fut.add_done_callback(lambda _f, i=i: out.__setitem__(i, time.time_ns()))
        server.add_waiter(key_bytes(key(prefix, i)), fut)


async def py_drive(node: Node, hs: Holders, prefix: Atom, k: int, gap: float) -> list[int]:
    proc = hs.spawn()
    reg = node.registry.reg
    ts = []
    for i in range(1, k + 1):
        t = time.time_ns()
        r = await reg(proc, key(prefix, i))
        if r != OK:
            raise RuntimeError(f"reg {i}: {r!r}")
        ts.append(t)
        await asyncio.sleep(gap)
    return ts


async def py_populate(node: Node, hs: Holders, prefix: Atom, n: int) -> tuple[float, float]:
    proc = hs.spawn()
    reg = node.registry.reg
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        r = await reg(proc, key(prefix, i))
        if r != OK:
            raise RuntimeError(f"reg {i}: {r!r}")
    return n / (time.perf_counter() - t0), (time.process_time() - c0) * 1e6 / n


SYNC = Atom("sync")


class Tally:
    """Snapshot entries a Python node's registry receives (``"in"``, by sender) or sends
    (``"out"``, by destination) while it is open: the instance's ``_on_sync`` or its
    process's ``send`` is wrapped, and :meth:`close` restores it. Nothing else changes."""

    def __init__(self, node: Node, direction: str) -> None:
        self.counts: dict[str, int] = {}
        server = node.registry.server
        if direction == "in":
            self.obj, self.attr = server, "_on_sync"
            orig = server._on_sync

            def on_sync(frm: Any, entries: Any, members: Any) -> Any:
                self._add(str(frm.node), len(entries))
                return orig(frm, entries, members)

            setattr(server, "_on_sync", on_sync)
        else:
            self.obj, self.attr = server.process, "send"
            orig_send = server.process.send

            def send(dest: Any, msg: Any) -> Any:
                if type(msg) is tuple and len(msg) == 6 and msg[2] == SYNC:
                    self._add(str(getattr(dest, "node", dest)), len(msg[4]))
                return orig_send(dest, msg)

            setattr(server.process, "send", send)

    def _add(self, who: str, n: int) -> None:
        self.counts[who] = self.counts.get(who, 0) + n

    def close(self) -> dict[str, int]:
        delattr(self.obj, self.attr)
        return self.counts


def py_isolate(node: Node) -> None:
    for c in list(node.dist.conns.values()):
        c.close()


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Sizes:
    n: int
    repeat: int
    k: int
    gap_ms: int
    warm: int
    rejoins: int
    populate: int = RESYNC_TOTAL // 2


@dataclass
class Results:
    solo: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # row -> who -> regs/s
    cluster_rate: dict[str, float] = field(default_factory=dict)  # who -> regs/s with 3 peers
    replicate: dict[str, float] = field(default_factory=dict)  # who -> s until every node had 10,000
    lat: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # origin -> {"all", dest...} -> µs
    rejoin: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # who -> [(connect ms, total ms)]
    py_cpu: dict[str, float] = field(default_factory=dict)  # row -> this process's CPU µs per reg
    snapshots: dict[str, list[dict[str, int]]] = field(default_factory=dict)  # who -> per rejoin: sender -> syncs
    profiles: list[str] = field(default_factory=list)


def _put(res: Results, row: str, who: str, v: float) -> None:
    res.solo.setdefault(row, {}).setdefault(who, []).append(v)


async def profiled(res: Results, on: bool, title: str, coro: Awaitable[Any]) -> Any:
    if not on:
        return await coro
    pr = cProfile.Profile()
    pr.enable()
    try:
        return await coro
    finally:
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18)
        body = "\n".join(line for line in s.getvalue().splitlines() if line.strip())
        res.profiles.append(f"===== cProfile: {title} (tottime, top 18) =====\n{body}")


async def phase_solo(res: Results, sz: Sizes, p1: Node, b: Beams, prof: bool) -> None:
    e1, g1 = b.e1, b.g[0]
    await ev(e1, "PynodeRegBench.group(:bench_solo)")
    await ev(g1, "pynode_reg_bench:group(bench_solo).")
    # warm-up: code paths hot on every side
    w = max(200, sz.n // 20)
    await py_solo_one(p1, Atom("warm"), w)
    await py_solo_many(p1, Atom("warmm"), w)
    for node, src in ((e1, f"PynodeRegBench.solo_one(:warm, {w}, :bench_solo)"),
                      (e1, f"PynodeRegBench.solo_many(:warmm, {w}, :bench_solo)")):
        await ev(node, src)
    await ev(e1, "PynodeRegBench.group(:bench_solo); PynodeRegBench.wait_size(0, 60_000)")
    await ev(g1, f"pynode_reg_bench:solo_one({SCOPE}, warm, {w}, bench_solo), pynode_reg_bench:group(bench_solo),"
                 f" pynode_reg_bench:wait_size({SCOPE}, 0, 60000).")
    n = sz.n
    for r in range(sz.repeat):
        for row in ("one", "many"):
            prefix = Atom(f"s{row}{r}")
            fn = py_solo_one if row == "one" else py_solo_many
            rate, cpu = await profiled(res, prof and r == 0, f"Python reg, {row} process(es), one node",
                                       fn(p1, prefix, n))
            _put(res, row, "py", rate)
            _put(res, row, "pycpu", cpu)
            us = await ev(e1, f"PynodeRegBench.solo_{row}(:{prefix}, {n}, :bench_solo)")
            await ev(e1, "PynodeRegBench.group(:bench_solo); PynodeRegBench.wait_size(0, 60_000)")
            _put(res, row, "ex", n * 1e6 / us)
            us = await ev(g1, f"pynode_reg_bench:solo_{row}({SCOPE}, {prefix}, {n}, bench_solo).")
            await ev(g1, f"pynode_reg_bench:group(bench_solo), pynode_reg_bench:wait_size({SCOPE}, 0, 60000).")
            _put(res, row, "pg", n * 1e6 / us)
    await ev(e1, "PynodeRegBench.stop_group(:bench_solo)")
    await ev(g1, "pynode_reg_bench:stop_group(bench_solo).")


async def form_clusters(p1: Node, p2: Node, b: Beams) -> None:
    e1, e2, g = b.e1, b.e2, b.g
    assert await p1.ping(e1.name) == Atom("pong")
    assert await p2.ping(e2.name) == Atom("pong")
    assert await ev(e1, f"Node.connect(:'{e2.name}')") is True
    want = sorted([p1.name, p2.name, Atom(e1.name), Atom(e2.name)])
    await all_members([p1, p2], [e1, e2], want)
    for i, gi in enumerate(g):
        for gj in g[i + 1:]:
            assert await ev(gi, f"net_kernel:connect_node('{gj.name}').") is True


async def all_members(py: list[Node], ex: list[BeamNode], want: list[Atom], timeout: float = 30) -> None:
    await until(lambda: all(nd.registry.members() == want for nd in py), timeout, f"python members == {want}")
    for e in ex:
        await ev_until(e, "Pynode.Registry.members()", lambda v: v == want, timeout, f"members == {want}")


async def phase_latency(res: Results, sz: Sizes, p1: Node, p2: Node, b: Beams) -> None:
    e1, e2, g = b.e1, b.e2, b.g
    gap = sz.gap_ms
    hs1 = Holders(p1)
    await ev(e1, "PynodeRegBench.group(:bench_lat)")
    for gi in g[:1]:
        await ev(gi, "pynode_reg_bench:group(bench_lat).")

    async def from_python(prefix: Atom, k: int) -> dict[str, list[float]]:
        outs: dict[str, dict[int, int]] = {"py": {}}
        py_arm(p2, prefix, k, outs["py"])
        await asyncio.gather(*(ev(e, f"PynodeRegBench.lat_arm(:{prefix}, {k}, :bench_coll)") for e in (e1, e2)))
        ts = await py_drive(p1, hs1, prefix, k, gap / 1000)
        got = await asyncio.gather(*(ev(e, f"PynodeRegBench.lat_collect(:bench_coll, {k}, 30_000)") for e in (e1, e2)))
        await until(lambda: len(outs["py"]) >= k, 30, "python watchers")
        return _lat(ts, {"ex1": dict(got[0]), "ex2": dict(got[1]), "py": outs["py"]})

    async def from_elixir(prefix: Atom, k: int) -> dict[str, list[float]]:
        o1: dict[int, int] = {}
        o2: dict[int, int] = {}
        py_arm(p1, prefix, k, o1)
        py_arm(p2, prefix, k, o2)
        await ev(e2, f"PynodeRegBench.lat_arm(:{prefix}, {k}, :bench_coll)")
        ts = await ev(e1, f"PynodeRegBench.lat_drive(:{prefix}, {k}, {gap}, :bench_lat)", timeout=300)
        got = await ev(e2, f"PynodeRegBench.lat_collect(:bench_coll, {k}, 30_000)")
        await until(lambda: len(o1) >= k and len(o2) >= k, 30, "python watchers")
        return _lat(ts, {"ex": dict(got), "py1": o1, "py2": o2})

    async def from_pg(prefix: Atom, k: int) -> dict[str, list[float]]:
        await asyncio.gather(*(ev(gi, f"pynode_reg_bench:lat_arm({SCOPE}, {prefix}, bench_coll).") for gi in g[1:]))
        ts = await ev(g[0], f"pynode_reg_bench:lat_drive({SCOPE}, {prefix}, {k}, {gap}, bench_lat).", timeout=300)
        got = await asyncio.gather(*(ev(gi, f"pynode_reg_bench:lat_collect(bench_coll, {k}, 30000).") for gi in g[1:]))
        return _lat(ts, {f"g{j + 2}": dict(x) for j, x in enumerate(got)})

    # warm-up rounds, not counted
    await from_python(Atom("lwp"), sz.warm)
    await from_elixir(Atom("lwe"), sz.warm)
    await from_pg(Atom("lwg"), sz.warm)
    res.lat["py"] = await from_python(Atom("lp"), sz.k)
    res.lat["ex"] = await from_elixir(Atom("le"), sz.k)
    res.lat["pg"] = await from_pg(Atom("lg"), sz.k)
    # clean up: every latency name / group goes away
    hs1.stop()
    await ev(e1, "PynodeRegBench.stop_group(:bench_lat)")
    await ev(g[0], "pynode_reg_bench:stop_group(bench_lat).")
    await until(lambda: mirror_size(p1) == 0 and mirror_size(p2) == 0, 60, "python mirrors empty")
    for e in (e1, e2):
        await ev(e, "PynodeRegBench.wait_size(0, 60_000)")
    for gi in g:
        await ev(gi, f"pynode_reg_bench:wait_size({SCOPE}, 0, 60000).")


def _lat(origin_ts: list[int], stamps: dict[str, dict[int, int]]) -> dict[str, list[float]]:
    """Per name: the latest stamp over every other node, and each node's own, in µs."""
    out: dict[str, list[float]] = {"all": []}
    for i, t0 in enumerate(origin_ts, start=1):
        per = {who: (s[i] - t0) / 1e3 for who, s in stamps.items() if i in s}
        if len(per) < len(stamps):
            raise RuntimeError(f"name {i} never seen on {set(stamps) - set(per)}")
        out["all"].append(max(per.values()))
        for who, v in per.items():
            out.setdefault(who, []).append(v)
    return out


async def phase_resync(res: Results, sz: Sizes, p1: Node, p2: Node, b: Beams, prof: bool) -> None:
    e1, e2, g = b.e1, b.e2, b.g
    half = sz.populate
    total = 2 * half
    want = sorted([p1.name, p2.name, Atom(e1.name), Atom(e2.name)])

    # --- populate: 5,000 names on E1 and 5,000 on P1, one process each, 3 peers to tell
    hs1 = Holders(p1)
    await ev(e1, "PynodeRegBench.group(:bench_pop)")
    t0 = time.perf_counter()
    us = await ev(e1, f"PynodeRegBench.populate(:rs_e, {half}, :bench_pop)")
    res.cluster_rate["ex"] = half * 1e6 / us
    for e in (e1, e2):
        await ev(e, f"PynodeRegBench.wait_size({half}, 60_000)")
    await until(lambda: mirror_size(p1) == half and mirror_size(p2) == half, 60, "E1's names on P1 and P2")
    res.replicate["ex"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res.cluster_rate["py"], res.py_cpu["cluster"] = await profiled(
        res, prof, "Python reg, one process, 3 peers", py_populate(p1, hs1, Atom("rs_p"), half))
    await until(lambda: mirror_size(p1) == total and mirror_size(p2) == total, 60, "10,000 names on P1 and P2")
    for e in (e1, e2):
        await ev(e, f"PynodeRegBench.wait_size({total}, 60_000)")
    res.replicate["py"] = time.perf_counter() - t0

    # --- pg: 5,000 groups on G1 and 5,000 on G2
    for gi in g[:2]:
        await ev(gi, "pynode_reg_bench:group(bench_pop).")
    t0 = time.perf_counter()
    us = await ev(g[0], f"pynode_reg_bench:populate({SCOPE}, rs_g1, {half}, bench_pop).")
    res.cluster_rate["pg"] = half * 1e6 / us
    for gi in g:
        await ev(gi, f"pynode_reg_bench:wait_size({SCOPE}, {half}, 60000).")
    res.replicate["pg"] = time.perf_counter() - t0
    await ev(g[1], f"pynode_reg_bench:populate({SCOPE}, rs_g2, {half}, bench_pop).")
    for gi in g:
        await ev(gi, f"pynode_reg_bench:wait_size({SCOPE}, {total}, 60000).")

    # --- rejoins
    for r in range(sz.rejoins):
        # Python P2 leaves and rejoins through E1.
        py_isolate(p2)
        rest = sorted([p1.name, Atom(e1.name), Atom(e2.name)])
        await until(lambda: p2.registry.members() == [p2.name] and mirror_size(p2) == 0, 30, "P2 alone")
        await all_members([p1], [e1, e2], rest)
        stamps: dict[str, float] = {}

        async def rejoin_py() -> None:
            t0 = time.perf_counter()
            ping = asyncio.ensure_future(p2.ping(e1.name))
            ping.add_done_callback(lambda _f: stamps.setdefault("connect", time.perf_counter()))
            await until(lambda: mirror_size(p2) >= total, 60, "P2 resynced", interval=0.001)
            stamps["total"] = time.perf_counter()
            assert await ping == Atom("pong")
            res.rejoin.setdefault("py", []).append(((stamps["connect"] - t0) * 1e3, (stamps["total"] - t0) * 1e3))

        tally = Tally(p2, "in")
        await profiled(res, prof and r == 0, "Python node rejoins (resync of 10,000)", rejoin_py())
        await asyncio.sleep(0.2)  # late duplicates still count
        res.snapshots.setdefault("py", []).append(tally.close())
        await all_members([p1, p2], [e1, e2], want)

        # Elixir E2 leaves and rejoins through E1.
        await ev(e2, "PynodeRegBench.isolate()")
        rest = sorted([p1.name, p2.name, Atom(e1.name)])
        await ev_until(e2, "{Pynode.Registry.members(), PynodeRegBench.size()}",
                       lambda v: v == ([Atom(e2.name)], 0), 30, "E2 alone")
        await all_members([p1, p2], [e1], rest)
        tally = Tally(p1, "out")
        c_us, t_us = await ev(e2, f"PynodeRegBench.rejoin(:'{e1.name}', {total}, 60_000)")
        res.rejoin.setdefault("ex", []).append((c_us / 1e3, t_us / 1e3))
        await asyncio.sleep(0.2)
        res.snapshots.setdefault("ex", []).append(tally.close())
        await all_members([p1, p2], [e1, e2], want)

        # erl G4 leaves the pg cluster and rejoins G1..G3.
        g4 = g[3]
        await ev(g4, "pynode_reg_bench:isolate().")
        await ev_until(g4, f"{{nodes(connected), pynode_reg_bench:gsize({SCOPE})}}.", lambda v: v == ([], 0), 30, "G4 alone")
        for gi in g[:3]:
            await ev_until(gi, f"lists:member('{g4.name}', nodes(connected)).", lambda v: v is False, 30, "G4 gone")
        nodes = ", ".join(f"'{gi.name}'" for gi in g[:3])
        c_us, t_us = await ev(g4, f"pynode_reg_bench:rejoin({SCOPE}, [{nodes}], {total}, 60000).")
        res.rejoin.setdefault("pg", []).append((c_us / 1e3, t_us / 1e3))

    hs1.stop()
    await ev(e1, "PynodeRegBench.stop_group(:bench_pop)")
    for gi in g[:2]:
        await ev(gi, "pynode_reg_bench:stop_group(bench_pop).")


async def measure(sz: Sizes, b: Beams, prof: bool) -> Results:
    res = Results()
    p1 = await Node(unique_name("rbP1") + "@localhost", COOKIE).start()
    p2 = await Node(unique_name("rbP2") + "@localhost", COOKIE).start()
    for p in (p1, p2):
        _BASE[p.name] = len(p.registry.server.mirror.claims)
    _NAMES.update({str(p1.name): "P1", str(p2.name): "P2", b.e1.name: "E1", b.e2.name: "E2"})
    try:
        t = time.perf_counter()
        await phase_solo(res, sz, p1, b, prof)
        print(f"  [one node: {time.perf_counter() - t:.1f} s]", flush=True)
        t = time.perf_counter()
        await form_clusters(p1, p2, b)
        await phase_latency(res, sz, p1, p2, b)
        print(f"  [visibility latency: {time.perf_counter() - t:.1f} s]", flush=True)
        t = time.perf_counter()
        await phase_resync(res, sz, p1, p2, b, prof)
        print(f"  [resync: {time.perf_counter() - t:.1f} s]", flush=True)
    finally:
        await p2.stop()
        await p1.stop()
    return res


# --- report ----------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def _rate(v: float) -> str:
    return f"{v / 1e3:,.1f}k" if v >= 1e3 else f"{v:,.0f}"


def report(res: Results, sz: Sizes, loop: str) -> str:
    L: list[str] = []
    w = 58
    L.append(f"registrations/s on one node, N = {sz.n:,} (median of {sz.repeat})")
    head = f"{'':<{w}} {'Python':>9} {'Elixir':>9} {'OTP pg':>9} {'py/pg':>6} {'ex/pg':>6} {'py cpu/reg':>10}"
    L.append(head)
    L.append("-" * len(head))
    titles = {"one": "one process registers N names", "many": "N processes register one name each"}
    for row in ("one", "many"):
        py, ex, pg = (_med(res.solo[row][k]) for k in ("py", "ex", "pg"))
        cpu = _med(res.solo[row]["pycpu"])
        L.append(f"{titles[row]:<{w}} {_rate(py):>9} {_rate(ex):>9} {_rate(pg):>9} {py / pg:>6.2f} {ex / pg:>6.2f}"
                 f" {cpu:>8.0f}us")
    py, ex, pg = (res.cluster_rate[k] for k in ("py", "ex", "pg"))
    L.append(f"{f'one process, {sz.populate:,} names, in the 4-node cluster':<{w}} "
             f"{_rate(py):>9} {_rate(ex):>9} {_rate(pg):>9} {py / pg:>6.2f} {ex / pg:>6.2f}"
             f" {res.py_cpu['cluster']:>8.0f}us")
    py, ex, pg = (res.replicate[k] for k in ("py", "ex", "pg"))
    L.append(f"{'  ... seconds until all 4 nodes have them (one run)':<{w}} {py:>9.2f} {ex:>9.2f} {pg:>9.2f} "
             f"{pg / py:>6.2f} {pg / ex:>6.2f}")
    L.append("")
    L.append(f"visibility latency, 4-node clusters: time until the 3 other nodes see a new name, "
             f"K = {sz.k} names {sz.gap_ms} ms apart (µs)")
    head = f"{'origin':<{w}} {'p50':>9} {'p99':>9} {'max':>9} {'vs pg p50':>9} {'p99':>6}"
    L.append(head)
    L.append("-" * len(head))
    pg = res.lat["pg"]["all"]
    rows = [
        ("py", "Python P1 -> E1, E2, P2 (mixed: 2 Elixir + 2 Python)"),
        ("ex", "Elixir E1 -> E2, P1, P2 (mixed)"),
        ("pg", "OTP pg: erl G1 -> G2, G3, G4 (4 erl nodes)"),
    ]
    for who, title in rows:
        xs = res.lat[who]["all"]
        L.append(f"{title:<{w}} {_pct(xs, .5):>9,.0f} {_pct(xs, .99):>9,.0f} {max(xs):>9,.0f} "
                 f"{_pct(pg, .5) / _pct(xs, .5):>9.2f} {_pct(pg, .99) / _pct(xs, .99):>6.2f}")
        parts = [f"{dest} {_pct(v, .5):,.0f}/{_pct(v, .99):,.0f}" for dest, v in res.lat[who].items() if dest != "all"]
        L.append(f"{'  per node p50/p99: ' + ', '.join(parts):<{w}}")
    L.append("")
    L.append(f"resync: a node holding no entry rejoins a cluster holding {2 * sz.populate:,} "
             f"(median of {sz.rejoins} rejoins, ms)")
    head = f"{'rejoiner':<{w}} {'connect':>9} {'sync':>9} {'total':>9} {'min':>9} {'vs pg':>6} {'sync':>6}"
    L.append(head)
    L.append("-" * len(head))
    pgt = _med([t for _c, t in res.rejoin["pg"]])
    pgs = _med([t - c for c, t in res.rejoin["pg"]])
    for who, title in (
        ("py", "Python P2 (mixed; names on E1 and P1, 5,000 each)"),
        ("ex", "Elixir E2 (mixed; the same 10,000 names)"),
        ("pg", "erl G4 (OTP pg; groups on G1 and G2, 5,000 each)"),
    ):
        c = _med([c for c, _t in res.rejoin[who]])
        t = _med([t for _c, t in res.rejoin[who]])
        sy = _med([t - c for c, t in res.rejoin[who]])
        mn = min(t for _c, t in res.rejoin[who])
        L.append(f"{title:<{w}} {c:>9,.1f} {sy:>9,.1f} {t:>9,.1f} {mn:>9,.1f} {pgt / t:>6.2f} {pgs / sy:>6.2f}")
    short = {str(k): v for k, v in _NAMES.items()}
    if res.snapshots.get("py"):
        per = res.snapshots["py"][-1]
        got = ", ".join(f"{short.get(k, k)} {v:,}" for k, v in sorted(per.items()))
        L.append(f"  snapshot entries P2 received in its last rejoin (by sender): {got}")
    if res.snapshots.get("ex"):
        per = res.snapshots["ex"][-1]
        got = ", ".join(f"to {short.get(k, k)} {v:,}" for k, v in sorted(per.items()))
        L.append(f"  snapshot entries P1 sent in E2's last rejoin: {got}")
    L.append("")
    L.append(f"Python nodes run in this process, both on one {loop} event loop. Ratios: pynode/pg for "
             "rates, pg/pynode for times (below 1: pynode slower).")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, one repeat (under a minute)")
    ap.add_argument("--n", type=int, help="names per one-node run (default 10000; 3000 quick)")
    ap.add_argument("--repeat", type=int, help="one-node runs (median kept); default 3, 1 quick")
    ap.add_argument("--k", type=int, help="names per latency run (default 500; 60 quick)")
    ap.add_argument("--gap", type=int, default=10, help="ms between latency registrations (default 10)")
    ap.add_argument("--rejoins", type=int, help="rejoins per node kind (median kept); default 3, 1 quick")
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"], help="event loop (default uvloop)")
    ap.add_argument("--profile", action="store_true", help="cProfile the Python side of some runs (slower)")
    args = ap.parse_args(argv)
    q = args.quick
    sz = Sizes(
        n=args.n or (3_000 if q else 10_000),
        repeat=args.repeat or (1 if q else 3),
        k=args.k or (60 if q else 500),
        gap_ms=args.gap,
        warm=10 if q else 20,
        rejoins=args.rejoins or (1 if q else 3),
    )
    loop = args.loop
    if loop == "uvloop":
        try:
            import uvloop  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            print("uvloop is not installed: using asyncio", file=sys.stderr)
            loop = "asyncio"
    t_start = time.perf_counter()
    beams = start_beams()
    try:
        otp = bytes(beams.g[0].eval("list_to_binary(erlang:system_info(otp_release)).")).decode()
        ex_v = bytes(beams.e1.eval("System.version()")).decode()
        print(
            f"registry_bench: Python {platform.python_version()} ({loop}), OTP {otp}, Elixir {ex_v}, "
            f"{os.cpu_count()} CPUs; nodes up in {time.perf_counter() - t_start:.1f} s",
            flush=True,
        )
        coro = measure(sz, beams, args.profile)
        if loop == "uvloop":
            import uvloop  # type: ignore[import-not-found]

            res = uvloop.run(coro)
        else:
            res = asyncio.run(coro)
        print()
        print(report(res, sz, loop))
        for p in res.profiles:
            print()
            print(p)
    finally:
        beams.stop()
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
