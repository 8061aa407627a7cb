"""Run kinds on a mixed cluster, started as users start them: an Elixir node running the
mix_compat application and two ``python -m pynode --import examples.crawl`` nodes, the
example kind ``crawl`` fetching pages from a real HTTP server on loopback (a fixture here,
counting every request it serves, so a page fetched twice shows).

Covered (issue 11, part 7): SIGTERM mid-run resumes on the other Python node without
fetching checkpointed pages again; ``kill -9`` resumes on the replica holder from the last
replicated checkpoint; a failing run is retried from its checkpoint, then fails with its
``{python_error, ...}`` readable from Elixir; cancel from Elixir; results and statuses
readable from every node until the (short) ``result_ttl`` and gone after. Every wait is on
a condition; node names are unique; the cookie is the test's own.
"""

from __future__ import annotations

import asyncio
import collections
import http.server
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest

from erl_interop.terms import Atom
from pynode import jobs
from pynode.testing import BeamNode, test_cookie, unique_name

from node_helpers import NodeGroup, ev
from test_jobs_mixed import MIX_PROJECT, PyCli, ex_until, mix_compiled, observer  # noqa: F401 (fixture)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

A = Atom
OK, ERROR = A("ok"), A("error")


# -- a real HTTP server on loopback -------------------------------------------------------------
class Pages:
    """``GET /page/N?delay=MS`` answers a small HTML page after MS ms; ``/fail`` answers 500.
    ``hits`` counts every request by path."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        pages = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                u = urlparse(self.path)
                with pages.lock:
                    pages.hits[u.path] += 1
                delay = int(parse_qs(u.query).get("delay", ["0"])[0])
                if delay:
                    time.sleep(delay / 1000.0)
                if u.path == "/fail":
                    body, code = b"<html><title>down</title></html>", 500
                else:
                    body, code = f"<html><title>{u.path}</title><body>{'x' * 100}</body></html>".encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def urls(self, n: int, delay_ms: int = 0) -> list[str]:
        return [f"{self.base}/page/{i}?delay={delay_ms}" for i in range(n)]

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]

    def total(self, prefix: str = "/") -> int:
        with self.lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))


@pytest.fixture
def pages() -> Iterator[Pages]:
    p = Pages()
    yield p
    p.server.shutdown()
    p.server.server_close()


# -- the cluster --------------------------------------------------------------------------------
class CrawlCli(PyCli):
    """``python -m pynode --sname NAME --cookie C --config FILE --import examples.crawl``."""

    extra_args = ("--import", "examples.crawl")


class Cluster(NodeGroup):
    """An Elixir node (prefix ``a``) and two Python nodes (``b``, ``c``) importing the crawl
    kind; every name in the shared config's ``connect`` list."""

    def __init__(self, tmp_path: Path, settings: str) -> None:
        self.names = [unique_name(p) + "@localhost" for p in "abc"]
        self.config = tmp_path / "sys.config"
        connect = ", ".join(f"'{n}'" for n in self.names)
        self.config.write_text(f"[{{pynode, [{settings}, {{connect, [{connect}]}}]}}].\n")
        self.started: list[Any] = []
        self.nodes: dict[str, Any] = {}
        self.spec = "epp"

    def start(self) -> None:
        self.ex = BeamNode.start(self.names[0], test_cookie(), lang="elixir", mix_project=MIX_PROJECT,
                                 args=["-config", str(self.config)])
        self.started.append(self.ex)
        self.nodes[self.names[0]] = self.ex
        for name in self.names[1:]:
            n = CrawlCli(name, str(self.config))
            self.started.append(n)
            self.nodes[name] = n

    def elixir(self) -> list[BeamNode]:
        return [self.ex]


@pytest.fixture
def crawl_cluster(tmp_path: Path, mix_compiled: str) -> Iterator[Any]:  # noqa: F811
    made: list[Cluster] = []

    def make(settings: str) -> Cluster:
        c = Cluster(tmp_path, settings)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.kill_all()


def ex_list(urls: list[str]) -> str:
    return "[" + ", ".join(f'"{u}"' for u in urls) + "]"


async def ex_status(c: Cluster, jid: str) -> Any:
    r = await ev(c.ex, f'Pynode.Jobs.status("{jid}")')
    return r[1] if type(r) is tuple and r[0] == OK else r


async def ex_until_status(c: Cluster, jid: str, pred: Any, what: str, timeout: float = 30.0) -> Any:
    def ok(v: Any) -> bool:
        return type(v) is tuple and v[0] == OK and pred(v[1])

    r = await ex_until(c.ex, f'Pynode.Jobs.status("{jid}")', ok, what, timeout)
    return r[1]


def _done(st: dict[Any, Any]) -> int:
    return int(st[A("progress")].get(A("done"), 0))


