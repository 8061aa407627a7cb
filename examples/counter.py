# examples/counter.py
import asyncio
from pynode import Node, GenServer, Atom

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

async def main():
    async with Node("py@localhost", cookie="test") as node:
        await Counter.start(node, 0, name="counter")
        await asyncio.Event().wait()          # serve until Ctrl-C

if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:                 # Ctrl-C: the node has stopped (peers saw nodedown)
        pass
