"""Distribution capability flags (docs/WIRE.md §2.6; erts/doc/src/erl_dist_protocol.xml)."""

from __future__ import annotations

import enum

__all__ = ["DistFlags", "MANDATORY_25", "REJECTABLE", "DEFAULT_FLAGS"]


class DistFlags(enum.IntFlag):
    PUBLISHED = 0x1
    ATOM_CACHE = 0x2
    EXTENDED_REFERENCES = 0x4
    DIST_MONITOR = 0x8
    FUN_TAGS = 0x10
    DIST_MONITOR_NAME = 0x20
    HIDDEN_ATOM_CACHE = 0x40
    NEW_FUN_TAGS = 0x80
    EXTENDED_PIDS_PORTS = 0x100
    EXPORT_PTR_TAG = 0x200
    BIT_BINARIES = 0x400
    NEW_FLOATS = 0x800
    UNICODE_IO = 0x1000
    DIST_HDR_ATOM_CACHE = 0x2000
    SMALL_ATOM_TAGS = 0x4000
    UTF8_ATOMS = 0x10000
    MAP_TAG = 0x20000
    BIG_CREATION = 0x40000
    SEND_SENDER = 0x80000
    BIG_SEQTRACE_LABELS = 0x100000
    EXIT_PAYLOAD = 0x400000
    FRAGMENTS = 0x800000
    HANDSHAKE_23 = 0x1000000
    UNLINK_ID = 0x2000000
    MANDATORY_25_DIGEST = 0x4000000
    SPAWN = 1 << 32
    NAME_ME = 1 << 33
    V4_NC = 1 << 34
    ALIAS = 1 << 35


#: What OTP 25 requires of a peer (``get_dflags()`` mandatory, 0x1070F94).
MANDATORY_25 = (
    DistFlags.EXTENDED_REFERENCES
    | DistFlags.FUN_TAGS
    | DistFlags.NEW_FUN_TAGS
    | DistFlags.EXTENDED_PIDS_PORTS
    | DistFlags.EXPORT_PTR_TAG
    | DistFlags.BIT_BINARIES
    | DistFlags.NEW_FLOATS
    | DistFlags.UTF8_ATOMS
    | DistFlags.MAP_TAG
    | DistFlags.BIG_CREATION
    | DistFlags.HANDSHAKE_23
)
assert int(MANDATORY_25) == 0x1070F94

#: Flags a node may refuse even when the peer offers them (docs/WIRE.md §2.7).
REJECTABLE = (
    DistFlags.ATOM_CACHE
    | DistFlags.HIDDEN_ATOM_CACHE
    | DistFlags.DIST_HDR_ATOM_CACHE
    | DistFlags.FRAGMENTS
)

#: What a pynode advertises: hidden (no PUBLISHED), OTP 25's mandatory set, and the
#: optional flags monitors, links, rpc and calls need (docs/WIRE.md §2.6). Header mode (DIST_HDR_ATOM_CACHE/FRAGMENTS) is off
#: by default: pass-through ``p`` packets are cheaper to produce from Python.
DEFAULT_FLAGS = (
    MANDATORY_25
    | DistFlags.DIST_MONITOR
    | DistFlags.DIST_MONITOR_NAME
    | DistFlags.UNLINK_ID
    | DistFlags.V4_NC
    | DistFlags.SPAWN
    | DistFlags.ALIAS
    | DistFlags.SMALL_ATOM_TAGS
    | DistFlags.UNICODE_IO
    | DistFlags.SEND_SENDER
    | DistFlags.EXIT_PAYLOAD
    | DistFlags.BIG_SEQTRACE_LABELS
)
