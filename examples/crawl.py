"""A job kind that fetches pages over HTTP: long network-bound work that survives a deploy
(the job moves to another node and goes on from its last checkpoint) and the death of its
node (it resumes on the node holding its replica).

Run it on one or more Python nodes of a cluster (httpx is the optional extra ``examples``:
``pip install -e '.[examples]'``)::

    python -m pynode --sname py1@localhost --cookie test --import examples.crawl

and start it from iex (README, "Python workers from iex")::

    iex> Pynode.Jobs.start(:crawl, "c1", ["http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b"])
    iex> Pynode.Jobs.status("c1")
    iex> Pynode.Jobs.results("c1")

``args``: the URLs (binaries), or ``[#{urls => [...], delay_ms => N}]`` to wait ``N`` ms
between two pages (to watch it). The checkpoint is the list of pages fetched so far, each
``#{url, status, bytes, title}``; the result is ``#{pages => [...], bytes => Total}``. A
page answering an HTTP error status fails the run (retried from the checkpoint, then the
job fails with ``{python_error, <<"HTTPStatusError">>, Message}``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from erl_interop.terms import Atom
from pynode.jobs import RunContext, RunKind, job_kind

URL, STATUS, BYTES, TITLE, PAGES = Atom("url"), Atom("status"), Atom("bytes"), Atom("title"), Atom("pages")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def _plan(args: list[Any]) -> tuple[list[str], float]:
    if len(args) == 1 and isinstance(args[0], dict):
        spec = args[0]
        urls = [_text(u) for u in spec.get(Atom("urls"), [])]
        return urls, float(spec.get(Atom("delay_ms"), 0)) / 1000.0
    return [_text(u) for u in args], 0.0


def _title(body: str) -> bytes:
    m = re.search(r"<title>(.*?)</title>", body, re.I | re.S)
    return (m.group(1).strip() if m else "").encode()


@job_kind("crawl")
class Crawl(RunKind):
    async def run(self, ctx: RunContext) -> Any:
        urls, delay = _plan(ctx.args)               # ctx.args: the start args
        pages: list[dict[Atom, Any]] = list(ctx.state or [])  # ctx.state: the last checkpoint
        async with httpx.AsyncClient(timeout=30.0, follow_redirects=True) as http:
            for url in urls[len(pages):]:           # checkpointed pages are not fetched again
                if delay:
                    await asyncio.sleep(delay)
                r = await http.get(url)
                r.raise_for_status()
                pages.append({URL: url.encode(), STATUS: r.status_code, BYTES: len(r.content), TITLE: _title(r.text)})
                await ctx.checkpoint(pages)         # returns once the pages are on the replica
                ctx.progress(done=len(pages), total=len(urls))
        return {PAGES: pages, BYTES: sum(p[BYTES] for p in pages)}  # the results, kept for result_ttl
