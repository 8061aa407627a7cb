"""Distribution benchmark: a Python node against the same traffic between two BEAM nodes.

Run from the repository root::

    .venv/bin/python bench/dist_bench.py            # full run, 1-2 minutes
    .venv/bin/python bench/dist_bench.py --quick    # ~30 s, noisier
    .venv/bin/python bench/dist_bench.py --profile  # also cProfile the Python side (slower)
    .venv/bin/python bench/dist_bench.py --releases # OTP 25 (host) and each cached release
    PYNODE_OTP_ROOT=/var/cache/pynode/otp-sid .venv/bin/python bench/dist_bench.py  # OTP 29 only

OTP releases: the BEAM peers are the host's, or those of the release ``$PYNODE_OTP_ROOT``
names (a Debian chroot built by ``./dev.sh test`` / ``./dev.sh otp-root SUITE``; see
pynode.testing). ``--releases`` runs every row on each release in turn, in this one process:
the host's and every complete chroot in ``$PYNODE_OTP_CACHE`` (/var/cache/pynode), or the
roots and suites listed; each release gets its own A, B and E, and its own Python node P.

Theory of operation: three BEAM peers run beside the benchmark for the whole run: ``erl``
nodes A and B, which load :data:`MODULE_SOURCE` (compiled, so the BEAM side runs compiled
code, not ``erl_eval``), and an ``elixir`` node E, which defines a small compiled caller
module. Each event loop under test (uvloop when it is installed, and plain asyncio) gets
a fresh Python node P in this process; the BEAM peers drive the traffic and are called
from a worker thread (``BeamNode.eval`` blocks), so P's event loop only does P's work.

Every row is measured on P and on a BEAM node in the same place, interleaved, the median
of ``--repeat`` runs kept:

- *BEAM -> X one-way*: a process on A sends N messages (``{msg, I, hello}`` or a 1 KB
  binary) to the process registered ``bench_rx`` on X (X = P, or B for the baseline). It
  first sends ``{go, self(), N}``; the receiver takes N messages and answers ``rx_done``.
  The figure is N / (time on A from just before ``go`` to ``rx_done``), one clock.
- *X -> BEAM one-way*: the same with the sender on X (P, or B for the baseline) and the
  receiver on A; P's sender yields to the event loop every ``--yield-every`` messages (a
  Python process that never yields would block its node), which is when its frames are
  written, coalesced.
- *GenServer.call*: a process on E makes K sequential ``GenServer.call({bench_echo, X},
  {:echo, I})`` to an echo server on X (a :class:`pynode.otp.gen_server.GenServer` on P, an
  Erlang ``gen_server`` on B), timing each call with ``:erlang.monotonic_time``; p50, p99
  and calls/s (K / total time) are reported. A warm-up precedes the timed calls.

Ratios are Python / BEAM for throughput (above 1: Python is faster) and BEAM / Python for
latency (so below 1 always means Python is slower). ``cpu`` is this process's CPU time
over wall time during the Python rows: near 100 % means the Python side is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from erl_interop import codec  # noqa: E402
from erl_interop.terms import Atom, Pid  # noqa: E402
from pynode.otp.gen_server import GenServer  # noqa: E402
from pynode.node import Node  # noqa: E402
from pynode.core.process import Process  # noqa: E402
from pynode.testing import BeamNode, otp_root, otp_version, unique_name  # noqa: E402

COOKIE = "distbench"

MODULE_SOURCE = r"""
-module(pynode_dist_bench).
-behaviour(gen_server).
-export([start_rx/0, oneway/4, echo_start/0]).
-export([init/1, handle_call/3, handle_cast/2]).

%% The receiver, registered bench_rx: answers {hello, From} with its pid, then on
%% {go, From, N} takes N messages of any kind and tells From rx_done.
start_rx() ->
    case whereis(bench_rx) of
        undefined -> ok;
        Old -> unregister(bench_rx), exit(Old, kill)
    end,
    register(bench_rx, spawn(fun rx/0)),
    ok.

rx() ->
    receive
        {hello, From} -> From ! {rx_ready, self()}, rx();
        {go, From, N} -> count(N), From ! {rx_done, self()}, rx()
    end.

