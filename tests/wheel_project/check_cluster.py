"""The pytest plugin's fixtures (beam_node, erl_node, elixir_node, node_name) with a Python
node of the installed package: ping and rpc both ways with real BEAM nodes."""

import asyncio
import subprocess
import sys
from pathlib import Path

from pynode import Atom, Node, rpc_call
from pynode.testing import test_cookie


async def rpc(node, peer, mod, fun, args):
    out = []

    async def body(proc):
        out.append(await rpc_call(proc, peer, mod, fun, args, 10.0))

    p = node.spawn(body)
    await p.task
    return out[0]


def test_a_python_node_pings_and_calls_an_erl_node(erl_node, node_name):
    async def main():
        async with Node(node_name, test_cookie()) as node:
            assert await node.ping(erl_node.name) == Atom("pong")
            assert await rpc(node, erl_node.name, "erlang", "node", []) == Atom(erl_node.name)
            assert await rpc(node, erl_node.name, "lists", "seq", [1, 3]) == [1, 2, 3]
            # and the other way: erl calls the Python node's pynode:info/0
            info = await asyncio.to_thread(erl_node.eval, f"rpc:call('{node_name}', pynode, info, []).")
            assert info[Atom("node")] == Atom(node_name) and info[Atom("runtime")] == Atom("python")

    asyncio.run(main())


def test_elixir_and_a_second_erl_node_from_beam_node(elixir_node, beam_node, node_name):
    other = beam_node("erlang")
    assert elixir_node.eval(f'Node.ping(:"{other.name}")') == Atom("pong")

    async def main():
        async with Node(node_name, test_cookie()) as node:
            assert await rpc(node, elixir_node.name, "Elixir.String", "upcase", [b"pynode"]) == b"PYNODE"

    asyncio.run(main())


def test_pynode_ping_from_the_console_script(erl_node):
    script = Path(sys.executable).parent / "pynode"
    r = subprocess.run([str(script), "ping", erl_node.name, "--cookie", test_cookie()], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "pong\n"), r
