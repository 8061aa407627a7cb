"""Cluster benchmark: how fast a cluster forms, re-replicates and heals, mixed Elixir/Python
beside all-Elixir (and all-Python), measured in one run.

Run from the repository root (as root: the heal scenario makes network namespaces)::

    .venv/bin/python bench/cluster_bench.py              # every scenario, 3 rounds, ~3 minutes
    .venv/bin/python bench/cluster_bench.py --repeat 1 --only formation

Theory of operation. The servers are started exactly as a user starts them, with no
configuration beyond the scenario's own: ``iex --sname X --cookie C -S mix`` in mix_compat/
(class ``Iex`` of tests/use_case.py, which types expressions at the iex prompt) and
``python -m pynode --sname X --cookie C``. Each round gets a fresh cookie, so rounds never see
each other's nodes. Times are wall-clock seconds on this machine, medians of ``--repeat``.

1. *formation*: three servers started one after the other; the figure is the time from the
   last server being ready (the iex prompt evaluates, or ``python -m pynode`` printed its
   ``up`` line) until every server's registry lists all three (``Pynode.Registry.members/0``
   on an Elixir server, the ``members`` of ``:pynode.info/0`` on a Python one), polled every
   5 ms by a hidden Elixir observer node that runs no application.
2. *join-replica*: host B alone runs 50 ``Job`` jobs (so none has a replica); host A starts;
   the figure is the time from A being ready until A's host holds a replica of every job
   (its ``replicas`` call), polled every 5 ms by the observer.
3. *heal*: host A (10.99.0.1) and host B (10.99.0.2) in two network namespaces, one server
   each, ``hosts`` and ``poll_interval`` 1000 in sys.config, ``net_ticktime`` 4; 8 jobs;
   the link goes down until each side runs its own copy of every job and each copy has
   acknowledged an update; the link comes back up. The figure is the time from the link
   coming up until both servers see one cluster again with one copy of every job (the
   merge done), polled by a hidden iex driver on each side (a visible one would let OTP's
   ``global`` reconnect the visible servers through it).

The goal (issue 8): within one poll interval plus one second, and no worse than all-Elixir.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from erl_interop.terms import Atom  # noqa: E402
from pynode.testing import BeamNode, compile_mix_project, unique_name  # noqa: E402

from netns import ADDR_A, ADDR_B, Hosts  # noqa: E402
from use_case import EBIN, MIX_PROJECT, PYNODE_EBIN, Iex, PyServer, stop_all  # noqa: E402

POLL_MS = 5000  # discovery's default poll_interval, for the goal column
HEAL_POLL_MS = 1000

WAIT_MEMBERS = """
expected = Enum.sort(%(nodes)s)
members = fn n ->
  try do
    :erpc.call(n, Pynode.Registry, :members, [], 1000)
  catch
    :error, {:exception, :undef, _} ->
      try do
        Map.get(:erpc.call(n, :pynode, :info, [], 1000), :members)
      catch
        _, _ -> nil
      end
    _, _ -> nil
  end
end
deadline = System.monotonic_time(:millisecond) + 30_000
wait = fn wait ->
  cond do
    Enum.all?(expected, fn n -> members.(n) == expected end) -> :ok
    System.monotonic_time(:millisecond) > deadline -> :timeout
    true -> Process.sleep(5); wait.(wait)
  end
end
wait.(wait)
"""

WAIT_REPLICAS = """
want = MapSet.new(%(ids)s)
deadline = System.monotonic_time(:millisecond) + 30_000
held = fn ->
  try do
    for {id, _kind, _owner, _seq} <- GenServer.call({:pynode_jobs, %(node)s}, :replicas, 1000), into: MapSet.new(), do: id
  catch
    _, _ -> MapSet.new()
  end
end
wait = fn wait ->
  cond do
    MapSet.subset?(want, held.()) -> :ok
    System.monotonic_time(:millisecond) > deadline -> :timeout
    true -> Process.sleep(5); wait.(wait)
  end
