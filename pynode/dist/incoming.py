"""Incoming control messages into the core: one table, control message type -> handler.

A link's read loop (:class:`erl_interop.aio.Link`) looks the decoded message's type up in
:attr:`Distribution.handlers <pynode.dist.distribution.Distribution.handlers>` (this table,
bound to the distribution) and calls the handler with the connection and the message.
Deliveries read the runtime's ``procs``/``names``/``aliases`` tables directly (one dict
lookup per message); every other signal goes to the runtime's ``remote_*`` entry points.
A ``SPAWN_REQUEST`` goes to the spawn handler the composition root gave the distribution
(the rpc server of :mod:`pynode.otp.rpc`); a ``SPAWN_REPLY`` to the process that asked.
``GROUP_LEADER`` and ``NODE_LINK`` are accepted and ignored; any other type never reaches
this table (the link logs it).

Each handler first checks what ``erts_net_message`` in OTP's ``dist.c`` checks of the same
message (docs/WIRE.md §4.5): a signal's sender must be a pid of the peer at the other end
(nobody speaks for another node's processes), its target a pid of this node (or a name where
the message allows one), an unlink id is 1..2^64-1. A message that fails is what dist.c
calls an invalid distribution message: :class:`~erl_interop.errors.DistProtocolError`, and
the link is dropped, as the BEAM drops it. A pid of this node's name and another creation
(an old incarnation) is not invalid: as in dist.c, a link or monitor to it is answered
``noproc`` and the other signals to it are dropped.

Owns: :data:`HANDLERS`. May import: :mod:`erl_interop` and :mod:`pynode.dist.link`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from erl_interop.bounded import bounded_logger
from erl_interop import control as C
from erl_interop.errors import DistProtocolError
from erl_interop.terms import Atom, Pid

from . import outgoing as out
from .link import PeerConnection

if TYPE_CHECKING:
    from .distribution import Distribution

__all__ = ["HANDLERS", "Handler", "SPAWN_REPLY_TAG"]

log = bounded_logger(logging.getLogger("pynode.dist"))

#: the first element of the message a SPAWN_REPLY becomes in the requester's mailbox
#: (``{'$spawn_reply', ReqId, Flags, Result}``, as ``erlang:spawn_request`` delivers it)
SPAWN_REPLY_TAG = Atom("$spawn_reply")

Handler = Callable[["Distribution", PeerConnection, Any], None]


def _invalid(c: PeerConnection, m: Any, why: str) -> NoReturn:
    """dist.c's ``invalid_message``: the link is dropped (the read loop lets a
    :class:`DistProtocolError` through)."""
    raise DistProtocolError(f"invalid distribution message from {c.peer}: {why}: {type(m).__name__}")


def _from_peer(c: PeerConnection, m: Any, p: Any, what: str) -> None:
    """``p`` must be a pid of the node at the other end of the link (no one speaks for
    another node's processes)."""
    if type(p) is not Pid or p.node != c.peer:
        _invalid(c, m, f"{what} is not a pid of {c.peer}")


#: what :func:`_ours` says of a pid: ``LIVE`` (this incarnation), ``OLD`` (this node's name,
#: another creation: dist.c answers noproc or ignores the signal), or ``None`` (anything else)
LIVE, OLD = 1, 2


def _ours(d: "Distribution", p: Any) -> int | None:
    if type(p) is not Pid or p.node != d.node.name:
        return None
    return LIVE if p.creation == d.node.creation else OLD


def _send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.node.procs.get(m.to_pid)
    if p is not None:
        p.deliver(m.message)


def _reg_send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if type(m.from_pid) is not Pid:
        _invalid(c, m, "the sender is not a pid")
    p = d.node.names.get(m.to_name)
    if p is not None:
        p.deliver(m.message)


def _alias_send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.node.aliases.get(m.alias)
    if p is not None:
        p.deliver(m.message)


def _link(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the linker")
    if _ours(d, m.to_pid) is None:
        _invalid(c, m, "the linked process is not a pid of this node")
    d.node.remote_link(m.from_pid, m.to_pid)  # an old incarnation's pid: noproc, as for a dead one


def _unlink(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the unlinker")
    if _ours(d, m.to_pid) is None:
        _invalid(c, m, "the unlinked process is not a pid of this node")
    d.node.remote_unlink(m.from_pid, m.to_pid)


def _unlink_id(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if not 0 < m.id < 1 << 64:
        _invalid(c, m, "unlink id 0" if m.id == 0 else "unlink id out of 1..2^64-1")
    _from_peer(c, m, m.from_pid, "the unlinker")
    mine = _ours(d, m.to_pid)
    if mine is None:
        _invalid(c, m, "the unlinked process is not a pid of this node")
    if mine == OLD:
        return
    d.node.remote_unlink(m.from_pid, m.to_pid)
    c.submit(out.unlink_ack(m.id, m.to_pid, m.from_pid))


def _unlink_ack(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if not 0 <= m.id < 1 << 64:
        _invalid(c, m, "unlink id is not a 64-bit unsigned integer")
    _from_peer(c, m, m.from_pid, "the acknowledging process")
    mine = _ours(d, m.to_pid)
    if mine is None:
        _invalid(c, m, "the unlinking process is not a pid of this node")
    if mine == LIVE:
        d.node.remote_unlink_ack(m.from_pid, m.to_pid, m.id)


def _exit(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the exiting process")
    if _ours(d, m.to_pid) != LIVE:
        _invalid(c, m, "the linked process is not a pid of this node")
    d.node.exit_signal(m.from_pid, m.to_pid, m.reason, link=True)


def _exit2(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the sender")
    mine = _ours(d, m.to_pid)
    if mine is None:
        _invalid(c, m, "the target is not a pid of this node")
    if mine == LIVE:
        d.node.exit_signal(m.from_pid, m.to_pid, m.reason, link=False)


def _monitor(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the watcher")
    target = m.to_proc
    if type(target) is not Atom and _ours(d, target) is None:
        _invalid(c, m, "the monitored process is neither a name nor a pid of this node")
    d.node.remote_monitor(m.from_pid, target, m.ref)  # an old incarnation's pid: noproc


def _demonitor(d: "Distribution", c: PeerConnection, m: Any) -> None:
    _from_peer(c, m, m.from_pid, "the watcher")
    target = m.to_proc
    if type(target) is not Atom:
        mine = _ours(d, target)
        if mine is None:
            _invalid(c, m, "the monitored process is neither a name nor a pid of this node")
        if mine == OLD:
            return
    d.node.remote_demonitor(m.from_pid, target, m.ref)


def _down(d: "Distribution", c: PeerConnection, m: Any) -> None:
    watched = m.from_proc
    if not (type(watched) is Atom or (type(watched) is Pid and watched.node != d.node.name)):
        _invalid(c, m, "the monitored process is neither a name nor a remote pid")
    mine = _ours(d, m.to_pid)
    if mine is None:
        _invalid(c, m, "the watcher is not a pid of this node")
    if mine == LIVE:
        d.node.remote_down(m.to_pid, m.ref, m.reason)


def _spawn_request(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if m.req_id.node == d.node.name:
        _invalid(c, m, "the request id is a reference of this node")
    if m.from_pid.node == d.node.name:
        _invalid(c, m, "the requester is a pid of this node")
    if type(m.group_leader) is not Pid:
        _invalid(c, m, "the group leader is not a pid")
    if d.spawn_handler is not None:
        d.spawn_handler(d.node, m)
    else:
        log.warning("%s: SPAWN_REQUEST from %s but no spawn handler", d.node.name, c.peer)


def _spawn_reply(d: "Distribution", c: PeerConnection, m: Any) -> None:
    mine = _ours(d, m.to_pid)
    if mine is None:
        _invalid(c, m, "the requester is not a pid of this node")
    if m.req_id.node != d.node.name:
        _invalid(c, m, "the request id is not a reference of this node")
    if not 0 <= m.flags < 1 << 27:
        _invalid(c, m, "the flags are out of range")
    result = m.result
    if not (type(result) is Atom or (type(result) is Pid and result.node != d.node.name)):
        _invalid(c, m, "the result is neither an atom nor a remote pid")
    if mine == OLD:
        return
    p = d.spawn_waiters.pop(m.req_id, None)
    if p is not None:
        p.deliver((SPAWN_REPLY_TAG, m.req_id, m.flags, m.result))


def _group_leader(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if type(m.from_pid) is not Pid:
        _invalid(c, m, "the group leader is not a pid")


def _ignore(d: "Distribution", c: PeerConnection, m: Any) -> None:
    pass


HANDLERS: dict[type, Handler] = {
    C.Send: _send,
    C.SendTT: _send,
    C.SendSender: _send,
    C.SendSenderTT: _send,
    C.RegSend: _reg_send,
    C.RegSendTT: _reg_send,
    C.AliasSend: _alias_send,
    C.AliasSendTT: _alias_send,
    C.Link: _link,
    C.Unlink: _unlink,
    C.UnlinkId: _unlink_id,
    C.UnlinkIdAck: _unlink_ack,
    C.Exit: _exit,
    C.ExitTT: _exit,
    C.PayloadExit: _exit,
    C.PayloadExitTT: _exit,
    C.Exit2: _exit2,
    C.Exit2TT: _exit2,
    C.PayloadExit2: _exit2,
    C.PayloadExit2TT: _exit2,
    C.MonitorP: _monitor,
    C.DemonitorP: _demonitor,
    C.MonitorPExit: _down,
    C.PayloadMonitorPExit: _down,
    C.SpawnRequest: _spawn_request,
    C.SpawnRequestTT: _spawn_request,
    C.SpawnReply: _spawn_reply,
    C.SpawnReplyTT: _spawn_reply,
    C.GroupLeader: _group_leader,
    C.NodeLink: _ignore,
}
