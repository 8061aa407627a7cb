"""Background jobs held in memory across the cluster: the job host ``pynode_jobs``, the job
processes, the kinds ``'Job'`` and ``'Job.Otp'``, and the client API.

The protocol is docs/JOBS_PROTOCOL.md, repeated verbatim in the header of
:mod:`pynode.jobs.protocol`. The modules follow the Elixir files (``elixir/lib/``, the seed's kinds in ``mix_compat/lib/``), and
each imports only modules listed before it:

- ``format``: :func:`format_term`, a term as Elixir's ``inspect`` prints it.
- ``protocol`` (``pynode/jobs.ex``; the rules Elixir keeps in ``host.ex``, ``job_server.ex``,
  ``client.ex``): atoms, registry keys, ``DEFAULTS`` and config access, the pure rules
  checked against docs/vectors/jobs.terms.
- ``kinds`` (``pynode/jobs/kind.ex``, ``pynode/jobs/run.ex``, ``job.ex``, ``job/otp.ex``):
  :class:`JobKind` and what a kind uses, the kind registry, ``'Job'`` and ``'Job.Otp'``, and
  :class:`RunKind` (a kind whose work is ``async def run(self, ctx)``, with checkpoints).
- ``client`` (``pynode/jobs/client.ex``): :func:`start`, :func:`update`, :func:`finish`, ...
  on any node. Imports ``protocol`` only.
- ``job`` (``pynode/jobs/job_server.ex``): the job process.
- ``host`` (``pynode/jobs/host.ex``): :class:`JobHost`, its replicas, adoption and handoff;
  it runs ``client`` for the ``{client, Op, Args}`` calls of client-only nodes.

Outside the package they import :mod:`erl_interop`, the runtime (:mod:`pynode.errors`,
:mod:`pynode.core.process`, :mod:`pynode.otp.gen_server`) and :mod:`pynode.registry`; no module of
the package imports inside a function. Use the public API from here:
``from pynode import jobs; await jobs.start(node, "j1")``.
"""

from ..registry import key_bytes as key_bytes
from .client import cancel, check_results, finish, get_state, list_jobs, otp_start, results, start, status, update
from .format import format_term as format_term
from .host import JobHost, start_host
from .kinds import (
    JobContext,
    JobError,
    JobKind,
    OtpJob as OtpJob,
    Reply,
    RunContext,
    RunKind,
    SimpleJob as SimpleJob,
    job_kind,
    kinds,
)
from .protocol import (
    BACKOFF_FIRST as BACKOFF_FIRST,
    BACKOFF_MAX as BACKOFF_MAX,
    DEFAULTS,
    HOST_KEY,
    HOST_NAME,
    LIST as LIST,
    OK as OK,
    PYNODE_JOB as PYNODE_JOB,
    RECENT_MAX as RECENT_MAX,
    adopts,
    job_key,
    merge_recent,
    replica_targets,
    results_binary,
    retryable as retryable,
    wire as wire,
)

__all__ = [
    "JobHost",
    "JobKind",
    "JobContext",
    "RunKind",
    "RunContext",
    "status",
    "results",
    "cancel",
    "Reply",
    "JobError",
    "job_kind",
    "kinds",
    "start_host",
    "start",
    "otp_start",
    "update",
    "finish",
    "check_results",
    "get_state",
    "list_jobs",
    "HOST_NAME",
    "HOST_KEY",
    "job_key",
    "replica_targets",
    "adopts",
    "merge_recent",
    "results_binary",
    "DEFAULTS",
]