count(0) -> ok;
count(N) -> receive _ -> count(N - 1) end.

%% Send N messages of Kind (small | bin1k) to bench_rx on Node; microseconds from go to rx_done.
oneway(Node, N, Kind, Timeout) ->
    flush(),
    {bench_rx, Node} ! {hello, self()},
    Pid = receive {rx_ready, P} -> P after Timeout -> exit(no_receiver) end,
    Payload = case Kind of small -> hello; bin1k -> rand:bytes(1024) end,
    T0 = erlang:monotonic_time(microsecond),
    Pid ! {go, self(), N},
    send_loop(Pid, N, Kind, Payload),
    receive {rx_done, Pid} -> ok after Timeout -> exit(rx_timeout) end,
    erlang:monotonic_time(microsecond) - T0.

send_loop(_, 0, _, _) -> ok;
send_loop(Pid, N, small, A) -> Pid ! {msg, N, A}, send_loop(Pid, N - 1, small, A);
send_loop(Pid, N, bin1k, B) -> Pid ! B, send_loop(Pid, N - 1, bin1k, B).

flush() -> receive _ -> flush() after 0 -> ok end.

echo_start() ->
    case gen_server:start({local, bench_echo}, ?MODULE, [], []) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok
    end.

init([]) -> {ok, nil}.
handle_call(Req, _From, S) -> {reply, Req, S}.
handle_cast(_, S) -> {noreply, S}.
"""

ELIXIR_CALLER = r"""
defmodule PynodeDistBenchCaller do
  # K sequential GenServer.call to dest after W warm-up calls:
  # {total_ns, p50_ns, p99_ns, min_ns, max_ns}
  def run(dest, k, w) do
    loop(dest, w, [])
    t0 = :erlang.monotonic_time(:nanosecond)
    lats = loop(dest, k, [])
    total = :erlang.monotonic_time(:nanosecond) - t0
    s = lats |> Enum.sort() |> List.to_tuple()
    {total, elem(s, div(k, 2)), elem(s, max(0, ceil(k * 0.99) - 1)), elem(s, 0), elem(s, k - 1)}
  end

  defp loop(_dest, 0, acc), do: acc

  defp loop(dest, i, acc) do
    t = :erlang.monotonic_time(:nanosecond)
    {:echo, ^i} = GenServer.call(dest, {:echo, i})
    loop(dest, i - 1, [:erlang.monotonic_time(:nanosecond) - t | acc])
  end
