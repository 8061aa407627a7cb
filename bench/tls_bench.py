"""TLS distribution benchmark: a Python node over ``inet_tls`` beside two BEAM nodes over
``inet_tls``, the same traffic in the same run, and the connection setup (TLS handshake
included) beside the BEAM's.

Run from the repository root::

    .venv/bin/python bench/tls_bench.py            # about 2 minutes
    .venv/bin/python bench/tls_bench.py --quick    # about 40 s, noisier
    .venv/bin/python bench/tls_bench.py --tcp      # also every row over plain TCP (the TLS cost)
    .venv/bin/python bench/tls_bench.py --key ec   # P-256 certificates instead of RSA 2048

Theory of operation: the certificates are made at start with ``openssl`` (tests/tls_certs.py:
a CA and one node certificate, ``verify_peer`` and ``fail_if_no_peer_cert`` on both sides,
OTP 25's default of TLS 1.2). Three BEAM peers run ``-proto_dist inet_tls -ssl_dist_optfile``
with that file: ``erl`` nodes A and B (hidden, like the Python node), which load
bench/dist_bench.py's compiled module, and an ``elixir`` caller E; the Python node P runs
in this process with ``Node(tls=...)`` on the event loop chosen (uvloop when installed).
The traffic rows are bench/dist_bench.py's, measured with its code, X being P or B:

- *BEAM -> X one-way*: A sends N messages to ``bench_rx`` on X; N / time on A;
- *X -> BEAM one-way*: X sends N messages to ``bench_rx`` on A;
- *GenServer.call*: E makes K sequential ``GenServer.call({bench_echo, X}, {:echo, I})``.

*Connection setup* is the time ``net_kernel:connect_node/1`` takes on the BEAM (compiled
code, ``erlang:monotonic_time``) and ``Node.network.connect`` on P: EPMD lookup, TCP
connect, TLS handshake and distribution handshake, after the previous connection was
closed and a short pause (``--gap``) let both sides forget it. Rows: A dials B (BEAM ->
BEAM), A dials P (BEAM -> Python, P accepts), P dials A (Python -> BEAM, P dials); the
median and p90 of ``--setups`` connections each.

Ratios are Python / BEAM for throughput and BEAM / Python for times (below 1: Python slower).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_BENCH = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH)
for p in (_ROOT, os.path.join(_ROOT, "tests"), _BENCH):
    if p not in sys.path:
        sys.path.insert(0, p)

import dist_bench as db  # noqa: E402  (its rows, receiver, echo server and report)
from erl_interop.terms import Atom  # noqa: E402
from pynode.node import Node  # noqa: E402
from pynode.testing import BeamNode, unique_name  # noqa: E402
from tls_certs import erl_tls_args, make_pki, optfile  # noqa: E402

COOKIE = "tlsbench"

SETUP_SOURCE = r"""
-module(pynode_tls_bench).
-export([setup_times/3, one/2]).

%% N connections to Node, each after a disconnect and Gap ms: microseconds of connect_node/1.
setup_times(Node, N, Gap) -> [one(Node, Gap) || _ <- lists:seq(1, N)].

one(Node, Gap) ->
    erlang:disconnect_node(Node),
    timer:sleep(Gap),
    T0 = erlang:monotonic_time(microsecond),
    true = net_kernel:connect_node(Node),
    erlang:monotonic_time(microsecond) - T0.
