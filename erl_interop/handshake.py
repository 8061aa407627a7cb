"""The distribution handshake (docs/WIRE.md §2), both roles, as one sans-IO state machine.

Theory of operation
-------------------
A :class:`Handshake` is bytes in, bytes out and events out, in the h11 style::

    hs = Handshake("initiator", "py@localhost", cookie, creation, peer_name="erl@localhost")
    sock.send(hs.data_to_send())                 # the `N` name packet, queued at construction
    while True:
        ev = hs.next_event()                     # may raise HandshakeError
        sock.send(hs.data_to_send())             # replies are queued as steps complete
        if ev is NEED_DATA:
            hs.receive_data(sock.recv(4096))     # b"" means the peer closed
        elif isinstance(ev, HandshakeComplete):
            break                                # ev.trailing belongs to the connection

Only the OTP 23+ `N` (version 6) handshake is spoken, as OTP 25 does. Every packet has a
2-byte big-endian length (docs/WIRE.md §2.1). The machine is a sequence of *receive steps*
named as in ``dist_util.erl``; each ``_recv_*`` method consumes one packet, checks it, queues
the next outgoing packet(s) (``_send_*``) and names the following step::

    initiator: send_name -> recv_status -> recv_challenge -> send_challenge_reply
               -> recv_challenge_ack -> done
    acceptor:  recv_name -> send_status -> [recv_status if "alive"] -> send_challenge
               -> recv_challenge_reply -> send_challenge_ack -> done

Which step handles the next packet is data (:data:`_RECEIVERS`), as in h11's ``_state.py``.

Policy is not decided here. The acceptor asks ``policy.accept_pending(...)`` what status to
send for a peer name (``net_kernel``'s ``accept_pending`` in OTP: simultaneous connects,
allow lists); the initiator asks ``policy.answer_alive(peer_name)`` when told ``alive``.

Failures raise :class:`~erl_interop.errors.HandshakeError` from :meth:`Handshake.next_event`
with the step that failed (``step="recv_challenge_ack", reason="bad_cookie"``), as
``dist_util`` exits with ``{recv_challenge_ack_failed, bad_cookie}``. Bytes queued before a
failure (``snot_allowed``, ``snok``) are still returned by :meth:`data_to_send`: the driver
flushes them, then closes. After a failure the machine stays failed and re-raises.

The machine has no clock: the driver enforces ``net_setuptime`` and calls
:meth:`Handshake.timed_out` to turn expiry into a ``HandshakeError(step, "timeout")``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import struct
from dataclasses import dataclass
from typing import Callable, Literal, NoReturn, Protocol, cast

from erl_interop.bounded import bounded_logger
from erl_interop._events import NEED_DATA, NeedData
from erl_interop.errors import HandshakeError, LocalProtocolError
from erl_interop.flags import DEFAULT_FLAGS, MANDATORY_25, DistFlags

__all__ = [
    "Handshake",
    "HandshakePolicy",
    "DefaultPolicy",
    "Role",
    "Status",
    "HandshakeEvent",
    "NameReceived",
    "StatusReceived",
    "ChallengeReceived",
    "HandshakeComplete",
    "NEED_DATA",
    "NeedData",
    "gen_digest",
    "MAX_PACKET",
]

log = bounded_logger(logging.getLogger(__name__))

Role = Literal["initiator", "acceptor"]
Status = Literal["ok", "ok_simultaneous", "nok", "alive", "not_allowed"]

# --- wire constants (docs/WIRE.md §2.2) ---------------------------------------------------
TAG_NAME = ord("N")  # send_name / send_challenge, version 6
TAG_NAME_OLD = ord("n")  # version 5; OTP 25.0-25.2 closes on it without a status
TAG_STATUS = ord("s")
TAG_REPLY = ord("r")
TAG_ACK = ord("a")
DIGEST_SIZE = 16  # MD5

#: Largest handshake packet body we accept. The largest legitimate one is the `N` challenge:
#: 19 fixed bytes + a node name, which is an atom, so at most 255 characters, at most 4
#: UTF-8 bytes each (1020) = 1039. OTP ignores residue after the name, so leave some room;
#: a claim above this (up to the 64 KiB a 2-byte length allows) is refused before buffering.
MAX_PACKET = 2048
#: An atom (hence a node name) holds at most 255 characters.
MAX_NAME_CHARS = 255

_STATUSES: frozenset[str] = frozenset({"ok", "ok_simultaneous", "nok", "alive", "not_allowed"})

_NAME_HDR = struct.Struct(">QIH")  # flags u64, creation u32, name length u16 (after `N`)
_CHALLENGE_HDR = struct.Struct(">QIIH")  # flags, challenge, creation, name length
_U32 = struct.Struct(">I")


# --- events (NEED_DATA is shared by all three machines: erl_interop._events) ---------------
@dataclass(frozen=True, slots=True)
class NameReceived:
    """Acceptor: the peer's `N` name packet was accepted; ``status`` is what we answered."""

    peer_name: str
    peer_flags: DistFlags
    peer_creation: int
    status: Status


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Initiator: the acceptor's status (``ok``, ``ok_simultaneous`` or ``alive``, which we
    answered with ``answered``: ``True``/``False``; ``None`` for the others)."""

    status: Status
    answered: bool | None = None


@dataclass(frozen=True, slots=True)
class ChallengeReceived:
    """Initiator: the acceptor's challenge was accepted; our reply is queued."""

    peer_name: str
    peer_flags: DistFlags
    peer_creation: int


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake succeeded; hand the socket to the connected phase (docs/WIRE.md §3).

    ``peer_flags`` is what the peer advertised (``MANDATORY_25_DIGEST`` expanded);
    ``flags`` is what is in force: our flags ∩ the peer's, as ``dist_util:adjust_flags``.
    ``trailing`` holds bytes read past the handshake's last packet: they are the first
    bytes of the connected phase (4-byte framing) and must be fed to the connection.
    """

    peer_name: str
    peer_flags: DistFlags
    flags: DistFlags
    peer_creation: int
    trailing: bytes = b""


HandshakeEvent = NameReceived | StatusReceived | ChallengeReceived | HandshakeComplete


# --- policy -------------------------------------------------------------------------------
class HandshakePolicy(Protocol):
    """What the node runtime decides during a handshake (``net_kernel``'s part in OTP)."""

    def accept_pending(self, peer_name: str, peer_flags: DistFlags, peer_creation: int) -> Status:
        """Acceptor: the status to send to ``peer_name`` (docs/WIRE.md §2.4)."""
        ...

    def answer_alive(self, peer_name: str) -> bool:
        """Initiator: the acceptor says it has a live connection to us; ``True`` tears that
        one down and continues, ``False`` gives up (``is_pending`` in OTP)."""
        ...


class DefaultPolicy:
    """Accept every name (``"ok"``); answer ``alive`` with ``true``."""

    def accept_pending(self, peer_name: str, peer_flags: DistFlags, peer_creation: int) -> Status:
        return "ok"

    def answer_alive(self, peer_name: str) -> bool:
        return True


_DEFAULT_POLICY = DefaultPolicy()


# --- helpers ------------------------------------------------------------------------------
def gen_digest(challenge: int, cookie: bytes) -> bytes:
    """``MD5(cookie ++ decimal(challenge))`` (docs/WIRE.md §2.3, ``dist_util:gen_digest/2``)."""
    return hashlib.md5(cookie + str(challenge).encode("ascii")).digest()


def _cookie_bytes(cookie: str | bytes) -> bytes:
    # OTP digests atom_to_list(Cookie): one byte per character, so Latin-1.
    if isinstance(cookie, bytes):
        return cookie
    try:
        return cookie.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("a cookie is an atom whose characters must fit in Latin-1") from None


def _is_node_name(name: str) -> bool:
    """``dist_util:is_node_name/1``: exactly one ``@``, non-empty on both sides."""
    parts = name.split("@")
    return len(parts) == 2 and bool(parts[0]) and bool(parts[1])


def _expand(flags: int) -> DistFlags:
    """The peer's flags with ``MANDATORY_25_DIGEST`` read as the whole mandatory set
    (docs/WIRE.md §2.7)."""
    f = DistFlags(flags)
    if f & DistFlags.MANDATORY_25_DIGEST:
        f |= MANDATORY_25
    return f


def _missing_mandatory(peer_flags: DistFlags) -> list[str]:
    missing = MANDATORY_25 & ~peer_flags
    return [flag.name or hex(flag.value) for flag in DistFlags if flag & missing]


def _status_packet(status: str) -> bytes:
    return bytes([TAG_STATUS]) + status.encode("ascii")


# --- the machine --------------------------------------------------------------------------
class Handshake:
    """One side of an `N` (version 6) distribution handshake; see the module docstring.

    :param role: ``"initiator"`` (we dialled) or ``"acceptor"`` (we accepted).
    :param our_name: our full node name, ``alive@host``.
    :param cookie: the shared secret (``str`` or ``bytes``).
    :param creation: our 32-bit creation (from EPMD registration).
    :param flags: the flags we advertise; hidden unless ``PUBLISHED`` is in them.
    :param peer_name: initiator only: the node we dialled; its challenge must carry this name.
    :param policy: a :class:`HandshakePolicy`; ``None`` means :class:`DefaultPolicy`.
    """

    def __init__(
        self,
        role: Role,
        our_name: str,
        cookie: str | bytes,
        creation: int,
        flags: DistFlags = DEFAULT_FLAGS,
        peer_name: str | None = None,
        policy: HandshakePolicy | None = None,
    ) -> None:
        if role not in ("initiator", "acceptor"):
            raise LocalProtocolError(f"role must be 'initiator' or 'acceptor', not {role!r}")
        if not _is_node_name(our_name):
            raise LocalProtocolError(f"our_name must be alive@host, not {our_name!r}")
        if not 0 <= creation <= 0xFFFFFFFF:
            raise LocalProtocolError(f"creation {creation} does not fit in 32 bits")
        if role == "initiator" and (peer_name is None or not _is_node_name(peer_name)):
            raise LocalProtocolError(f"an initiator needs peer_name=alive@host, not {peer_name!r}")
        self.role: Role = role
        self.our_name = our_name
        self.our_flags = DistFlags(flags)
        self.creation = creation
        self.peer_name = peer_name
        self.policy: HandshakePolicy = policy if policy is not None else _DEFAULT_POLICY
        self._cookie = _cookie_bytes(cookie)
        self._our_name_bytes = our_name.encode("utf-8")
        if len(our_name) > MAX_NAME_CHARS:
            raise LocalProtocolError(f"our_name has more than {MAX_NAME_CHARS} characters")

        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._eof = False
        self._error: HandshakeError | None = None
        self._done = False
        self._events: list[HandshakeEvent] = []

        self.peer_flags: DistFlags = DistFlags(0)
        self.peer_creation = 0
        self._our_challenge = 0

        if role == "initiator":
            self._send_name()
            self.step = "recv_status"
        else:
            self.step = "recv_name"

    # -- public API -------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side."""
        if self._done:
            raise LocalProtocolError("the handshake is complete: feed bytes to the connection")
        if self._eof and data:
            raise LocalProtocolError("receive_data after end of stream")
        if data:
            self._inbuf += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (possibly empty). Flush them even after a failure."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def next_event(self) -> HandshakeEvent | NeedData:
        """The next event, or :data:`NEED_DATA`. Raises :class:`HandshakeError` on failure."""
        if self._error is not None:
            raise self._error
        while not self._events:
            if self._done:
                raise LocalProtocolError("the handshake is already complete")
            packet = self._take_packet()
            if packet is None:
                if self._error is not None:
                    raise self._error
                return NEED_DATA
            try:
                _RECEIVERS[(self.role, self.step)](self, packet)
            except HandshakeError as e:
                self._error = e
                self.step = "failed"
                raise
        return self._events.pop(0)

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        return self._error is not None

    def timed_out(self) -> HandshakeError:
        """Called by the driver when ``net_setuptime`` expires: fail the current step with
        reason ``timeout`` and return the error for the driver to raise."""
        if self._error is None:
            self._error = HandshakeError(self.step, "timeout", "net_setuptime expired")
            self.step = "failed"
        return self._error

    # -- framing (2-byte length, docs/WIRE.md §2.1) -----------------------------------------
    def _take_packet(self) -> bytes | None:
        buf = self._inbuf
        if len(buf) >= 2:
            (length,) = struct.unpack_from(">H", buf)
            if length == 0:
                self._fail("malformed", "empty handshake packet")
            if length > MAX_PACKET:
                self._fail("oversized", f"packet claims {length} bytes, limit {MAX_PACKET}")
            if len(buf) >= 2 + length:
                packet = bytes(buf[2 : 2 + length])
                del buf[: 2 + length]
                return packet
        if self._eof:
            detail = "peer closed the connection"
            if buf:
                detail += f" in the middle of a packet ({len(buf)} bytes pending)"
            elif self.step == "recv_challenge_ack":
                detail += " after our challenge reply: it most likely rejected our cookie"
            elif self.step == "recv_status":
                detail += " without a status"
            self._record(HandshakeError(self.step, "closed", detail))
        return None

    def _send(self, body: bytes) -> None:
        self._outbuf += struct.pack(">H", len(body)) + body

    def _fail(self, reason: str, detail: str = "") -> NoReturn:
        raise self._record(HandshakeError(self.step, reason, detail))

    def _record(self, err: HandshakeError) -> HandshakeError:
        if self._error is None:
            self._error = err
            self.step = "failed"
        return self._error

    # -- shared parsing ---------------------------------------------------------------------
    def _decode_name(self, raw: bytes) -> str:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("bad_node_name", f"node name {raw!r} is not UTF-8")
        if len(name) > MAX_NAME_CHARS or not _is_node_name(name):
            self._fail("bad_node_name", f"{name!r} is not a node name (alive@host)")
        return name

    def _complete(self) -> None:
        self._done = True
        self.step = "done"
        self._events.append(
            HandshakeComplete(
                peer_name=self.peer_name or "",
                peer_flags=self.peer_flags,
                flags=self.our_flags & self.peer_flags,
                peer_creation=self.peer_creation,
                trailing=bytes(self._inbuf),
            )
        )
        self._inbuf.clear()

    # -- initiator steps (dist_util:handshake_we_started) -----------------------------------
    def _send_name(self) -> None:
        self._send(
            bytes([TAG_NAME])
            + _NAME_HDR.pack(int(self.our_flags), self.creation, len(self._our_name_bytes))
            + self._our_name_bytes
        )

    def _recv_status(self, packet: bytes) -> None:
        if packet[0] != TAG_STATUS:
            self._fail("malformed", f"expected a status packet ('s'), got tag {packet[0]}")
        status = packet[1:].decode("latin-1")
        if status in ("ok", "ok_simultaneous"):
            self.step = "recv_challenge"
            self._events.append(StatusReceived(cast(Status, status)))  # one of the two just tested
        elif status in ("nok", "not_allowed"):
            self._fail(status, f"{self.peer_name} answered {status!r}")
        elif status == "alive":
            assert self.peer_name is not None
            answer = bool(self.policy.answer_alive(self.peer_name))
            self._send(_status_packet("true" if answer else "false"))
            if not answer:
                self._fail("alive", f"{self.peer_name} has a live connection to us; we answered false")
            self.step = "recv_challenge"
            self._events.append(StatusReceived("alive", answer))
        else:
            # includes "named:", which is only valid after a NAME_ME request we never make
            self._fail("unexpected_status", f"status {status!r}")

    def _recv_challenge(self, packet: bytes) -> None:
        if packet[0] == TAG_NAME_OLD:
            self._fail("old_version", "peer sent a version 5 ('n') challenge")
        if packet[0] != TAG_NAME:
            self._fail("malformed", f"expected a challenge ('N'), got tag {packet[0]}")
        if len(packet) < 1 + _CHALLENGE_HDR.size:
            self._fail("malformed", f"challenge packet of {len(packet)} bytes is too short")
        flags, challenge, creation, nlen = _CHALLENGE_HDR.unpack_from(packet, 1)
        start = 1 + _CHALLENGE_HDR.size
        if len(packet) < start + nlen:
            self._fail("malformed", "challenge packet is shorter than its name length")
        name = self._decode_name(packet[start : start + nlen])
        if name != self.peer_name:
            self._fail("wrong_name", f"dialled {self.peer_name!r} but {name!r} answered")
        peer_flags = _expand(flags)
        if not peer_flags & DistFlags.HANDSHAKE_23:
            self._fail("old_version", "challenge 'N' without HANDSHAKE_23")
        self.peer_flags = peer_flags
        self.peer_creation = creation
        self._check_mandatory()
        self._events.append(ChallengeReceived(name, peer_flags, creation))
        self._send_challenge_reply(challenge)
        self.step = "recv_challenge_ack"

    def _send_challenge_reply(self, peer_challenge: int) -> None:
        self._our_challenge = secrets.randbits(32)
        self._send(
            bytes([TAG_REPLY])
            + _U32.pack(self._our_challenge)
            + gen_digest(peer_challenge, self._cookie)
        )

    def _recv_challenge_ack(self, packet: bytes) -> None:
        if packet[0] != TAG_ACK or len(packet) != 1 + DIGEST_SIZE:
            self._fail("malformed", f"expected 'a' + 16-byte digest, got {len(packet)} bytes, tag {packet[0]}")
        expected = gen_digest(self._our_challenge, self._cookie)
        if not hmac.compare_digest(packet[1:], expected):
            log.warning("Connection attempt to disallowed node %s (bad cookie in ack)", self.peer_name)
            self._fail("bad_cookie", f"{self.peer_name} does not share our cookie")
        self._complete()

    # -- acceptor steps (dist_util:handshake_other_started) ---------------------------------
    def _recv_name(self, packet: bytes) -> None:
        if packet[0] == TAG_NAME_OLD:
            # OTP 25.0-25.2 closes without a status; so do we.
            self._fail("old_version", "peer sent a version 5 ('n') name; only 'N' is spoken")
        if packet[0] != TAG_NAME:
            self._fail("malformed", f"expected a name packet ('N'), got tag {packet[0]}")
        if len(packet) < 1 + _NAME_HDR.size:
            self._fail("malformed", f"name packet of {len(packet)} bytes is too short")
        flags, creation, nlen = _NAME_HDR.unpack_from(packet, 1)
        start = 1 + _NAME_HDR.size
        if len(packet) < start + nlen:
            self._fail("malformed", "name packet is shorter than its name length")
        peer_flags = _expand(flags)
        if peer_flags & DistFlags.NAME_ME:
            self._send(_status_packet("not_allowed"))
            self._fail("name_me_unsupported", "peer asked to be named (NAME_ME); refused with not_allowed")
        name = self._decode_name(packet[start : start + nlen])
        self.peer_name = name
        self.peer_flags = peer_flags
        self.peer_creation = creation
        self._check_mandatory()
        status = self.policy.accept_pending(name, peer_flags, creation)
        if status not in _STATUSES:
            raise LocalProtocolError(f"policy returned {status!r}, not one of {sorted(_STATUSES)}")
        self._send_status(status)
        self._events.append(NameReceived(name, peer_flags, creation, status))
        if status in ("ok", "ok_simultaneous"):
            self._send_challenge()
            self.step = "recv_challenge_reply"
        elif status == "alive":
            self.step = "recv_status"
        else:
            self.step = "send_status"
            self._fail(status, f"policy answered {status!r} to {name}")

    def _check_mandatory(self) -> None:
        missing = _missing_mandatory(self.peer_flags)
        if not missing:
            return
        if self.role == "acceptor":
            self._send(_status_packet("not_allowed"))
            log.error(
                "** %s: Connection attempt from node %s rejected since it cannot handle %s.**",
                self.our_name, self.peer_name, missing,
            )
        else:
            log.error(
                "** %s: Connection attempt to node %s aborted since it cannot handle %s.**",
                self.our_name, self.peer_name, missing,
            )
        self._fail("missing_flags", "peer lacks mandatory flags: " + ", ".join(missing))

    def _send_status(self, status: str) -> None:
        self._send(_status_packet(status))

    def _recv_alive_answer(self, packet: bytes) -> None:
        # dist_util:do_alive -> recv_status
        if packet == b"strue":
            self._send_challenge()
            self.step = "recv_challenge_reply"
        elif packet == b"sfalse":
            self._fail("alive_false", f"{self.peer_name} answered false to 'alive'")
        else:
            self._fail("malformed", f"expected strue/sfalse after 'alive', got {packet[:32]!r}")

    def _send_challenge(self) -> None:
        self._our_challenge = secrets.randbits(32)
        self._send(
            bytes([TAG_NAME])
            + _CHALLENGE_HDR.pack(
                int(self.our_flags), self._our_challenge, self.creation, len(self._our_name_bytes)
            )
            + self._our_name_bytes
        )

    def _recv_challenge_reply(self, packet: bytes) -> None:
        if packet[0] != TAG_REPLY or len(packet) != 1 + 4 + DIGEST_SIZE:
            self._fail("malformed", f"expected 'r' + challenge + digest, got {len(packet)} bytes, tag {packet[0]}")
        (peer_challenge,) = _U32.unpack_from(packet, 1)
        expected = gen_digest(self._our_challenge, self._cookie)
        if not hmac.compare_digest(packet[5:], expected):
            log.error("** Connection attempt from node %s rejected. Invalid challenge reply. ** (it does not share our cookie)",
                      self.peer_name)
            self._fail("bad_cookie", f"{self.peer_name} does not share our cookie")
        self._send_challenge_ack(peer_challenge)
        self._complete()

    def _send_challenge_ack(self, peer_challenge: int) -> None:
        self._send(bytes([TAG_ACK]) + gen_digest(peer_challenge, self._cookie))


#: Which method consumes the next packet, by (role, step): the transitions as data.
_RECEIVERS: dict[tuple[str, str], Callable[[Handshake, bytes], None]] = {
    ("initiator", "recv_status"): Handshake._recv_status,
    ("initiator", "recv_challenge"): Handshake._recv_challenge,
    ("initiator", "recv_challenge_ack"): Handshake._recv_challenge_ack,
    ("acceptor", "recv_name"): Handshake._recv_name,
    ("acceptor", "recv_status"): Handshake._recv_alive_answer,
    ("acceptor", "recv_challenge_reply"): Handshake._recv_challenge_reply,
}