end
:ok
"""

HELLO = Atom("hello")
RX_READY = Atom("rx_ready")
RX_DONE = Atom("rx_done")
GO = Atom("go")
MSG = Atom("msg")
BENCH_RX = Atom("bench_rx")


# --- the BEAM peers ------------------------------------------------------------------------


@dataclass
class Peers:
    a: BeamNode
    b: BeamNode
    e: BeamNode

    def stop(self) -> None:
        for n in (self.e, self.b, self.a):
            try:
                n.stop()
            except Exception:
                n.kill()


def start_peers(root: str | None = None) -> Peers:
    """A, B and E of the release ``root`` names (``$PYNODE_OTP_ROOT`` by default, ``"/"``: the host's)."""
    started: list[BeamNode] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pynode_dist_bench_") as tmp:
            path = os.path.join(tmp, "pynode_dist_bench.erl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(MODULE_SOURCE)
            for tag in ("benchA", "benchB"):
                n = BeamNode.start(unique_name(tag) + "@localhost", cookie=COOKIE, otp_root=root)
                started.append(n)
                res = n.eval(
                    '{ok, M, Bin} = compile:file("%s", [binary, report]),'
                    ' {module, M} = code:load_binary(M, "%s", Bin),'
                    " ok = pynode_dist_bench:start_rx(), ok = pynode_dist_bench:echo_start(), ok." % (path, path)
                )
                if res != "ok":
                    raise RuntimeError(f"could not load the benchmark module on {n.name}: {res!r}")
        e = BeamNode.start(unique_name("benchE") + "@localhost", cookie=COOKIE, lang="elixir", otp_root=root)
        started.append(e)
        e.eval(ELIXIR_CALLER)
    except BaseException:
        for n in started:
            n.kill()
        raise
    return Peers(*started)


async def beval(node: BeamNode, src: str, timeout: float = 120.0) -> Any:
    return await asyncio.to_thread(node.eval, src, timeout)


# --- the Python node's side ----------------------------------------------------------------


async def rx_body(proc: Process) -> None:
    """The Python ``bench_rx``: the same protocol as the Erlang ``rx/0``."""
    recv = proc.receive
    while True:
        m = await recv()
        if type(m) is not tuple:
            continue
        if m[0] == HELLO:
            proc.send(m[1], (RX_READY, proc.pid))
        elif m[0] == GO:
            for _ in range(m[2]):
                await recv()
            proc.send(m[1], (RX_DONE, proc.pid))


class Echo(GenServer):
    async def handle_call(self, request: Any, from_: Any) -> Any:
        return request


async def py_oneway(node: Node, peer: str, n: int, kind: str, yield_every: int) -> float:
    """Send ``n`` messages from a Python process to ``bench_rx`` on ``peer``; seconds from go to rx_done."""
    out: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def body(proc: Process) -> None:
        proc.send((BENCH_RX, Atom(peer)), (HELLO, proc.pid))
        m = await proc.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == RX_READY, 30)
        pid: Pid = m[1]
        send = proc.send
        sleep = asyncio.sleep
        t0 = time.perf_counter()
        send(pid, (GO, proc.pid, n))
        if kind == "small":
            for i in range(n, 0, -1):
                send(pid, (MSG, i, HELLO))
                if not i % yield_every:
                    await sleep(0)
        else:
            payload = os.urandom(1024)
            for i in range(n, 0, -1):
                send(pid, payload)
                if not i % yield_every:
                    await sleep(0)
        await proc.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == RX_DONE, 120)
        out.set_result(time.perf_counter() - t0)

    p = node.spawn(body)
    try:
        return await out
    finally:
        if p.task is not None:
            await asyncio.wait([p.task], timeout=5)


# --- measurements --------------------------------------------------------------------------


@dataclass
class Sizes:
    small: int
    bin1k: int
    calls: int
    warm: int
    repeat: int
    yield_every: int


@dataclass
class Sample:
    """One figure: throughput rows keep msgs/s; call rows keep (calls/s, p50 µs, p99 µs).
    ``cpu``: CPU share of wall time; ``cpu_us``: CPU µs per message or call (Python rows)."""

    values: list[Any] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    sys_share: list[float] = field(default_factory=list)


