"""Distribution control messages of OTP 25 (docs/WIRE.md §4; erl_dist_protocol.xml).

Theory of operation
-------------------
Every packet of the connected phase carries a *control tuple* ``{Tag, ...}`` and, for some
tags, a second term (the *payload*: a message, an exit reason, spawn arguments). This module
maps each of the 30 tags OTP 25 uses onto a frozen, slotted dataclass and back:

- :func:`from_terms(control, payload)` -> :class:`ControlMessage` checks the arity, that a
  payload is present exactly when the tag takes one, and the types of the fields a node acts
  on (destination pid, registered name or alias; monitor and spawn references; the spawn
  request's ``{M, F, A}``). Other fields (exit reasons, trace tokens, the sender of an exit)
  are passed through as received. A malformed tuple raises
  :class:`~erl_interop.errors.DistProtocolError` naming the tag; its message shows the
  tuple through :func:`~erl_interop.bounded.bounded_repr` (200 characters at most, and
  never an exception: a field may be a 5000-digit integer, which ``repr`` refuses).
- An integer tag this module does not know (the obsolete 9-11, 14, 15 and 17; 37 and later,
  which only newer OTP sends) gives an :class:`UnknownControl` *value*, not an error, so a
  node can log it and keep the connection. :class:`~erl_interop.connection.Connection` turns
  it into a ``BadMessage`` event.
- ``msg.to_terms()`` -> ``(control_tuple, payload)`` is the exact inverse: for every
  well-formed ``(c, p)``, ``from_terms(c, p).to_terms() == (c, p)``.

A message without a payload reports :data:`MISSING` as its payload, not ``None``: ``None`` is
how the codec spells the atom ``nil``, which is a valid message.

Field names follow the wire order. ``from_pid``/``to_pid`` are process ids; ``to_proc`` is a
pid or a registered name (monitors by name); ``from_proc`` is the monitored pid or name in a
``DOWN``; ``token`` is a seq_trace token. The ``unused`` slot of SEND/REG_SEND (always ``''``
from OTP 25) is kept so that the round trip is exact, but it has a default and stays out of
``repr``.

The decoders and ``to_terms`` methods are generated once per class from a small table
(``_wire``), as :mod:`dataclasses` generates ``__init__``: the hot path is one function call
with no per-field loops or ``getattr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Final, cast

from .bounded import bounded_repr
from .errors import DistProtocolError
from .terms import Atom, Pid, Reference

__all__ = [
    "MISSING",
    "ControlMessage",
    "UnknownControl",
    "from_terms",
    "CONTROL_CLASSES",
    "Link",
    "Send",
    "Exit",
    "Unlink",
    "NodeLink",
    "RegSend",
    "GroupLeader",
    "Exit2",
    "SendTT",
    "ExitTT",
    "RegSendTT",
    "Exit2TT",
    "MonitorP",
    "DemonitorP",
    "MonitorPExit",
    "SendSender",
    "SendSenderTT",
    "PayloadExit",
    "PayloadExitTT",
    "PayloadExit2",
    "PayloadExit2TT",
    "PayloadMonitorPExit",
    "SpawnRequest",
    "SpawnRequestTT",
    "SpawnReply",
    "SpawnReplyTT",
    "AliasSend",
    "AliasSendTT",
    "UnlinkId",
    "UnlinkIdAck",
]


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


#: "No payload term": the control message stands alone (``nil``, i.e. ``None``, is a payload).
MISSING: Final = _Missing()

_EMPTY = Atom("")

# Types accepted where the wire carries a registered name: ``true``/``false``/``nil`` decode
# to bool/None (terms.py), and they are atoms too.
_NAME = (Atom, bool, type(None))
_PROC = (Pid, Atom, bool, type(None))


class ControlMessage:
    """Base of every control message. ``TAG`` is the wire tag (docs/WIRE.md §4.2)."""

    __slots__ = ()
    TAG: ClassVar[int]
    #: Name of the field holding the payload term, or ``None`` for tuple-only messages.
    PAYLOAD: ClassVar[str | None] = None

    def to_terms(self) -> tuple[tuple[Any, ...], Any]:
        """``(control_tuple, payload)``; payload is :data:`MISSING` when the tag has none."""
        raise NotImplementedError  # generated per class by _wire()


# Per-tag decoder: (control_tuple, payload_or_MISSING) -> ControlMessage.
_DECODERS: dict[int, Callable[[tuple[Any, ...], Any], ControlMessage]] = {}

#: Tag -> class, for every tag OTP 25 uses.
CONTROL_CLASSES: dict[int, type[ControlMessage]] = {}


def _wire(tag: int, name: str, order: tuple[str, ...], payload: str | None = None, **checks: Any) -> Callable[[type], type]:
    """Register a message class: ``order`` lists its fields in wire order after the tag,
    ``payload`` names the field carrying the second term, ``checks`` maps a field to the
    type(s) ``from_terms`` requires of it."""

    def deco(cls: Any) -> Any:
        cls.TAG = tag
        cls.PAYLOAD = payload
        arity = len(order) + 1
        fields = list(cls.__dataclass_fields__)
        if set(fields) != {*order, *([payload] if payload else [])}:
            raise TypeError(f"{cls.__name__}: fields {fields} do not match the wire order {order} + {payload}")
        shape = "{" + ", ".join([str(tag), *order]) + "}" + (f" + {payload}" if payload else "")
        ns: dict[str, Any] = {"cls": cls, "new": object.__new__, "MISSING": MISSING, "_bad": _bad, "shape": shape, "name": name}
        lines = ["def decode(t, p):"]
        lines.append(f"    if len(t) != {arity}" + (" or p is MISSING" if payload else " or p is not MISSING") + ":")
        lines.append("        _bad(name, shape, t, p)")
        if order:
            lines.append(f"    _, {', '.join(order)}{',' if len(order) == 1 else ''} = t")
        if payload:
            lines.append(f"    {payload} = p")
        for i, (fname, types) in enumerate(checks.items()):
            tname = f"T{i}"
            ns[tname] = types
            if isinstance(types, tuple):
                lines.append(f"    if not isinstance({fname}, {tname}):")
            else:
                lines.append(f"    if type({fname}) is not {tname}:")
            lines.append(f"        _bad(name, shape, t, p, {fname!r})")
        # Build without __init__: a frozen dataclass's __init__ goes through
        # object.__setattr__ per field; the slot descriptors' __set__ is ~2x cheaper, and
        # the fields were all checked above.
        lines.append("    o = new(cls)")
        for i, f in enumerate(fields):
            ns[f"set{i}"] = cls.__dict__[f].__set__
            lines.append(f"    set{i}(o, {f})")
        lines.append("    return o")
        body = ", ".join([str(tag), *(f"self.{f}" for f in order)]) + ("," if not order else "")
        lines.append("def to_terms(self):")
        lines.append(f"    return ({body}), " + (f"self.{payload}" if payload else "MISSING"))
        exec("\n".join(lines), ns)  # noqa: S102 - fixed templates, as dataclasses does
        ns["to_terms"].__doc__ = ControlMessage.to_terms.__doc__
        ns["to_terms"].__qualname__ = f"{cls.__name__}.to_terms"
        cls.to_terms = ns["to_terms"]
        _DECODERS[tag] = ns["decode"]
        CONTROL_CLASSES[tag] = cls
        return cls

    return deco


def _bad(name: str, shape: str, t: tuple[Any, ...], p: Any, fname: str | None = None) -> None:
    tag = t[0]
    if fname is not None:
        detail = f"field {fname} has the wrong type"
    elif p is MISSING and "+" in shape:
        detail = "the payload term is missing"
    elif p is not MISSING and "+" not in shape:
        detail = "it carries an unexpected payload term"
    else:
        detail = f"it has {len(t)} elements"
    raise DistProtocolError(f"malformed {name} ({tag}) control message: expected {shape}, but {detail}: {bounded_repr(t, 200)}")


@dataclass(frozen=True, slots=True)
class UnknownControl(ControlMessage):
    """A control tuple whose tag OTP 25 does not use; kept whole so it can be logged."""

    tag: int
    terms: tuple[Any, ...]
    payload: Any = MISSING

    def to_terms(self) -> tuple[tuple[Any, ...], Any]:
        return self.terms, self.payload


def from_terms(control: Any, payload: Any = MISSING) -> ControlMessage:
    """Build the message for ``control`` (the decoded control tuple) and ``payload``
    (the second term, or :data:`MISSING`).

    Raises :class:`DistProtocolError` when ``control`` is not a tuple starting with an
    integer tag, or is malformed for its tag. An unknown integer tag gives
    :class:`UnknownControl`.
    """
    if type(control) is not tuple or not control:
        raise DistProtocolError(f"control message is not a non-empty tuple: {bounded_repr(control, 200)}")
    tag = control[0]
    if type(tag) is not int:  # bool is an int subclass: `true` must not pass as tag 1
        raise DistProtocolError(f"control message tag is not an integer: {bounded_repr(control, 200)}")
    dec = _DECODERS.get(tag)
    if dec is not None:
        return dec(control, payload)
    return UnknownControl(tag, control, payload)


# ----------------------------------------------------------------------------------------
# The messages, in tag order (docs/WIRE.md §4.2).
# ----------------------------------------------------------------------------------------


@_wire(1, "LINK", ("from_pid", "to_pid"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Link(ControlMessage):
    """``{1, From, To}``: ``link/1``."""

    from_pid: Pid
    to_pid: Pid


@_wire(2, "SEND", ("unused", "to_pid"), "message", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Send(ControlMessage):
    """``{2, Unused, ToPid}`` + Msg: a send to a pid, without SEND_SENDER."""

    to_pid: Pid
    message: Any
    unused: Any = field(default=_EMPTY, repr=False)


@_wire(3, "EXIT", ("from_pid", "to_pid", "reason"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Exit(ControlMessage):
    """``{3, From, To, Reason}``: a linked process died (no EXIT_PAYLOAD)."""

    from_pid: Any
    to_pid: Pid
    reason: Any


@_wire(4, "UNLINK", ("from_pid", "to_pid"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Unlink(ControlMessage):
    """``{4, From, To}``: ``unlink/1`` without UNLINK_ID."""

    from_pid: Pid
    to_pid: Pid


@_wire(5, "NODE_LINK", ())
@dataclass(frozen=True, slots=True)
class NodeLink(ControlMessage):
    """``{5}``: legacy, never sent by OTP 25."""


@_wire(6, "REG_SEND", ("from_pid", "unused", "to_name"), "message", to_name=_NAME)
@dataclass(frozen=True, slots=True)
class RegSend(ControlMessage):
    """``{6, From, Unused, ToName}`` + Msg: ``{Name, Node} ! Msg``."""

    from_pid: Pid
    to_name: Atom
    message: Any
    unused: Any = field(default=_EMPTY, repr=False)


@_wire(7, "GROUP_LEADER", ("from_pid", "to_pid"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class GroupLeader(ControlMessage):
    """``{7, From, To}``: ``group_leader(From, To)``; From is the new group leader."""

    from_pid: Pid
    to_pid: Pid


@_wire(8, "EXIT2", ("from_pid", "to_pid", "reason"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Exit2(ControlMessage):
    """``{8, From, To, Reason}``: ``exit/2`` (no EXIT_PAYLOAD)."""

    from_pid: Any
    to_pid: Pid
    reason: Any


@_wire(12, "SEND_TT", ("unused", "to_pid", "token"), "message", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class SendTT(ControlMessage):
    """``{12, Unused, ToPid, Token}`` + Msg."""

    to_pid: Pid
    token: Any
    message: Any
    unused: Any = field(default=_EMPTY, repr=False)


@_wire(13, "EXIT_TT", ("from_pid", "to_pid", "token", "reason"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class ExitTT(ControlMessage):
    """``{13, From, To, Token, Reason}``."""

    from_pid: Any
    to_pid: Pid
    token: Any
    reason: Any


@_wire(16, "REG_SEND_TT", ("from_pid", "unused", "to_name", "token"), "message", to_name=_NAME)
@dataclass(frozen=True, slots=True)
class RegSendTT(ControlMessage):
    """``{16, From, Unused, ToName, Token}`` + Msg."""

    from_pid: Pid
    to_name: Atom
    token: Any
    message: Any
    unused: Any = field(default=_EMPTY, repr=False)


@_wire(18, "EXIT2_TT", ("from_pid", "to_pid", "token", "reason"), to_pid=Pid)
@dataclass(frozen=True, slots=True)
class Exit2TT(ControlMessage):
    """``{18, From, To, Token, Reason}``."""

    from_pid: Any
    to_pid: Pid
    token: Any
    reason: Any


@_wire(19, "MONITOR_P", ("from_pid", "to_proc", "ref"), to_proc=_PROC, ref=Reference)
@dataclass(frozen=True, slots=True)
class MonitorP(ControlMessage):
    """``{19, From, ToProc, Ref}``: ToProc is a pid or a registered name."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference


