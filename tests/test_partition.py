"""A real network partition between two hosts (network namespaces joined by a veth pair),
healed with no intervention, loses no acknowledged update (docs/JOBS_PROTOCOL.md,
"Partitions"; docs/DISCOVERY.md).

Host A (10.99.0.1) runs ``a1`` (Elixir, ``iex ... -S mix``) and ``c1`` (Python); host B
(10.99.0.2) runs ``b1`` (Python) and ``d1`` (Elixir). In term order the nodes alternate
between the hosts (a1 < b1 < c1 < d1), so every job's replica is on the other host, and
after the heal the four pairs (winner, loser) are Elixir/Python, Python/Python,
Python/Elixir and Elixir/Elixir. The configuration is what an operator of two hosts writes:
the ``hosts`` to look at, a shorter poll, and ``net_ticktime`` 4 s so that the split is
noticed in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from erl_interop.terms import Atom
from pynode.testing import compile_mix_project, test_cookie, wait_until

from netns import ADDR_A, ADDR_B, Hosts
from use_case import MIX_PROJECT, Iex, PyServer, stop_all

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

IDS = list(range(1, 9))
HOST_KEY = "{:p, :g, :pynode_job_host}"


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


def _until(fn: Any, timeout: float, what: str) -> Any:
    return wait_until(fn, timeout=timeout, interval=0.1, what=what)


def _hosts(n: Iex) -> set[Atom]:
    return set(n.ev(f"Enum.map(Pynode.Registry.lookup_pids({HOST_KEY}), &node/1)"))


def _holders(n: Iex) -> dict[int, Any]:
    return dict(n.ev("for i <- 1..8, into: %{}, do: {i, Pynode.Registry.where({:n, :g, {:pynode_job, i}})}"))


def test_partition_heals_by_itself_and_keeps_every_acknowledged_update(tmp_path: Path, mix_compiled: None) -> None:
    cookie = test_cookie()
    config = tmp_path / "sys.config"
    config.write_text(
        f"[{{pynode, [{{hosts, ['{ADDR_A}', '{ADDR_B}']}}, {{poll_interval, 1000}}]}},\n"
        " {kernel, [{net_ticktime, 4}]}].\n"
    )
    nodes: list[Any] = []
    with Hosts() as hosts:
        try:
            def iex(name: str, side: str) -> Iex:
                n = Iex(["--name", name, "--cookie", cookie, "--erl", f"-config {config}"], prefix=hosts.prefix(side))
                nodes.append(n)
                return n

            def py(name: str, side: str) -> PyServer:
                n = PyServer(["--name", name, "--cookie", cookie, "--config", str(config), "--ticktime", "4"],
                             prefix=hosts.prefix(side))
                nodes.append(n)
                return n

            a1 = iex(f"a1@{ADDR_A}", "a")
            py(f"b1@{ADDR_B}", "b")
            py(f"c1@{ADDR_A}", "a")
            d1 = iex(f"d1@{ADDR_B}", "b")
            side_a = {Atom(f"a1@{ADDR_A}"), Atom(f"c1@{ADDR_A}")}
            side_b = {Atom(f"b1@{ADDR_B}"), Atom(f"d1@{ADDR_B}")}
            everyone = side_a | side_b
            _until(lambda: _hosts(a1) == everyone and _hosts(d1) == everyone, 60, "one cluster of four hosts")

            for i in IDS:
                assert a1.ev(f"Job.start({i})")[0] == Atom("ok")
                assert a1.ev(f"Job.update({i}, {{:pre, {i}}})") == Atom("ok")
            owners = {p.node for p in _holders(a1).values()}
            assert owners == everyone, owners  # round-robin placement: two jobs on each host

            hosts.split()
            _until(lambda: _hosts(a1) == side_a and _hosts(d1) == side_b, 60, "each side to see only its own hosts")

            def both_sides_run_every_job() -> bool:
                ha, hb = _holders(a1), _holders(d1)
                return all(getattr(ha[i], "node", None) in side_a and getattr(hb[i], "node", None) in side_b for i in IDS)

            _until(both_sides_run_every_job, 60, "every job adopted on the side that lost its owner")
            for k in (1, 2):  # acknowledged on both sides while split
                for i in IDS:
                    assert a1.ev(f"Job.update({i}, {{:a, {k}}})") == Atom("ok")
                    assert d1.ev(f"Job.update({i}, {{:b, {k}}})") == Atom("ok")

            hosts.heal()  # and nothing else: discovery reconnects, the registry and hosts merge
            _until(lambda: _hosts(a1) == everyone and _hosts(d1) == everyone, 60, "one cluster again")
            _until(lambda: _holders(a1) == _holders(d1) and all(hasattr(p, "node") for p in _holders(a1).values()),
                   60, "one copy of every job, the same on both sides")

            for i in IDS:
                events = a1.ev(f"Job.finish({i})")
                assert events[-1] == i and events[-2] == (Atom("pre"), i), events
                assert len(events) == 6, events  # pre, a1, a2, b1, b2, id: nothing lost, nothing twice
                new = events[:-2]
                a_events = [e for e in new if e[0] == Atom("a")]
                b_events = [e for e in new if e[0] == Atom("b")]
                assert a_events == [(Atom("a"), 2), (Atom("a"), 1)], events  # each side's order kept
                assert b_events == [(Atom("b"), 2), (Atom("b"), 1)], events
            logs = "\n".join(n.out.tail(100000) for n in nodes)
            assert "merged the copy from" in logs
        finally:
            stop_all(nodes)