class Cpu:
    """This process's CPU time over wall time between enter and exit."""

    def __enter__(self) -> "Cpu":
        self.t0, self.w0 = os.times(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        t1 = os.times()
        usr, sys_ = t1.user - self.t0.user, t1.system - self.t0.system
        self.cpu = usr + sys_
        self.sys_share = sys_ / max(self.cpu, 1e-9)
        self.ratio = self.cpu / max(time.perf_counter() - self.w0, 1e-9)


def put_sample(res: dict[str, dict[str, Sample]], row: str, who: str, value: Any, cpu: Cpu | None = None,
               n: int = 1) -> None:
    """One figure of ``row`` for ``who`` (``py`` or ``beam``), with the CPU of ``n`` operations when measured."""
    s = res.setdefault(row, {}).setdefault(who, Sample())
    s.values.append(value)
    if cpu is not None:
        s.cpu.append(cpu.ratio)
        s.cpu_us.append(cpu.cpu * 1e6 / n)
        s.sys_share.append(cpu.sys_share)


async def measure(peers: Peers, sizes: Sizes, label: str) -> dict[str, dict[str, Sample]]:
    """Every row, Python (``label``) and BEAM, interleaved ``sizes.repeat`` times."""
    node = Node(f"{unique_name('benchpy')}@localhost", COOKIE)
    await node.start()
    res: dict[str, dict[str, Sample]] = {}
    put = functools.partial(put_sample, res)

    try:
        node.spawn(rx_body, name="bench_rx")
        await Echo.start(node, name="bench_echo")
        py, a, b = str(node.name), peers.a.name, peers.b.name
        # Warm-up: connections up, code paths hot.
        await beval(peers.a, f"pynode_dist_bench:oneway('{py}', 2000, small, 30000).")
        await py_oneway(node, a, 2000, "small", sizes.yield_every)
        await beval(peers.a, f"pynode_dist_bench:oneway('{b}', 2000, small, 30000).")
        await beval(peers.b, f"pynode_dist_bench:oneway('{a}', 2000, small, 30000).")
        for _ in range(sizes.repeat):
            for kind, n in (("small", sizes.small), ("bin1k", sizes.bin1k)):
                row = f"BEAM->X {kind}"
                with Cpu() as cpu:
                    us = await beval(peers.a, f"pynode_dist_bench:oneway('{py}', {n}, {kind}, 60000).")
                put(row, "py", n * 1e6 / us, cpu, n)
                us = await beval(peers.a, f"pynode_dist_bench:oneway('{b}', {n}, {kind}, 60000).")
                put(row, "beam", n * 1e6 / us)
                row = f"X->BEAM {kind}"
                with Cpu() as cpu:
                    s = await py_oneway(node, a, n, kind, sizes.yield_every)
                put(row, "py", n / s, cpu, n)
                us = await beval(peers.b, f"pynode_dist_bench:oneway('{a}', {n}, {kind}, 60000).")
                put(row, "beam", n * 1e6 / us)
            for who, target in (("py", py), ("beam", b)):
                with Cpu() as cpu:
                    total, p50, p99, _lo, _hi = await beval(
                        peers.e, f"PynodeDistBenchCaller.run({{:bench_echo, :'{target}'}}, {sizes.calls}, {sizes.warm})"
                    )
                put(
                    "call",
                    who,
                    (sizes.calls * 1e9 / total, p50 / 1e3, p99 / 1e3),
                    cpu if who == "py" else None,
                    sizes.calls + sizes.warm,
                )
    finally:
        await node.stop()
    return res


async def profile(peers: Peers, sizes: Sizes, top: int) -> str:
    """cProfile the Python node during BEAM->P and P->BEAM small-message runs."""
    node = Node(f"{unique_name('benchprof')}@localhost", COOKIE)
    await node.start()
    out = io.StringIO()
    try:
        node.spawn(rx_body, name="bench_rx")
        await Echo.start(node, name="bench_echo")
        py, a = str(node.name), peers.a.name
        await beval(peers.a, f"pynode_dist_bench:oneway('{py}', 2000, small, 30000).")
        await py_oneway(node, a, 2000, "small", sizes.yield_every)
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("BEAM->P small", lambda: beval(peers.a, f"pynode_dist_bench:oneway('{py}', {sizes.small}, small, 60000).")),
            ("P->BEAM small", lambda: py_oneway(node, a, sizes.small, "small", sizes.yield_every)),
            ("BEAM->P bin1k", lambda: beval(peers.a, f"pynode_dist_bench:oneway('{py}', {sizes.bin1k}, bin1k, 60000).")),
            ("P->BEAM bin1k", lambda: py_oneway(node, a, sizes.bin1k, "bin1k", sizes.yield_every)),
            (
                "E GenServer.call -> P",
                lambda: beval(peers.e, f"PynodeDistBenchCaller.run({{:bench_echo, :'{py}'}}, {sizes.calls}, {sizes.warm})"),
            ),
        ]
        for name, fn in cases:
            pr = cProfile.Profile()
            pr.enable()
            await fn()
            pr.disable()
            s = io.StringIO()
            st = pstats.Stats(pr, stream=s)
            st.sort_stats("tottime").print_stats(top)
            out.write(f"\n===== cProfile: {name} (sorted by tottime, top {top}) =====\n")
            # Drop pstats' preamble lines about the file list.
            out.write("\n".join(line for line in s.getvalue().splitlines() if line.strip()) + "\n")
    finally:
        await node.stop()
    return out.getvalue()


