"""Discovery against real nodes (docs/DISCOVERY.md): formation with no configuration, the
``connect`` list retried, nodes that refuse us or run no registry remembered and backed off,
discovery switched off, and (between network namespaces) the ``dns`` strategy and a
``.hosts.erlang`` file. The rules themselves are checked against the shared vectors in
test_discovery_unit.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from erl_interop.terms import Atom
from pynode import discovery
from pynode.node import Node
from pynode.testing import BeamNode, compile_mix_project, test_cookie, unique_name

from netns import ADDR_A, ADDR_B, Hosts
from node_helpers import A, beam, py_node, run, wait_for  # noqa: F401  (beam is a fixture)
from use_case import MIX_PROJECT, Iex, PyServer, stop_all

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

FAST = {"poll_interval": 200}


def test_python_and_elixir_nodes_find_each_other_with_no_configuration(beam: Any) -> None:
    compile_mix_project(str(MIX_PROJECT))
    ex = beam("elixir", mix_project=str(MIX_PROJECT))

    async def main() -> None:
        async with py_node() as p1:
            async with py_node() as p2:
                want = sorted([p1.name, p2.name, A(ex.name)])
                await wait_for(lambda: p1.registry.members() == want and p2.registry.members() == want,
                               timeout=15, what="one cluster of three")
                assert await asyncio.to_thread(ex.eval, "Pynode.Registry.members()") == want
                # the Python nodes are hidden: the Elixir node lists them only as hidden
                assert sorted(await asyncio.to_thread(ex.eval, "Node.list(:hidden)")) == sorted([p1.name, p2.name])

    run(main)


def test_connect_list_is_retried_until_the_node_starts() -> None:
    later = unique_name("later") + "@localhost"

    async def main() -> None:
        # `later` does not exist yet: only the connect list makes it a candidate, and it is
        # tried at every poll (unreachable is never backed off) until it is there.
        async with py_node(config={**FAST, "connect": [later]}) as p:
            await wait_for(lambda: p.discovery.status().get(A(later), {}).get("outcome") == discovery.UNREACHABLE,
                           timeout=5, what="an attempt at a node that does not exist yet")
            polls = p.discovery.polls
            await wait_for(lambda: p.discovery.polls >= polls + 3, timeout=5, what="three more polls")
            assert p.discovery.status()[A(later)]["k"] == 0  # unreachable: retried, never backed off
            n = Node(later, test_cookie(), config={"discovery": False})
            await n.start()
            try:
                await wait_for(lambda: A(later) in p.connected_nodes, timeout=5, what="the connect-listed node reached")
                await wait_for(lambda: A(later) in p.registry.members(), timeout=5, what="and a member")
                assert p.discovery.status()[A(later)]["outcome"] == discovery.OK
            finally:
                await n.stop()

    run(main)


def test_a_node_with_another_cookie_is_backed_off_and_logged_once(beam: Any, caplog: Any) -> None:
    other = beam("erlang", cookie="another-" + test_cookie())
    caplog.set_level(logging.DEBUG, logger="pynode.discovery")

    async def main() -> None:
        async with py_node(config=FAST) as p:
            await wait_for(lambda: p.discovery.status().get(A(other.name), {}).get("outcome") == discovery.REFUSED,
                           timeout=5, what="a refused attempt")
            polls = p.discovery.polls
            await wait_for(lambda: p.discovery.polls >= polls + 15, timeout=10, what="fifteen more polls")
            st = p.discovery.status()[A(other.name)]
            # 200 ms polls: attempts at 0, +200, +600, +1400, +3000 ms ... not fifteen
            assert 1 <= st["k"] <= 5, st
            assert A(other.name) not in p.connected_nodes

    run(main)
    warnings = [r for r in caplog.records if r.name == "pynode.discovery" and r.levelno == logging.WARNING
                and other.name in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    # the BEAM side saw the attempts too: a handful, not one per poll
    assert other.eval("ok.") == Atom("ok")


def test_a_node_without_a_registry_is_noted_and_left_connected(beam: Any, caplog: Any) -> None:
    plain = beam("erlang")
    caplog.set_level(logging.INFO, logger="pynode.discovery")

    async def main() -> None:
        async with py_node(config=FAST) as p:
            await wait_for(lambda: p.discovery.status().get(A(plain.name), {}).get("outcome") == discovery.NO_REGISTRY,
                           timeout=5, what="the plain erl node noted as running no registry")
            assert A(plain.name) in p.connected_nodes  # never disconnected
            assert A(plain.name) not in p.registry.members()

    run(main)
    infos = [r for r in caplog.records if "runs no pynode registry" in r.getMessage() and plain.name in r.getMessage()]
    assert len(infos) == 1


def test_discovery_false_connects_to_nobody(beam: Any) -> None:
    erl = beam("erlang")

    async def main() -> None:
        async with py_node(config={**FAST, "discovery": False, "connect": [erl.name]}) as p:
            assert p.discovery.proc is not None and p.discovery.proc.alive
            # 10 poll intervals: nothing polled, nobody connected (the erl node is in EPMD)
            with pytest.raises(TimeoutError):
                await wait_for(lambda: p.connected_nodes or p.discovery.polls, timeout=2.0, what="any poll")
            assert p.connected_nodes == [] and p.discovery.status() == {}

    run(main)


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


def test_dns_strategy_between_two_hosts(tmp_path: Path, mix_compiled: None) -> None:
    """``{dns, {"app", "pynode-svc"}}``: the name resolves (each host's /etc/hosts, as a
    headless service's DNS would) to both hosts' addresses; nodes ``app@IP`` find each other."""
    cookie = test_cookie()
    config = tmp_path / "sys.config"
    config.write_text('[{pynode, [{dns, {"app", "pynode-svc"}}, {poll_interval, 500}]}].\n')
    nodes: list[Any] = []
    with Hosts() as hosts:
        etc = []
        try:
            for ns in (hosts.a, hosts.b):
                d = Path("/etc/netns") / ns
                d.mkdir(parents=True)
                (d / "hosts").write_text(f"127.0.0.1 localhost\n{ADDR_A} pynode-svc\n{ADDR_B} pynode-svc\n")
                etc.append(d)
            a = PyServer(["--name", f"app@{ADDR_A}", "--cookie", cookie, "--config", str(config)], prefix=hosts.prefix("a"))
            nodes.append(a)
            b = Iex(["--name", f"app@{ADDR_B}", "--cookie", cookie, "--erl", f"-config {config}"], prefix=hosts.prefix("b"))
            nodes.append(b)
            want = [Atom(f"app@{ADDR_A}"), Atom(f"app@{ADDR_B}")]
            b.wait_members(want)
        finally:
            stop_all(nodes)
            for d in etc:
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


def test_hosts_erlang_file_between_two_hosts(tmp_path: Path, mix_compiled: None) -> None:
    """A ``.hosts.erlang`` in the node's directory names the other host, as for
    ``net_adm:world/0``; no ``hosts`` key needed."""
    cookie = test_cookie()
    (tmp_path / ".hosts.erlang").write_text(f"'{ADDR_A}'.\n'{ADDR_B}'.\n")
    nodes: list[Any] = []
    with Hosts() as hosts:
        try:
            b = Iex(["--name", f"eb@{ADDR_B}", "--cookie", cookie], prefix=hosts.prefix("b"))
            nodes.append(b)
            a = PyServer(["--name", f"pa@{ADDR_A}", "--cookie", cookie], cwd=tmp_path, prefix=hosts.prefix("a"))
            nodes.append(a)
            want = [Atom(f"eb@{ADDR_B}"), Atom(f"pa@{ADDR_A}")]
            b.wait_members(want)
        finally:
            stop_all(nodes)
