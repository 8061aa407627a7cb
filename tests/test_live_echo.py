"""Issue 2, point 7: an ``erl`` node sends terms of every kind to a Python endpoint over a live
distribution connection and gets them echoed back, compared with ``=:=`` on the Erlang side.

The Python endpoint is a registered process on a pynode ``Node``; it decodes each message
with erl_interop and sends the decoded term back, so every term crosses the codec twice
(decode, then encode). Run in both body formats: pass-through ``p`` packets, and the
``131,68`` header with the atom cache plus fragments (erl then sends large terms in pieces).
"""

from __future__ import annotations

import asyncio

import pytest

from erl_interop import Atom, DistFlags, DEFAULT_FLAGS
from pynode import Node
from pynode.testing import BeamNode, unique_name, test_cookie

from test_codec_interop import EXPRESSIONS

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

HEADER_MODE = DEFAULT_FLAGS | DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS


async def _echo(proc):
    while True:
        msg = await proc.receive()
        if type(msg) is tuple and len(msg) == 3 and msg[0] == Atom("echo"):
            _, sender, term = msg
            proc.send(sender, (Atom("echoed"), term))


@pytest.mark.parametrize("flags", [DEFAULT_FLAGS, HEADER_MODE], ids=["pass-through", "atom-cache+fragments"])
def test_erl_terms_echo_back_identical(flags):
    py_name = unique_name("echo") + "@localhost"
    erl = BeamNode.start(unique_name("erl") + "@localhost", test_cookie())

    # One Erlang list of every expression (the codec interop table), echoed one by one.
    names = [n for n, _ in EXPRESSIONS]
    erl_list = "[" + ",\n".join(f"{{<<\"{n}\">>, ({e})}}" for n, e in EXPRESSIONS) + "]"
    check = f"""
        Py = '{py_name}',
        Terms = {erl_list},
        Bad = lists:filtermap(fun({{Name, T}}) ->
            {{echo, Py}} ! {{echo, self(), T}},
            receive
                {{echoed, T2}} when T2 =:= T -> false;
                {{echoed, Other}} -> {{true, {{Name, mismatch, Other}}}}
            after 10000 -> {{true, {{Name, timeout}}}}
            end
        end, Terms),
        {{length(Terms), Bad}}.
    """

    async def main():
        node = Node(py_name, test_cookie(), dist_flags=flags)
        await node.start()
        node.spawn(_echo, name="echo")
        try:
            count, bad = await asyncio.to_thread(erl.eval, check, 120)
            negotiated = node.dist.conns[Atom(erl.name)].flags
            return count, bad, negotiated
        finally:
            await node.stop()

    try:
        count, bad, negotiated = asyncio.run(main())
    finally:
        erl.stop()
    assert count == len(names)
    assert bad == []
    if flags is HEADER_MODE:
        assert negotiated & DistFlags.DIST_HDR_ATOM_CACHE and negotiated & DistFlags.FRAGMENTS
    else:
        assert not negotiated & (DistFlags.DIST_HDR_ATOM_CACHE | DistFlags.FRAGMENTS)