def _pages(res: Any) -> list[str]:
    assert type(res) is tuple and res[0] == OK, res
    return [p[A("url")].decode() for p in res[1][A("pages")]]


SETTINGS = "{result_ttl, 60000}, {replicas, 1}, {max_attempts, 2}, {retry_backoff, 50}, {missing_grace, 500}"


async def _start_crawl(c: Cluster, jid: str, urls: list[str]) -> None:
    r = await ev(c.ex, f'Pynode.Jobs.start(:crawl, "{jid}", {ex_list(urls)})')
    assert type(r) is tuple and r[0] == OK, (r, c.tails())


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_a_stopped_or_killed_node_resumes_the_crawl_elsewhere_without_refetching(crawl_cluster, pages, how):
    c = crawl_cluster(SETTINGS)
    urls = pages.urls(8, delay_ms=250)

    async def main() -> None:
        async with observer(c):
            await _start_crawl(c, "c1", urls)
            st = await ex_until_status(c, "c1", lambda s: _done(s) >= 3, "three pages checkpointed")
            owner = str(st[A("node")])
            assert owner in c.names[1:], st  # the Elixir node does not know the kind
            other = next(n for n in c.names[1:] if n != owner)
            # what is checkpointed (and replicated) now is never fetched again
            st = await ex_status(c, "c1")
            k = _done(st)
            if how == "sigterm":
                assert c.nodes[owner].stop() == 0
            else:
                c.nodes[owner].kill()
            st = await ex_until_status(c, "c1", lambda s: s[A("status")] == A("done"), "done elsewhere", 60)
            assert str(st[A("node")]) == other, st
            assert st[A("attempts")] == 1  # a move is not a failed attempt
            res = await ev(c.ex, 'Pynode.Jobs.results("c1")')
            assert _pages(res) == urls
            for i in range(k):
                assert pages.count(f"/page/{i}") == 1, (i, k, pages.hits)
            # at most the page in flight at the stop was fetched twice
            assert pages.total() <= len(urls) + 1, pages.hits

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    except BaseException:
        print(c.tails())
        raise


def test_a_failing_crawl_is_retried_from_its_checkpoint_then_fails_with_its_error(crawl_cluster, pages):
    c = crawl_cluster(SETTINGS)
    urls = pages.urls(1) + [pages.base + "/fail"]

    async def main() -> None:
        async with observer(c) as obs:
            await _start_crawl(c, "f1", urls)
            st = await ex_until_status(c, "f1", lambda s: s[A("status")] == A("failed"), "failed")
            assert st[A("attempts")] == 2
            res = await ev(c.ex, 'Pynode.Jobs.results("f1")')
            assert type(res) is tuple and res[0] == ERROR, res
            failed, err = res[1]
            assert failed == A("failed") and err[0] == A("python_error") and err[1] == b"HTTPStatusError", res
            assert b"500" in err[2]
            assert await jobs.results(obs, "f1") == res  # the same from a Python node
            assert pages.count("/fail") == 2
            assert pages.count("/page/0") == 1  # checkpointed before the failure: not fetched again

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    except BaseException:
        print(c.tails())
        raise


def test_cancel_and_results_readable_everywhere_until_the_ttl(crawl_cluster, pages):
    ttl_ms = 2500
    c = crawl_cluster(SETTINGS.replace("{result_ttl, 60000}", f"{{result_ttl, {ttl_ms}}}"))
    long_urls = pages.urls(40, delay_ms=100)
    short_urls = [pages.base + "/short/0", pages.base + "/short/1"]

    async def main() -> None:
        async with observer(c) as obs:
            await _start_crawl(c, "x1", long_urls)
            await _start_crawl(c, "d1", short_urls)
            await ex_until_status(c, "x1", lambda s: _done(s) >= 1, "one page")
            assert await ev(c.ex, 'Pynode.Jobs.cancel("x1")') == (OK, A("cancelled"))
            at_cancel = pages.total("/page/")
            assert (await jobs.status(obs, "x1"))[1][A("status")] == A("cancelled")
            assert await jobs.results(obs, "x1") == (ERROR, A("cancelled"))
            assert await ev(c.ex, 'Pynode.Jobs.results("x1")') == (ERROR, A("cancelled"))

            await ex_until_status(c, "d1", lambda s: s[A("status")] == A("done"), "short crawl done")
            t_done = time.monotonic()
            res = await ev(c.ex, 'Pynode.Jobs.results("d1")')
            assert _pages(res) == short_urls
            assert await jobs.results(obs, "d1") == res
            # both end after result_ttl: then every node answers no_such_job
            gone = (ERROR, A("no_such_job"))
            await ex_until(c.ex, 'Pynode.Jobs.results("d1")', lambda v: v == gone, "d1 gone", 30)
            assert time.monotonic() - t_done >= ttl_ms / 1000.0 - 0.5
            await ex_until(c.ex, 'Pynode.Jobs.status("x1")', lambda v: v == gone, "x1 gone", 30)
            assert await jobs.results(obs, "d1") == gone
            assert await jobs.status(obs, "x1") == gone
            # the cancelled crawl fetched nothing more (at most the page in flight)
            assert pages.total("/page/") <= at_cancel + 1, pages.hits

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    except BaseException:
        print(c.tails())
        raise