@_wire(20, "DEMONITOR_P", ("from_pid", "to_proc", "ref"), to_proc=_PROC, ref=Reference)
@dataclass(frozen=True, slots=True)
class DemonitorP(ControlMessage):
    """``{20, From, ToProc, Ref}``."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference


@_wire(21, "MONITOR_P_EXIT", ("from_proc", "to_pid", "ref", "reason"), to_pid=Pid, ref=Reference)
@dataclass(frozen=True, slots=True)
class MonitorPExit(ControlMessage):
    """``{21, FromProc, ToPid, Ref, Reason}``: the monitored process (pid or name) is down."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Any


@_wire(22, "SEND_SENDER", ("from_pid", "to_pid"), "message", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class SendSender(ControlMessage):
    """``{22, From, ToPid}`` + Msg: a send to a pid when SEND_SENDER is negotiated."""

    from_pid: Pid
    to_pid: Pid
    message: Any


@_wire(23, "SEND_SENDER_TT", ("from_pid", "to_pid", "token"), "message", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class SendSenderTT(ControlMessage):
    """``{23, From, ToPid, Token}`` + Msg."""

    from_pid: Pid
    to_pid: Pid
    token: Any
    message: Any


@_wire(24, "PAYLOAD_EXIT", ("from_pid", "to_pid"), "reason", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class PayloadExit(ControlMessage):
    """``{24, From, To}`` + Reason: link exit when EXIT_PAYLOAD is negotiated."""

    from_pid: Any
    to_pid: Pid
    reason: Any


@_wire(25, "PAYLOAD_EXIT_TT", ("from_pid", "to_pid", "token"), "reason", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class PayloadExitTT(ControlMessage):
    """``{25, From, To, Token}`` + Reason."""

    from_pid: Any
    to_pid: Pid
    token: Any
    reason: Any


@_wire(26, "PAYLOAD_EXIT2", ("from_pid", "to_pid"), "reason", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class PayloadExit2(ControlMessage):
    """``{26, From, To}`` + Reason: ``exit/2`` when EXIT_PAYLOAD is negotiated."""

    from_pid: Any
    to_pid: Pid
    reason: Any


@_wire(27, "PAYLOAD_EXIT2_TT", ("from_pid", "to_pid", "token"), "reason", to_pid=Pid)
@dataclass(frozen=True, slots=True)
class PayloadExit2TT(ControlMessage):
    """``{27, From, To, Token}`` + Reason."""

    from_pid: Any
    to_pid: Pid
    token: Any
    reason: Any


@_wire(28, "PAYLOAD_MONITOR_P_EXIT", ("from_proc", "to_pid", "ref"), "reason", to_pid=Pid, ref=Reference)
@dataclass(frozen=True, slots=True)
class PayloadMonitorPExit(ControlMessage):
    """``{28, FromProc, ToPid, Ref}`` + Reason: monitor DOWN when EXIT_PAYLOAD is negotiated."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Any


def _check_mfa(mfa: Any) -> bool:
    return (
        type(mfa) is tuple
        and len(mfa) == 3
        and isinstance(mfa[0], _NAME)
        and isinstance(mfa[1], _NAME)
        and type(mfa[2]) is int
    )


@_wire(29, "SPAWN_REQUEST", ("req_id", "from_pid", "group_leader", "mfa", "opts"), "args", req_id=Reference, from_pid=Pid, opts=list)
@dataclass(frozen=True, slots=True)
class SpawnRequest(ControlMessage):
    """``{29, ReqId, From, GroupLeader, {M, F, Arity}, OptList}`` + ArgList."""

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Any]
    args: list[Any]


@_wire(30, "SPAWN_REQUEST_TT", ("req_id", "from_pid", "group_leader", "mfa", "opts", "token"), "args", req_id=Reference, from_pid=Pid, opts=list)
@dataclass(frozen=True, slots=True)
class SpawnRequestTT(ControlMessage):
    """``{30, ReqId, From, GroupLeader, {M, F, Arity}, OptList, Token}`` + ArgList."""

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opts: list[Any]
    token: Any
    args: list[Any]


def _strict_mfa(cls: type[SpawnRequest] | type[SpawnRequestTT]) -> None:
    """Wrap the generated decoder with the ``{M, F, A}`` shape check."""
    inner = _DECODERS[cls.TAG]
    name = "SPAWN_REQUEST" if cls is SpawnRequest else "SPAWN_REQUEST_TT"

    def decode(t: tuple[Any, ...], p: Any) -> ControlMessage:
        msg = cast("SpawnRequest | SpawnRequestTT", inner(t, p))  # inner is the decoder of cls
        if not _check_mfa(msg.mfa):
            raise DistProtocolError(f"malformed {name} ({cls.TAG}) control message: {{M, F, Arity}} expected, got {bounded_repr(msg.mfa, 200)}")
        return msg

    _DECODERS[cls.TAG] = decode


_strict_mfa(SpawnRequest)
_strict_mfa(SpawnRequestTT)


@_wire(31, "SPAWN_REPLY", ("req_id", "to_pid", "flags", "result"), req_id=Reference, to_pid=Pid, flags=int)
@dataclass(frozen=True, slots=True)
class SpawnReply(ControlMessage):
    """``{31, ReqId, To, Flags, Result}``: Flags bit 0 = link, bit 1 = monitor set up;
    Result is the new pid or an error atom."""

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom


@_wire(32, "SPAWN_REPLY_TT", ("req_id", "to_pid", "flags", "result", "token"), req_id=Reference, to_pid=Pid, flags=int)
@dataclass(frozen=True, slots=True)
class SpawnReplyTT(ControlMessage):
    """``{32, ReqId, To, Flags, Result, Token}``."""

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom
    token: Any


@_wire(33, "ALIAS_SEND", ("from_pid", "alias"), "message", alias=Reference)
@dataclass(frozen=True, slots=True)
class AliasSend(ControlMessage):
    """``{33, From, Alias}`` + Msg: a send to an alias (needs ALIAS)."""

    from_pid: Pid
    alias: Reference
    message: Any


@_wire(34, "ALIAS_SEND_TT", ("from_pid", "alias", "token"), "message", alias=Reference)
@dataclass(frozen=True, slots=True)
class AliasSendTT(ControlMessage):
    """``{34, From, Alias, Token}`` + Msg."""

    from_pid: Pid
    alias: Reference
    token: Any
    message: Any


@_wire(35, "UNLINK_ID", ("id", "from_pid", "to_pid"), id=int, to_pid=Pid)
@dataclass(frozen=True, slots=True)
class UnlinkId(ControlMessage):
    """``{35, Id, From, To}``: ``unlink/1`` with UNLINK_ID; answer with :class:`UnlinkIdAck`."""

    id: int
    from_pid: Pid
    to_pid: Pid


@_wire(36, "UNLINK_ID_ACK", ("id", "from_pid", "to_pid"), id=int, to_pid=Pid)
@dataclass(frozen=True, slots=True)
class UnlinkIdAck(ControlMessage):
    """``{36, Id, From, To}``: From is the acker, To the process that sent the UNLINK_ID."""

    id: int
    from_pid: Pid
    to_pid: Pid
