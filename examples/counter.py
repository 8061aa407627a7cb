"""The README's first example: a Python GenServer that iex calls.

    python examples/counter.py py@localhost test
"""

import asyncio
import sys

from pynode import Atom, GenServer, Node


class Counter(GenServer):
    async def init(self, start=0):
        self.count = start

    async def handle_call(self, request, from_):
        if request == Atom("get"):
            return self.count
        if isinstance(request, tuple) and request[0] == Atom("add"):
            self.count += request[1]
            return self.count
        return (Atom("error"), Atom("unknown"))

    async def handle_cast(self, request):
        if request == Atom("reset"):
            self.count = 0


async def main(name: str = "py@localhost", cookie: str = "test") -> None:
    async with Node(name, cookie=cookie) as node:
        await Counter.start(node, 0, name="counter")

        node.expose("math_py", "add", lambda a, b: a + b)

        @node.expose("math_py")
        async def slow_square(x):
            await asyncio.sleep(0.1)
            return x * x

        print(f"ready {node.name}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


if __name__ == "__main__":
    try:
        asyncio.run(main(*sys.argv[1:3]))
    except KeyboardInterrupt:
        pass