# -- load (issue 11, part 5; docs/JOBS_PROTOCOL.md "Load") ----------------------------------------
LOADS_EX = "for {p, v} <- Pynode.Registry.lookup_values(Pynode.Jobs.load_key()), do: {Atom.to_string(node(p)), v}"


async def ex_loads(c: Cluster) -> dict[str, Any]:
    """The loads every host published, as the Elixir node's registry shows them."""
    return {k.decode(): v for k, v in await ev(c.ex, LOADS_EX)}


async def ex_until_loads(c: Cluster, pred: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        loads = await ex_loads(c)
        if pred(loads):
            return loads
        if loop.time() > deadline:
            raise TimeoutError(f"{what}; last loads {loads!r}")
        await asyncio.sleep(0.02)


def _busy(loads: dict[str, Any], names: list[str]) -> int:
    return sum(loads[n][0] + loads[n][1] for n in names if n in loads)


def test_a_full_hosts_jobs_go_elsewhere_and_a_stopping_hosts_queue_moves(crawl_cluster, pages):
    c = crawl_cluster(SETTINGS + ", {max_jobs, 2}")
    py = c.names[1:]
    urls = pages.urls(16, delay_ms=120)

    async def main() -> None:
        async with observer(c):
            await ex_until_loads(c, lambda ld: all(ld.get(n) == (0, 0, 2) for n in py), "idle loads")
            # four crawls fill both Python hosts (the Elixir host does not know the kind)
            for i in range(1, 5):
                await _start_crawl(c, f"L{i}", urls)
                await ex_until_loads(c, lambda ld, i=i: _busy(ld, py) == i, f"L{i} counted")
            on = {f"L{i}": str((await ex_status(c, f"L{i}"))[A("node")]) for i in range(1, 5)}
            assert sorted(on.values()) == sorted(py * 2), on  # two each: the least-loaded host
            for i in range(1, 5):
                assert (await ex_status(c, f"L{i}"))[A("status")] == A("running")
            # a fifth waits in the queue of a full host
            await _start_crawl(c, "L5", urls)
            st = await ex_status(c, "L5")
            assert st[A("status")] == A("queued"), st
            full = str(st[A("node")])
            other = next(n for n in py if n != full)
            # the other host gets room: the queued crawl moves there and runs
            victim = next(j for j, n in on.items() if n == other)
            assert await ev(c.ex, f'Pynode.Jobs.cancel("{victim}")') == (OK, A("cancelled"))
            st = await ex_until_status(c, "L5", lambda s: s[A("status")] == A("running"), "L5 running elsewhere")
            assert str(st[A("node")]) == other, st
            on["L5"] = other
            # a sixth waits on one host; that host is stopped: its running crawls and its
            # queue move to the last host, which runs two and queues the rest
            await ex_until_loads(c, lambda ld: _busy(ld, py) == 4, "L5 counted")
            await _start_crawl(c, "L6", urls)
            st = await ex_status(c, "L6")
            assert st[A("status")] == A("queued"), st
            stopping = str(st[A("node")])
            last = next(n for n in py if n != stopping)
            moved = ["L6"] + [j for j, n in on.items() if n == stopping and j != victim]
            assert len(moved) == 3, (moved, on)
            assert c.nodes[stopping].stop() == 0
            for j in moved:
                s = await ex_status(c, j)
                assert str(s[A("node")]) == last and s[A("status")] in (A("running"), A("queued")), (j, s)
            assert (await ex_status(c, "L6"))[A("status")] == A("queued")
            loads = await ex_until_loads(c, lambda ld: stopping not in ld and ld.get(last, (0, 0))[0] == 2,
                                         "the last host full")
            assert loads[last][1] >= 2, loads
            # every crawl that was not cancelled finishes, once, with every page
            for j in [x for x in on if x != victim] + ["L6"]:
                st = await ex_until_status(c, j, lambda s: s[A("status")] == A("done"), f"{j} done", 90)
                assert st[A("attempts")] == 1
                assert _pages(await ev(c.ex, f'Pynode.Jobs.results("{j}")')) == urls

    try:
        asyncio.run(asyncio.wait_for(main(), 180))
    except BaseException:
        print(c.tails())
        raise