# --- report --------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: dict[str, dict[str, dict[str, Sample]]], sizes: Sizes, column: str = "loop") -> str:
    """The table: one line per row and key of ``results`` (event loops, or releases)."""
    loops = list(results)
    w = max(8, *(len(k) for k in loops))
    lines: list[str] = []
    rows = [
        ("BEAM->X small", f"one-way BEAM->X, {{msg,I,atom}} x{sizes.small} (msg/s)"),
        ("BEAM->X bin1k", f"one-way BEAM->X, 1 KB binary x{sizes.bin1k} (msg/s)"),
        ("X->BEAM small", f"one-way X->BEAM, {{msg,I,atom}} x{sizes.small} (msg/s)"),
        ("X->BEAM bin1k", f"one-way X->BEAM, 1 KB binary x{sizes.bin1k} (msg/s)"),
    ]
    tw = max(44, *(len(t) for _, t in rows))  # the title column
    head = f"{'row':<{tw}} {column:<{w}} {'python':>10} {'cpu':>5} {'cpu/msg':>8} {'sys':>4} {'BEAM':>10} {'py/BEAM':>8}"
    lines.append(head)
    lines.append("-" * len(head))
    for key, title in rows:
        for i, lp in enumerate(loops):
            r = results[lp][key]
            pyv, bv = _med(r["py"].values), _med(r["beam"].values)
            lines.append(
                f"{title if i == 0 else '':<{tw}} {lp:<{w}} {pyv:>10,.0f} {_med(r['py'].cpu) * 100:>4.0f}% "
                f"{_med(r['py'].cpu_us):>6.1f}us {_med(r['py'].sys_share) * 100:>3.0f}% {bv:>10,.0f} {pyv / bv:>8.2f}"
            )
    for idx, (unit, title, fmt) in enumerate(
        [
            ("calls/s", f"GenServer.call from Elixir x{sizes.calls} (calls/s)", "{:>10,.0f}"),
            ("p50", "  p50 latency (us)", "{:>10,.1f}"),
            ("p99", "  p99 latency (us)", "{:>10,.1f}"),
        ]
    ):
        for i, lp in enumerate(loops):
            r = results[lp]["call"]
            pyv = _med([v[idx] for v in r["py"].values])
            bv = _med([v[idx] for v in r["beam"].values])
            ratio = pyv / bv if idx == 0 else bv / pyv
            cpu = (
                f"{_med(r['py'].cpu) * 100:>4.0f}% {_med(r['py'].cpu_us):>6.1f}us {_med(r['py'].sys_share) * 100:>3.0f}%"
                if idx == 0
                else " " * 19
            )
            lines.append(f"{title if i == 0 else '':<{tw}} {lp:<{w}} {fmt.format(pyv)} {cpu} {fmt.format(bv)} {ratio:>8.2f}")
    lines.append("")
    lines.append(
        "python/BEAM: medians of %d runs; ratio = python/BEAM for throughput, BEAM/python for latency "
        "(below 1: Python slower).\ncpu: this process's CPU time / wall time during the Python row; cpu/msg: its CPU "
        "time per message (per call, warm-up included, for calls), less dependent on what else the\n"
        "machine runs; sys: the kernel's share of that CPU time (socket calls; loopback TCP does the receiver's work too)." % sizes.repeat
    )
    return "\n".join(lines)


def found_releases(spec: str) -> list[str]:
    """The release roots ``--releases`` names: ``found`` is the host's (``/``) and every chroot
    of ``$PYNODE_OTP_CACHE`` that ./dev.sh finished building (its ``.pynode-otp`` stamp), by
    OTP version; otherwise a comma-separated list of roots, ``host``, or Debian suites
    (``trixie`` is ``$PYNODE_OTP_CACHE/otp-trixie``)."""
    cache = os.environ.get("PYNODE_OTP_CACHE", "/var/cache/pynode")
    if spec == "found":
        roots = ["/"] + [
            os.path.join(cache, d) for d in sorted(os.listdir(cache) if os.path.isdir(cache) else [])
            if d.startswith("otp-") and os.path.isfile(os.path.join(cache, d, ".pynode-otp"))
        ]
    else:
        roots = []
        for item in (x.strip() for x in spec.split(",") if x.strip()):
            roots.append("/" if item == "host" else item if os.sep in item else os.path.join(cache, "otp-" + item))

    def key(r: str) -> tuple[int, ...]:
        return tuple(int(x) for x in otp_version(r).split(".") if x.isdigit())

    return sorted(roots, key=key)


def release_name(root: str | None) -> str:
    """``OTP 27.3.4.1 otp-trixie`` / ``OTP 25.2.3 host``."""
    r = otp_root(root)
    return f"OTP {otp_version(r)} " + (os.path.basename(r) if r else "host")


