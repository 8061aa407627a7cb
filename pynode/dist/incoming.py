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

Owns: :data:`HANDLERS`. May import: :mod:`erl_interop` and :mod:`pynode.dist.link`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from erl_interop import control as C
from erl_interop.terms import Atom

from . import outgoing as out
from .link import PeerConnection

if TYPE_CHECKING:
    from .distribution import Distribution

__all__ = ["HANDLERS", "Handler", "SPAWN_REPLY_TAG"]

log = logging.getLogger("pynode.dist")

#: the first element of the message a SPAWN_REPLY becomes in the requester's mailbox
#: (``{'$spawn_reply', ReqId, Flags, Result}``, as ``erlang:spawn_request`` delivers it)
SPAWN_REPLY_TAG = Atom("$spawn_reply")

Handler = Callable[["Distribution", PeerConnection, Any], None]


def _send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.node.procs.get(m.to_pid)
    if p is not None:
        p.deliver(m.message)


def _reg_send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.node.names.get(m.to_name)
    if p is not None:
        p.deliver(m.message)


def _alias_send(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.node.aliases.get(m.alias)
    if p is not None:
        p.deliver(m.message)


def _link(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_link(m.from_pid, m.to_pid)


def _unlink(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_unlink(m.from_pid, m.to_pid)


def _unlink_id(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_unlink(m.from_pid, m.to_pid)
    c.submit(out.unlink_ack(m.id, m.to_pid, m.from_pid))


def _unlink_ack(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_unlink_ack(m.from_pid, m.to_pid, m.id)


def _exit(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.exit_signal(m.from_pid, m.to_pid, m.reason, link=True)


def _exit2(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.exit_signal(m.from_pid, m.to_pid, m.reason, link=False)


def _monitor(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_monitor(m.from_pid, m.to_proc, m.ref)


def _demonitor(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_demonitor(m.from_pid, m.to_proc, m.ref)


def _down(d: "Distribution", c: PeerConnection, m: Any) -> None:
    d.node.remote_down(m.to_pid, m.ref, m.reason)


def _spawn_request(d: "Distribution", c: PeerConnection, m: Any) -> None:
    if d.spawn_handler is not None:
        d.spawn_handler(d.node, m)
    else:
        log.warning("%s: SPAWN_REQUEST from %s but no spawn handler", d.node.name, c.peer)


def _spawn_reply(d: "Distribution", c: PeerConnection, m: Any) -> None:
    p = d.spawn_waiters.pop(m.req_id, None)
    if p is not None:
        p.deliver((SPAWN_REPLY_TAG, m.req_id, m.flags, m.result))


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
    C.GroupLeader: _ignore,
    C.NodeLink: _ignore,
}
