"""Outgoing signals as control messages: one table, signal -> control for the negotiated flags.

Each function here makes the :data:`~pynode.dist.link.Builder` of one signal: called with
the link's negotiated flags, it gives ``(control tuple, payload)``, or ``(None, None)``
when the signal is not sent on such a link (OTP drops an alias send to a peer without
``ALIAS``). A builder is called when the signal goes on the wire, so a signal queued before
the handshake is encoded for the flags the handshake settled. The tags are the ones
:mod:`erl_interop.control` names (docs/WIRE.md §4.2).

| signal | flags it depends on | control message |
| --- | --- | --- |
| send | `SEND_SENDER` | `SEND_SENDER` (`{22, From, To}`), else `SEND` (`{2, '', To}`) |
| registered send | - | `REG_SEND` |
| alias send | `ALIAS` | `ALIAS_SEND`; dropped without `ALIAS` |
| link | - | `LINK` |
| unlink | `UNLINK_ID` | `UNLINK_ID` with a fresh id, else `UNLINK` |
| unlink ack | - | `UNLINK_ID_ACK` |
| exit (link) | `EXIT_PAYLOAD` | `PAYLOAD_EXIT`, else `EXIT` |
| exit/2 | `EXIT_PAYLOAD` | `PAYLOAD_EXIT2`, else `EXIT2` |
| monitor / demonitor | `DIST_MONITOR` (`DIST_MONITOR_NAME` for a name) | `MONITOR_P` / `DEMONITOR_P`; nothing without (the monitor is kept here and fires `noconnection`) |
| monitor DOWN | `EXIT_PAYLOAD` | `PAYLOAD_MONITOR_P_EXIT`, else `MONITOR_P_EXIT` |
| spawn request | `SPAWN` | `SPAWN_REQUEST`; without it nothing, and the requester gets `notsup` at once |
| spawn reply | - | `SPAWN_REPLY` |

The send paths of :class:`~pynode.dist.distribution.Distribution` write the first three
straight to an established link without a builder (the hot path); they produce the same
tuples as the builders here.

Owns: the builders. May import: :mod:`erl_interop`.
"""

from __future__ import annotations

from typing import Any, Callable

from erl_interop import control as C
from erl_interop.control import MISSING
from erl_interop.flags import DistFlags
from erl_interop.terms import Atom, Pid, Reference

from .link import Builder

__all__ = [
    "EMPTY", "DROP", "T_SEND", "T_SEND_SENDER", "T_REG_SEND",
    "send", "reg_send", "alias_send", "link", "unlink", "unlink_ack", "link_exit", "exit2",
    "monitor", "demonitor", "monitor_exit", "spawn_request", "spawn_reply",
]

#: the empty atom: the unused "cookie" slot of SEND and REG_SEND
EMPTY = Atom("")
#: what a builder returns for a signal the link does not carry
DROP: tuple[None, None] = (None, None)

T_SEND = C.Send.TAG
T_SEND_SENDER = C.SendSender.TAG
T_REG_SEND = C.RegSend.TAG
_T_LINK = C.Link.TAG
_T_EXIT = C.Exit.TAG
_T_UNLINK = C.Unlink.TAG
_T_EXIT2 = C.Exit2.TAG
_T_MONITOR_P = C.MonitorP.TAG
_T_DEMONITOR_P = C.DemonitorP.TAG
_T_MONITOR_P_EXIT = C.MonitorPExit.TAG
_T_PAYLOAD_EXIT = C.PayloadExit.TAG
_T_PAYLOAD_EXIT2 = C.PayloadExit2.TAG
_T_PAYLOAD_MONITOR_P_EXIT = C.PayloadMonitorPExit.TAG
_T_SPAWN_REQUEST = C.SpawnRequest.TAG
_T_SPAWN_REPLY = C.SpawnReply.TAG
_T_ALIAS_SEND = C.AliasSend.TAG
_T_UNLINK_ID = C.UnlinkId.TAG
_T_UNLINK_ID_ACK = C.UnlinkIdAck.TAG

Control = tuple[tuple[Any, ...] | None, Any]


def send(frm: Pid, to: Pid, msg: Any) -> Builder:
    def build(f: DistFlags) -> Control:
        return ((T_SEND_SENDER, frm, to) if f & DistFlags.SEND_SENDER else (T_SEND, EMPTY, to)), msg
    return build