end
wait.(wait)
"""


def _atom_list(names: list[str]) -> str:
    return "[" + ", ".join(f':"{n}"' for n in names) + "]"


def _server(lang: str, name: str, cookie: str, extra: list[str] | None = None) -> Any:
    if lang == "e":
        return Iex(["--sname", name, "--cookie", cookie, *(extra or [])])
    return PyServer(["--sname", name, "--cookie", cookie, *(extra or [])])


def _observer(cookie: str) -> BeamNode:
    return BeamNode.start(unique_name("obs") + "@localhost", cookie, lang="elixir", hidden=True, args=["-pa", str(EBIN), str(PYNODE_EBIN)])


def formation(mix: str) -> float:
    cookie = "bench" + unique_name("")
    names = [unique_name(f"f{i}") + "@localhost" for i in range(len(mix))]
    nodes: list[Any] = []
    obs = _observer(cookie)
    try:
        for lang, name in zip(mix, names):
            nodes.append(_server(lang, name, cookie))
        ready = time.monotonic()
        r = obs.eval(WAIT_MEMBERS % {"nodes": _atom_list(names)}, timeout=60)
        done = time.monotonic()
        assert r == Atom("ok"), r
        return done - ready
    finally:
        stop_all(nodes)
        obs.stop(timeout=5)


def join_replica(mix: str, jobs: int = 50) -> float:
    """mix: the languages of (B, A); B runs the jobs, A joins."""
    cookie = "bench" + unique_name("")
    b_name, a_name = unique_name("b") + "@localhost", unique_name("a") + "@localhost"
    nodes: list[Any] = []
    obs = _observer(cookie)
    try:
        nodes.append(_server(mix[0], b_name, cookie))
        ids = list(range(1, jobs + 1))
        obs.eval(f'Node.connect(:"{b_name}")')
        r = obs.eval(f"for i <- {ids[0]}..{ids[-1]}, do: elem(Job.start(i), 0)", timeout=60)
        assert r == [Atom("ok")] * jobs, r
        nodes.append(_server(mix[1], a_name, cookie))
        ready = time.monotonic()
        r = obs.eval(WAIT_REPLICAS % {"ids": str(ids), "node": f':"{a_name}"'}, timeout=60)
        done = time.monotonic()
        assert r == Atom("ok"), r
        return done - ready
    finally:
        stop_all(nodes)
        obs.stop(timeout=5)


def heal(mix: str, tmp: Path) -> float:
    """mix: the languages of the server on host A and on host B."""
    cookie = "bench" + unique_name("")
    config = tmp / f"{cookie}.config"
    config.write_text(f"[{{pynode, [{{hosts, ['{ADDR_A}', '{ADDR_B}']}}, {{poll_interval, {HEAL_POLL_MS}}}]}},"
                      " {kernel, [{net_ticktime, 4}]}].\n")
    nodes: list[Any] = []
    with Hosts() as hosts:
        try:
            def server(lang: str, name: str, side: str) -> Any:
                if lang == "e":
                    n: Any = Iex(["--name", name, "--cookie", cookie, "--erl", f"-config {config}"], prefix=hosts.prefix(side))
                else:
                    n = PyServer(["--name", name, "--cookie", cookie, "--config", str(config), "--ticktime", "4"],
                                 prefix=hosts.prefix(side))
                nodes.append(n)
                return n

            def driver(name: str, side: str, server_name: str) -> Iex:
                # hidden: a visible driver connected to both sides would make OTP's global
                # mesh the visible servers again, and the figure would be the driver's
                d = Iex(["--name", name, "--cookie", cookie, "--hidden", "--erl", f"-pa {EBIN} {PYNODE_EBIN} -kernel net_ticktime 4"],
                        prefix=hosts.prefix(side), mix=False)
                nodes.append(d)
                assert d.ev(f'Node.connect(:"{server_name}")') is True
                return d

            sa, sb = f"a@{ADDR_A}", f"b@{ADDR_B}"
            server(mix[0], sa, "a")
            server(mix[1], sb, "b")
            da, db = driver(f"da@{ADDR_A}", "a", sa), driver(f"db@{ADDR_B}", "b", sb)
            def view(d: Iex, server_name: str) -> Any:
                """Every job the driver's side of the cluster runs: ``[(Id, Pid)]`` (a client-only
                node's ``list``, answered by a connected host)."""
                del server_name
                return d.ev("try do Enum.sort(for {id, _k, pid} <- Pynode.Jobs.list(), do: {id, pid}) "
                            "catch _, _ -> nil end")

            def until(fn: Callable[[], Any], timeout: float, what: str) -> None:
                deadline = time.monotonic() + timeout
                while not fn():
                    if time.monotonic() > deadline:
                        raise AssertionError(f"timed out waiting for {what}")
                    time.sleep(0.02)

            assert da.ev(WAIT_MEMBERS % {"nodes": _atom_list([sa, sb])}, timeout=60) == Atom("ok")
            for i in range(1, 9):
                assert da.ev(f"elem(Job.start({i}), 0)") == Atom("ok")
            until(lambda: len(view(da, sa) or []) == 8, 30, "8 jobs")
            hosts.split()
            until(lambda: len(view(da, sa) or []) == 8 and len(view(db, sb) or []) == 8
                  and {p.node for _, p in view(da, sa)} == {Atom(sa)} and {p.node for _, p in view(db, sb)} == {Atom(sb)},
                  60, "a copy of every job on each side")
            for i in range(1, 9):
                assert da.ev(f"Job.update({i}, :a)") == Atom("ok")
                assert db.ev(f"Job.update({i}, :b)") == Atom("ok")
            hosts.heal()
            t0 = time.monotonic()

            def one() -> bool:
                va, vb = view(da, sa), view(db, sb)
                return va is not None and va == vb and len(va) == 8

            until(one, 60, "one cluster with one copy of every job")
            assert da.ev(WAIT_MEMBERS % {"nodes": _atom_list([sa, sb])}, timeout=60) == Atom("ok")
            return time.monotonic() - t0
        finally:
            stop_all(nodes)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="formation,join-replica,heal")
    args = p.parse_args()
    only = set(args.only.split(","))
    compile_mix_project(str(MIX_PROJECT))
    tmp = Path("/tmp") / unique_name("clusterbench")
    tmp.mkdir()
    rows: list[tuple[str, str, float, float]] = []

    def measure(section: str, label: str, fn: Callable[[], float], goal_ms: float) -> float:
        xs = [fn() for _ in range(args.repeat)]
        med = statistics.median(xs)
        rows.append((section, label, med, goal_ms))
        print(f"  {section:<13} {label:<24} median {med * 1000:8.0f} ms  (runs: "
              + ", ".join(f"{x * 1000:.0f}" for x in xs) + ")", flush=True)
        return med

    print(f"cluster bench: {args.repeat} round(s) each; goal: one poll interval + 1 s", flush=True)
    ratios = []
    if "formation" in only:
        base = measure("formation", "all-Elixir (eee)", lambda: formation("eee"), POLL_MS + 1000)
        for mix in ("epp", "eep", "ppp"):
            m = measure("formation", f"mixed ({mix})" if mix != "ppp" else "all-Python (ppp)", lambda mix=mix: formation(mix), POLL_MS + 1000)
            ratios.append(("formation", mix, m / base))
    if "join-replica" in only:
        base = measure("join-replica", "all-Elixir (B e, A e)", lambda: join_replica("ee"), POLL_MS + 1000)
        for mix in ("ep", "pe", "pp"):
            m = measure("join-replica", f"B {mix[0]}, A {mix[1]}", lambda mix=mix: join_replica(mix), POLL_MS + 1000)
            ratios.append(("join-replica", mix, m / base))
    if "heal" in only:
        base = measure("heal", "all-Elixir (A e, B e)", lambda: heal("ee", tmp), HEAL_POLL_MS + 1000)
        for mix in ("ep", "pp"):
            m = measure("heal", f"A {mix[0]}, B {mix[1]}", lambda mix=mix: heal(mix, tmp), HEAL_POLL_MS + 1000)
            ratios.append(("heal", mix, m / base))
    print("\nsection        cluster                   median ms   goal ms   within goal")
    for section, label, med, goal in rows:
        print(f"{section:<14} {label:<24} {med * 1000:9.0f} {goal:9.0f}   {'yes' if med * 1000 <= goal else 'NO'}")
    print("\nratio to all-Elixir (lower is faster):")
    for section, mix, r in ratios:
        print(f"  {section:<13} {mix:<4} {r:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