"""


Peers = db.Peers  # A, B and E, as dist_bench's


def start_peers(args: list[str], tmp: str) -> Peers:
    """A and B (erl, hidden, the dist_bench and setup modules loaded) and E (elixir), with ``args``."""
    started: list[BeamNode] = []
    try:
        srcs = []
        for name, text in (("pynode_dist_bench", db.MODULE_SOURCE), ("pynode_tls_bench", SETUP_SOURCE)):
            path = os.path.join(tmp, name + ".erl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            srcs.append(path)
        for tag in ("tlsA", "tlsB"):
            n = BeamNode.start(unique_name(tag) + "@localhost", cookie=COOKIE, hidden=True, args=args)
            started.append(n)
            for path in srcs:
                res = n.eval('{ok, M, Bin} = compile:file("%s", [binary, report]), {module, M} = code:load_binary(M, "%s", Bin), ok.'
                             % (path, path))
                if res != "ok":
                    raise RuntimeError(f"could not load {path} on {n.name}: {res!r}")
            n.eval("ok = pynode_dist_bench:start_rx(), ok = pynode_dist_bench:echo_start(), ok.")
        e = BeamNode.start(unique_name("tlsE") + "@localhost", cookie=COOKIE, lang="elixir", hidden=True, args=args)
        started.append(e)
        e.eval(db.ELIXIR_CALLER)
    except BaseException:
        for n in started:
            n.kill()
        raise
    return Peers(*started)


async def py_setup_times(node: Node, peer: str, n: int, gap: float) -> list[float]:
    """``n`` dials of ``peer`` from the Python node: microseconds of ``network.connect``."""
    out = []
    for _ in range(n):
        c = node.network.conns.get(Atom(peer))
        if c is not None:
            c.close()
        await asyncio.sleep(gap)  # the peer notices the close (a bench pause, outside the timing)
        t0 = time.perf_counter()
        if not await node.network.connect(peer):
            raise RuntimeError(f"could not connect to {peer}")
        out.append((time.perf_counter() - t0) * 1e6)
    return out


async def measure(peers: Peers, sizes: db.Sizes, tls: Path | None, setups: int, gap_ms: int) -> dict[str, dict[str, db.Sample]]:
    """dist_bench's rows (P against B, interleaved) and the setup rows, for one carrier."""
    node = Node(f"{unique_name('tlspy')}@localhost", COOKIE, tls=tls)
    node.config = {"discovery": False, "host_jobs": False}
    await node.start()
    res: dict[str, dict[str, db.Sample]] = {}
    put = functools.partial(db.put_sample, res)

    try:
        node.spawn(db.rx_body, name="bench_rx")
        await db.Echo.start(node, name="bench_echo")
        py, a, b = str(node.name), peers.a.name, peers.b.name
        # warm-up: connections up, code paths hot
        await db.beval(peers.a, f"pynode_dist_bench:oneway('{py}', 2000, small, 30000).")
        await db.py_oneway(node, a, 2000, "small", sizes.yield_every)
        await db.beval(peers.a, f"pynode_dist_bench:oneway('{b}', 2000, small, 30000).")
        await db.beval(peers.b, f"pynode_dist_bench:oneway('{a}', 2000, small, 30000).")
        for _ in range(sizes.repeat):
            for kind, n in (("small", sizes.small), ("bin1k", sizes.bin1k)):
                with db.Cpu() as cpu:
                    us = await db.beval(peers.a, f"pynode_dist_bench:oneway('{py}', {n}, {kind}, 60000).")
                put(f"BEAM->X {kind}", "py", n * 1e6 / us, cpu, n)
                us = await db.beval(peers.a, f"pynode_dist_bench:oneway('{b}', {n}, {kind}, 60000).")
                put(f"BEAM->X {kind}", "beam", n * 1e6 / us)
                with db.Cpu() as cpu:
                    s = await db.py_oneway(node, a, n, kind, sizes.yield_every)
                put(f"X->BEAM {kind}", "py", n / s, cpu, n)
                us = await db.beval(peers.b, f"pynode_dist_bench:oneway('{a}', {n}, {kind}, 60000).")
                put(f"X->BEAM {kind}", "beam", n * 1e6 / us)
            for who, target in (("py", py), ("beam", b)):
                with db.Cpu() as cpu:
                    total, p50, p99, _lo, _hi = await db.beval(
                        peers.e, f"PynodeDistBenchCaller.run({{:bench_echo, :'{target}'}}, {sizes.calls}, {sizes.warm})")
                put("call", who, (sizes.calls * 1e9 / total, p50 / 1e3, p99 / 1e3), cpu if who == "py" else None,
                    sizes.calls + sizes.warm)
        # connection setup: interleaved in rounds so that load hits every row alike
        per = max(1, setups // sizes.repeat)
        for _ in range(sizes.repeat):
            for v in await db.beval(peers.a, f"pynode_tls_bench:setup_times('{b}', {per}, {gap_ms}).", 300):
                put("setup BEAM->BEAM", "beam", v)
            for v in await db.beval(peers.a, f"pynode_tls_bench:setup_times('{py}', {per}, {gap_ms}).", 300):
                put("setup BEAM->py", "py", v)
            for v in await py_setup_times(node, a, per, gap_ms / 1000):
                put("setup py->BEAM", "py", v)
    finally:
        await node.stop()
    return res


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def setup_report(results: dict[str, dict[str, dict[str, db.Sample]]], setups: int) -> str:
    lines = []
    head = f"{'connection setup (ms)':<44} {'carrier':<8} {'median':>8} {'p90':>8} {'BEAM->BEAM':>11} {'p90':>8} {'BEAM/py':>8}"
    lines += [head, "-" * len(head)]
    for key, title in (("setup BEAM->py", "BEAM dials Python (Python accepts)"),
                       ("setup py->BEAM", "Python dials BEAM (Python dials)")):
        for i, carrier in enumerate(results):
            py = results[carrier][key]["py"].values
            beam = results[carrier]["setup BEAM->BEAM"]["beam"].values
            pm, bm = statistics.median(py) / 1e3, statistics.median(beam) / 1e3
            lines.append(f"{title if i == 0 else '':<44} {carrier:<8} {pm:>8.2f} {_pct(py, 0.9) / 1e3:>8.2f} "
                         f"{bm:>11.2f} {_pct(beam, 0.9) / 1e3:>8.2f} {bm / pm:>8.2f}")
    lines.append("")
    lines.append(f"setup: EPMD lookup + TCP connect + TLS handshake + distribution handshake, {setups} connections per row "
                 "(after a disconnect and a pause); BEAM->BEAM: erl A dials erl B with net_kernel:connect_node/1.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, one repeat")
    ap.add_argument("--repeat", type=int, help="runs per figure (median kept); default 3, 1 with --quick")
    ap.add_argument("--small", type=int, help="small messages per one-way run (default 50000; 20000 quick)")
    ap.add_argument("--bin1k", type=int, help="1 KB binaries per one-way run (default 20000; 8000 quick)")
    ap.add_argument("--calls", type=int, help="sequential calls per call run (default 2000; 1000 quick)")
    ap.add_argument("--setups", type=int, help="connections per setup row (default 60; 20 quick)")
    ap.add_argument("--gap", type=int, default=30, help="ms between a disconnect and the next connect (default 30)")
    ap.add_argument("--yield-every", type=int, default=256, help="Python sender yields every N sends (default 256)")
    ap.add_argument("--loop", default=None, help="uvloop (default when installed) or asyncio")
    ap.add_argument("--tcp", action="store_true", help="also every row over plain TCP (inet_tcp), for the TLS cost")
    ap.add_argument("--key", choices=["rsa", "ec"], default="rsa", help="certificate keys: RSA 2048 (default) or P-256")
    ap.add_argument("--log", action="store_true", help="show the Python node's warnings (other clusters on the host "
                    "knocking, for one)")
    args = ap.parse_args(argv)
    if not args.log:
        for name in ("pynode", "erl_interop"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    q = args.quick
    sizes = db.Sizes(small=args.small or (20_000 if q else 50_000), bin1k=args.bin1k or (8_000 if q else 20_000),
                     calls=args.calls or (1_000 if q else 2_000), warm=200 if q else 300,
                     repeat=args.repeat or (1 if q else 3), yield_every=args.yield_every)
    setups = args.setups or (20 if q else 60)
    loop = args.loop
    if loop is None:
        try:
            import uvloop  # type: ignore[import-not-found]  # noqa: F401
            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="pynode_tls_bench_")
    try:
        pki = make_pki(Path(tmp) / "pki", key=args.key)
        opt = optfile(Path(tmp) / "dist.conf", pki.node_cert, pki.node_key, pki.ca)
        carriers: list[tuple[str, Path | None]] = [("TLS", opt)] + ([("TCP", None)] if args.tcp else [])
        results: dict[str, dict[str, dict[str, db.Sample]]] = {}
        otp = ""
        for label, tls in carriers:
            peers = start_peers(erl_tls_args(tls) if tls is not None else [], tmp)
            try:
                otp = bytes(peers.a.eval("list_to_binary(erlang:system_info(otp_release)).")).decode()
                t0 = time.perf_counter()
                results[label] = db.run_loop(loop, measure(peers, sizes, tls, setups, args.gap))
                print(f"  [{label}: {time.perf_counter() - t0:.1f} s]", flush=True)
            finally:
                peers.stop()
        print(f"\ntls_bench: Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, OTP {otp}; "
              f"loop {loop}; certificates {'RSA 2048' if args.key == 'rsa' else 'ECDSA P-256'}, verify_peer both ways, "
              "TLS 1.2 (OTP 25's inet_tls_dist default); BEAM = two BEAM nodes on the same carrier, in the same run\n")
        print(db.report(results, sizes, column="carrier"))
        print()
        print(setup_report(results, setups))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
