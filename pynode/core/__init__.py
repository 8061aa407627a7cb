"""The core: processes (mailbox, selective receive, lifetime) and signals (pids, names,
aliases, links, monitors, exits), for one node.

Owns :class:`Process` (:mod:`pynode.core.process`) and :class:`Runtime`, the process table
and signal router (:mod:`pynode.core.runtime`). Imports only ``erl_interop`` terms and
:mod:`pynode.errors`. What it needs of the layers above it, it defines itself: the
:class:`~pynode.core.runtime.Transport` protocol that the distribution layer implements,
and the slot for ``gen_server:call`` (:func:`~pynode.core.process.set_call_impl`).
"""

from .process import (
    DOWN_TAG,
    EXIT_TAG,
    KILL,
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    PROCESS,
    Exit,
    Process,
    ReceiveTimeout,
    exception_reason,
    set_call_impl,
)
from .runtime import Runtime, Transport

__all__ = [
    "Process",
    "Runtime",
    "Transport",
    "Exit",
    "ReceiveTimeout",
    "exception_reason",
    "set_call_impl",
    "DOWN_TAG",
    "EXIT_TAG",
    "KILL",
    "KILLED",
    "NOCONNECTION",
    "NOPROC",
    "NORMAL",
    "PROCESS",
]