def run_loop(kind: str, coro: Any) -> Any:
    if kind == "uvloop":
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, one repeat (~30 s)")
    ap.add_argument("--repeat", type=int, help="runs per figure (median kept); default 3, 1 with --quick")
    ap.add_argument("--small", type=int, help="small messages per one-way run (default 100000; 30000 quick)")
    ap.add_argument("--bin1k", type=int, help="1 KB binaries per one-way run (default 25000; 10000 quick)")
    ap.add_argument("--calls", type=int, help="sequential calls per call run (default 3000; 1000 quick)")
    ap.add_argument("--yield-every", type=int, default=256, help="Python sender yields every N sends (default 256)")
    ap.add_argument("--loops", help="event loops to run, comma-separated (default uvloop,asyncio; with --releases, "
                                    "the first of them that is installed)")
    ap.add_argument("--releases", nargs="?", const="found", metavar="LIST",
                    help="every row on each OTP release in turn: the host's and every cached chroot (no LIST), or "
                         "LIST: comma-separated roots, 'host', Debian suites (trixie, sid)")
    ap.add_argument("--profile", action="store_true", help="also cProfile the Python side (after the timing)")
    ap.add_argument("--profile-loop", default="asyncio", help="event loop for --profile (default asyncio)")
    ap.add_argument("--top", type=int, default=22, help="functions per profile")
    args = ap.parse_args(argv)
    q = args.quick
    sizes = Sizes(
        small=args.small or (30_000 if q else 100_000),
        bin1k=args.bin1k or (10_000 if q else 25_000),
        calls=args.calls or (1_000 if q else 3_000),
        warm=200 if q else 300,
        repeat=args.repeat or (1 if q else 3),
        yield_every=args.yield_every,
    )
    loops = [x.strip() for x in (args.loops or "uvloop,asyncio").split(",") if x.strip()]
    if "uvloop" in loops:
        try:
            import uvloop  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            print("uvloop is not installed: skipping it", file=sys.stderr)
            loops.remove("uvloop")
    t_start = time.perf_counter()
    if args.releases:
        return releases_main(args, sizes, loops if args.loops else loops[:1], t_start)
    peers = start_peers()
    try:
        print(
            f"dist_bench: Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{release_name(None)}, Elixir caller; loops: {', '.join(loops)}; "
            f"yield every {sizes.yield_every} sends",
            flush=True,
        )
        results = {}
        for lp in loops:
            t0 = time.perf_counter()
            results[lp] = run_loop(lp, measure(peers, sizes, lp))
            print(f"  [{lp}: {time.perf_counter() - t0:.1f} s]", flush=True)
        print()
        print(report(results, sizes))
        if args.profile:
            print(run_loop(args.profile_loop, profile(peers, sizes, args.top)))
    finally:
        peers.stop()
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


def releases_main(args: argparse.Namespace, sizes: Sizes, loops: list[str], t_start: float) -> int:
    """``--releases``: the rows on each release, one after the other, in this process."""
    roots = found_releases(args.releases)
    names = [release_name(r) for r in roots]
    print(
        f"dist_bench --releases: Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"codec {'C' if codec.ACCELERATED else 'pure Python'}; releases: {', '.join(names)}; loop{'s' if len(loops) > 1 else ''}: {', '.join(loops)}; "
        f"yield every {sizes.yield_every} sends",
        flush=True,
    )
    by_loop: dict[str, dict[str, dict[str, dict[str, Sample]]]] = {lp: {} for lp in loops}
    for root, name in zip(roots, names):
        t0 = time.perf_counter()
        peers = start_peers(root)
        try:
            ex = peers.e.eval("System.version()")
            for lp in loops:
                by_loop[lp][name] = run_loop(lp, measure(peers, sizes, lp))
        finally:
            peers.stop()
        print(f"  [{name} (Elixir {bytes(ex).decode()}): {time.perf_counter() - t0:.1f} s]", flush=True)
    for lp in loops:
        print(f"\nloop: {lp}; BEAM = two BEAM nodes of the same release, measured in the same run")
        print(report(by_loop[lp], sizes, column="release"))
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
