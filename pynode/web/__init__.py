"""The operator's page (issue 13, item 4): a live view of the cluster that any Python node
serves on request, ``python -m pynode --sname ... --http PORT`` or
``server = await pynode.web.serve(node, port)``.

It shows the cluster's nodes (BEAM or Python, up or down and since when, job host or not,
how many registry entries each node's processes hold), and every job with its owner, its
replica holders, and its status and progress, updated as jobs move. ``GET /`` is the page
(one self-contained HTML document that polls), ``GET /api/cluster`` the JSON behind it.

Modules:

- ``http``: a minimal HTTP/1.1 server on asyncio streams (GET only, one request per
  connection, bounded request size and time); the request head parser is sans-IO.
- ``cluster``: :class:`ClusterView`, the snapshot the JSON serves, from existing APIs only:
  this node's registry mirror, the job hosts' ``list`` and ``replicas`` calls, each job's
  ``get_state`` (``status`` for run kinds), and ``GenServer.call({:pynode, node}, :info)``
  to tell a Python node from a BEAM one. Refreshes are shared between pollers, cached,
  bounded in time and in the number of jobs asked per refresh.
- ``page``: the HTML document (inline CSS and JS, no external resources).

May import: the standard library, :mod:`erl_interop`, and every layer below the CLI
(:mod:`pynode.node` for its type, :mod:`pynode.jobs`, :mod:`pynode.registry`,
:mod:`pynode.errors`, :mod:`pynode.core`). Only :mod:`pynode.cli` (and tests) import it;
nothing below imports it.
"""

from .cluster import ClusterView
from .http import HttpError, HttpLimits, Request, Response, parse_head
from .server import DEFAULT_HOST, WebServer, serve

__all__ = ["serve", "DEFAULT_HOST", "WebServer", "ClusterView", "HttpLimits", "HttpError", "Request", "Response", "parse_head"]
