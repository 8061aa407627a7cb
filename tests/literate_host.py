"""A Python process that runs the README's Python snippets for tests/literate.py.

    python tests/literate_host.py NAME COOKIE     # a started Node(NAME, COOKIE) as ``node``
    python tests/literate_host.py - -             # no node: the snippet makes its own

Theory of operation: the process starts the node (``async with Node(...)``, as a user's program
does), prints ``@@ready``, and then reads one request per line on stdin, base64 of JSON
``{"src": source}``. Each source is compiled with top-level ``await`` allowed and run in one
namespace that lives as long as the process (so a snippet's functions and variables stay for
the checks that follow it); the namespace starts with ``node``, ``asyncio``, ``Atom`` and
everything ``pynode`` exports. The answer is one line, ``@@`` + base64 of JSON ``{"ok": true,
"value": repr(value of the last expression statement or None)}`` or ``{"ok": false, "error":
traceback}``. End of input or SIGINT (Ctrl-C) stops the node and the process (status 0).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import inspect
import json
import sys
import threading
import traceback
from typing import Any

import pynode
from pynode import Atom, Node


def _compile(src: str, filename: str) -> Any:
    """``src`` as code whose value is its last expression statement's (``_`` gets it)."""
    tree = ast.parse(src, filename, "exec")
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.Assign(targets=[ast.Name("_", ast.Store())], value=last.value)
        ast.copy_location(tree.body[-1], last)
        ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: "asyncio.Queue[str]") -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(lines.put_nowait, line)
    loop.call_soon_threadsafe(lines.put_nowait, "")


async def _serve(ns: dict[str, Any]) -> None:
    lines: asyncio.Queue[str] = asyncio.Queue()
    # a daemon thread: a blocked read does not keep Ctrl-C from ending the process
    threading.Thread(target=_read_stdin, args=(asyncio.get_running_loop(), lines), daemon=True).start()
    n = 0
    print("@@ready", flush=True)
    while True:
        line = await lines.get()
        if not line:
            return
        n += 1
        src = json.loads(base64.b64decode(line.strip()))["src"]
        ns.pop("_", None)
        try:
            r = eval(_compile(src, f"<snippet {n}>"), ns)
            if inspect.iscoroutine(r):
                await r
            reply = {"ok": True, "value": repr(ns.get("_"))}
        except BaseException as e:  # noqa: BLE001  (a snippet's failure is the answer)
            if isinstance(e, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
                raise
            reply = {"ok": False, "error": traceback.format_exc()}
        print("@@" + base64.b64encode(json.dumps(reply).encode()).decode(), flush=True)


async def main(name: str, cookie: str) -> None:
    ns: dict[str, Any] = {k: getattr(pynode, k) for k in getattr(pynode, "__all__", [])}
    ns.update(asyncio=asyncio, Atom=Atom, pynode=pynode, __name__="__readme__")
    if name == "-":
        await _serve(ns)
        return
    async with Node(name, cookie=cookie) as node:
        ns["node"] = node
        await _serve(ns)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1], sys.argv[2]))