def reg_send(frm: Pid, name: Atom, msg: Any) -> Builder:
    return lambda f: ((T_REG_SEND, frm, EMPTY, name), msg)


def alias_send(frm: Pid, alias: Reference, msg: Any) -> Builder:
    def build(f: DistFlags) -> Control:
        if not f & DistFlags.ALIAS:
            return DROP  # OTP drops alias sends on a link without ALIAS
        return (_T_ALIAS_SEND, frm, alias), msg
    return build


def link(frm: Pid, to: Pid) -> Builder:
    return lambda f: ((_T_LINK, frm, to), MISSING)


def unlink(uid: int, frm: Pid, to: Pid) -> Builder:
    def build(f: DistFlags) -> Control:
        if f & DistFlags.UNLINK_ID:
            return (_T_UNLINK_ID, uid, frm, to), MISSING
        return (_T_UNLINK, frm, to), MISSING
    return build


def unlink_ack(uid: int, frm: Pid, to: Pid) -> Builder:
    return lambda f: ((_T_UNLINK_ID_ACK, uid, frm, to), MISSING)


def _exit_signal(payload_tag: int, plain_tag: int, frm: Any, to: Pid, ref: tuple[Any, ...], reason: Any) -> Builder:
    """An exit-like signal: with ``EXIT_PAYLOAD`` the reason travels as the payload
    (``{PayloadTag, From, To[, Ref]}``), else in the control tuple (``{Tag, From, To[, Ref], Reason}``)."""
    def build(f: DistFlags) -> Control:
        if f & DistFlags.EXIT_PAYLOAD:
            return (payload_tag, frm, to, *ref), reason
        return (plain_tag, frm, to, *ref, reason), MISSING
    return build


def link_exit(frm: Pid, to: Pid, reason: Any) -> Builder:
    return _exit_signal(_T_PAYLOAD_EXIT, _T_EXIT, frm, to, (), reason)


def exit2(frm: Pid, to: Pid, reason: Any) -> Builder:
    return _exit_signal(_T_PAYLOAD_EXIT2, _T_EXIT2, frm, to, (), reason)


def _monitors(f: DistFlags, target: Pid | Atom) -> bool:
    """Whether the peer takes MONITOR_P/DEMONITOR_P for ``target`` (``DIST_MONITOR``, and
    ``DIST_MONITOR_NAME`` for a name)."""
    return bool(f & DistFlags.DIST_MONITOR) and (type(target) is Pid or bool(f & DistFlags.DIST_MONITOR_NAME))


def monitor(watcher: Pid, target: Pid | Atom, ref: Reference) -> Builder:
    def build(f: DistFlags) -> Control:
        if not _monitors(f, target):
            # A peer without DIST_MONITOR (JInterface, erl_call) is sent nothing: the monitor
            # lives on this side only and fires noconnection when the link goes, as OTP 25's
            # monitor/2 does for such a peer (docs/WIRE.md §4.5).
            return DROP
        return (_T_MONITOR_P, watcher, target, ref), MISSING
    return build


def demonitor(watcher: Pid, target: Pid | Atom, ref: Reference) -> Builder:
    def build(f: DistFlags) -> Control:
        if not _monitors(f, target):
            return DROP
        return (_T_DEMONITOR_P, watcher, target, ref), MISSING
    return build


def monitor_exit(obj: Any, watcher: Pid, ref: Reference, reason: Any) -> Builder:
    return _exit_signal(_T_PAYLOAD_MONITOR_P_EXIT, _T_MONITOR_P_EXIT, obj, watcher, (ref,), reason)


def spawn_request(req_id: Reference, frm: Pid, group_leader: Pid, mfa: tuple[Atom, Atom, int],
                  opts: list[Any], args: list[Any], refused: Callable[[], None]) -> Builder:
    """``refused`` is called (and nothing sent) when the peer has no ``SPAWN``: OTP's
    spawn_request then answers ``notsup`` at once (erpc: ``{erpc, notsup}``)."""
    def build(f: DistFlags) -> Control:
        if not f & DistFlags.SPAWN:
            refused()
            return DROP
        return (_T_SPAWN_REQUEST, req_id, frm, group_leader, mfa, opts), args
    return build


def spawn_reply(req_id: Reference, to: Pid, flags: int, result: Any) -> Builder:
    return lambda f: ((_T_SPAWN_REPLY, req_id, to, flags, result), MISSING)
