r"""The replicated, gproc-style cluster registry (the Python half of ``pynode_registry``).

The protocol is docs/REGISTRY_PROTOCOL.md, repeated verbatim between the markers below
(tests/test_registry_unit.py fails when the two drift apart); the Elixir twin,
``mix_compat/lib/pynode/registry_impl.ex``, repeats it the same way.

--- BEGIN docs/REGISTRY_PROTOCOL.md ---
# The pynode registry protocol (version 1)

One registry process runs on every node of the cluster, BEAM or Python, locally registered
as `pynode_registry`. It owns the registrations of its node's local processes and holds a
full mirror of everyone else's. Reads are answered from the local mirror; writes are made
by the owning node and broadcast. This text is the contract; the Elixir module
(`mix_compat/lib/pynode/registry_impl.ex`) and the Python module (`pynode/registry.py`)
repeat it in their headers and must stay in lockstep with it.

## Keys

gproc-style, global scope only:

- `{n, g, Name}` — a unique name: at most one holder in the cluster.
- `{p, g, Name}` — a property: any number of holders, each pid at most once.

`Name` is any term. Keys compare with Erlang's exact equality (`=:=`): `1` and `1.0` are
different names. (Python keeps mirror dicts keyed by `erl_interop.encode(Key)`, which is
exact.) Each entry is `{Key, Pid, Value}`; `Value` is any term (default `undefined`).

## Messages

Every message between registries is a plain message (`!`) to `{pynode_registry, Node}`
or to a registry pid, a tuple whose first element is the atom `'$pynode_reg'` and whose
second is the protocol version `1`:

| message | meaning |
| --- | --- |
| `{'$pynode_reg', 1, discover, From}` | "I am the registry `From`; send me your snapshot." |
| `{'$pynode_reg', 1, sync, From, Entries, Members}` | A snapshot of `From`'s node's own entries (`[{Key, Pid, Value}]`, local pids only) and the list of nodes whose registries `From` knows (`Members`, atoms, `From`'s own node included). |
| `{'$pynode_reg', 1, reg, From, Key, Pid, Value}` | `From`'s node registered `Key` for its local `Pid`. Also sent to update a value. |
| `{'$pynode_reg', 1, unreg, From, Key, Pid}` | `From`'s node removed `Key` for its local `Pid` (unregistered, process died, or lost a conflict). |

Messages with another version, or not of these shapes, are ignored (logged once per
sender); they never crash a registry.

## Membership and discovery

- A registry subscribes to node up/down events for all node types (hidden nodes included:
  `:net_kernel.monitor_nodes(true, node_type: :all)` on the BEAM, `Node.monitor_nodes` in
  Python).
- At start, and on every `nodeup` of node `N`, it sends `discover` to `{pynode_registry, N}`.
  A node that runs no registry simply never answers: it is not a member.
- On `discover` from `From` (a peer registry pid): the receiver monitors `From` if it does
  not know it yet (and then also sends its own `discover` to `From`), and answers with
  `sync` carrying its own entries and its member list, **once per peer registry**: it
  records that `From` has its snapshot, and a later `discover` from that same `From` is not
  answered (every change made after the snapshot reaches `From` after it, on the same
  ordered link, as `reg`/`unreg`). The record is cleared whenever `From` is (re)learnt:
  after its `DOWN` (after a lost connection `From` has purged the receiver's entries too, so
  its next `discover` gets a fresh `sync`), and when a new pid becomes the registry of
  `node(From)`.
- On `sync` from `From`: the receiver records `From` as the registry of `node(From)`
  (monitoring it if new), **replaces** every mirrored entry owned by `node(From)` with
  `Entries` (applying the conflict rule below to unique names), and sends `discover` to
  `{pynode_registry, M}` for every `M` in `Members` that it does not know yet. That send
  sets up the connection if there is none, so every member ends up connected to every other:
  hidden Python nodes that only know one BEAM node still join the full mesh.
- `members()` is this node plus every node whose registry it knows and that is up.
- When a peer registry goes `DOWN` (its process died, or the connection to its node was
  lost — reason `noconnection`), every entry owned by that node is purged from the mirror,
  and the node stops being a member. It becomes a member again on its next `sync`.

## Writes

Only the owning node writes its own processes' entries.

- `reg(Key, Value)` from a local process `Pid` goes through the local registry (a
  `gen_server:call` / Python call) so that writes from one node are serialized. For a unique
  name it fails with `{error, {already_registered, Holder}}` when the local mirror already has
  another holder; registering the same key again for the same pid updates its value. On success
  the registry stores the entry, monitors `Pid` (once per pid), and sends `reg` to every member.
- `unreg(Key)` removes the caller's entry and sends `unreg` to every member.
- When a local registered process dies, the registry removes all its entries and sends one
  `unreg` per entry.
- Receiving `reg` from a member whose node is not `node(Pid)` is a protocol violation:
  ignored. A `reg` from a registry not known yet (impossible between correct peers, whose
  `discover`/`sync` come first on the ordered link) may be applied or dropped; either way the
  receiver sends `discover` to it and the `sync` that answers converges (that registry has
  not answered a `discover` from this receiver since it last learnt it, or the receiver would
  know it). Receiving `unreg` for an entry that is not the current one (another holder,
  another pid) changes nothing.

## Conflicts (unique names)

Two nodes may register the same unique name concurrently, or meet after a partition with the
same name held on both sides. Every registry that sees two holders for one name keeps the
same **winner**, chosen without clocks:

> the holder whose **node name** is smaller in Erlang term order (atoms compare by their
> text, byte-wise on UTF-8); for two holders on one node (cannot happen with correct peers),
> the smaller pid.

So a mirror that learns of a second holder, by `reg` or by `sync`, answers reads with the
winner only. It keeps the losing claim hidden (it is not a holder) until that claim's owner
sends `unreg` for it or its node is purged; if the winner goes away first, the best remaining
claim becomes the holder. That way every mirror agrees even when nodes learnt of the claims in
different orders. When the **loser is local**, its owning registry also:

1. removes the loser's entry and sends `unreg` for it to every member;
2. sends the losing process the exit signal `{name_conflict, Key, WinnerPid}`, where
   `WinnerPid` is the holder that beat it in this registry (with three or more claims, not
   necessarily the final winner) (as
   `exit(LoserPid, {name_conflict, Key, WinnerPid})`): a process that does not trap exits dies
   with that reason; one that traps exits receives `{'EXIT', RegistryPid, {name_conflict, Key,
   WinnerPid}}` and keeps running without the name.

Every registry applies the same rule to the same pair, whatever the arrival order, so all
mirrors converge on one holder per name once the messages have been delivered.

## Waiting for a name

`await(Key, Timeout)` returns `{Pid, Value}` at once when the mirror has the name; otherwise
the registry records the caller as a waiter for `Key` and answers as soon as any `reg` or
`sync` brings the name in, or `timeout` when `Timeout` (milliseconds, default 5000) runs out.

## API (both languages)

| call | result |
| --- | --- |
| `reg(Key, Value \\ undefined)` | `:ok` / `{:error, reason}` for the calling process |
| `unreg(Key)` | `:ok` |
| `where(Key)` | pid or `:undefined` (unique names; for a property, the first holder) |
| `lookup_pids(Key)` | list of pids (one for a name, all holders for a property) |
| `lookup_values(Key)` | list of `{Pid, Value}` |
| `send(Key, Msg)` | sends to the holder (to every holder of a property); returns `Msg`; a name with no holder raises `badarg`, as `gproc:send/2` does |
| `await(Key, Timeout \\ 5000)` | `{Pid, Value}`; on timeout Elixir returns `{:error, :timeout}`, Python raises `TimeoutError` |
| `members()` | sorted list of member nodes, this node included |
--- END docs/REGISTRY_PROTOCOL.md ---

Python implementation notes
---------------------------
:class:`Mirror` is the table and the conflict rule, with no I/O. For unique names it keeps
every *claim* it has been told about and shows only the winner; a losing claim is hidden
at once and disappears when its owner sends ``unreg`` (which the owner always does after
losing). Keeping it rather than dropping it changes nothing visible while both holders
live, and means that if the winner's node dies before the loser's node has heard of the
winner, every mirror falls back to the same surviving holder. :class:`Registry` is the
GenServer that speaks the protocol; :class:`RegistryAPI` (``node.registry``) is the public
API, reading the mirror directly (same event loop, so reads are consistent snapshots).
Its ``reg``/``unreg`` still go through the registry process's mailbox (that is what orders
a node's writes), but as a :class:`_LocalWrite` carrying the already checked and encoded key
and a future for the reply, not as a ``$gen_call`` with its monitor, alias and selective
receive; the server still accepts the plain ``{reg, Key, Value}`` / ``{unreg, Key}`` calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable

from erl_interop import encode
from erl_interop.errors import EncodeError
from erl_interop.flags import DistFlags
from erl_interop.terms import Atom, Map, Pid, Reference

from .errors import CallError, ErlangError
from .genserver import TIMEOUT, From, GenServer
from .process import DOWN_TAG, Process

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "Registry",
    "RegistryAPI",
    "Mirror",
    "REGISTRY_NAME",
    "PROTOCOL_VERSION",
    "winner",
    "key_bytes",
    "check_key",
]

log = logging.getLogger("pynode.registry")

#: the locally registered name of the registry process on every node (protocol, "Messages")
REGISTRY_NAME = "pynode_registry"
#: protocol version carried as the second element of every message (protocol, "Messages")
PROTOCOL_VERSION = 1
#: ``await`` default, as ``Timeout \\ 5000`` in the protocol's API table
DEFAULT_AWAIT_TIMEOUT = 5.0

TAG = Atom("$pynode_reg")
DISCOVER = Atom("discover")
SYNC = Atom("sync")
REG = Atom("reg")
UNREG = Atom("unreg")
N = Atom("n")
P = Atom("p")
G = Atom("g")
OK = Atom("ok")
ERROR = Atom("error")
UNDEFINED = Atom("undefined")
BADARG = Atom("badarg")
NAME_CONFLICT = Atom("name_conflict")
ALREADY_REGISTERED = Atom("already_registered")
NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")


# -- keys ----------------------------------------------------------------------------------
def check_key(key: Any) -> tuple[Atom, Atom, Any]:
    """Validate a gproc-style global key; plain ``"n"``/``"p"``/``"g"`` strings become atoms.

    Raises :class:`ValueError` for anything that is not ``{n|p, g, Name}``."""
    if type(key) is not tuple or len(key) != 3:
        raise ValueError(f"a registry key is {{n|p, g, Name}}, got {key!r}")
    kind, scope, name = key
    if not isinstance(kind, str) or kind not in ("n", "p") or not isinstance(scope, str) or scope != "g":
        raise ValueError(f"a registry key is {{n|p, g, Name}} (global scope only), got {key!r}")
    return (N if kind == "n" else P, G, name)


def _canonical(t: Any) -> Any:
    """``t`` with every map's items in one order, so that equal maps encode to equal bytes."""
    ty = type(t)
    if ty is tuple:
        return tuple(_canonical(x) for x in t)
    if ty is list:
        return [_canonical(x) for x in t]
    if ty is dict:
        items = [(_canonical(k), _canonical(v)) for k, v in t.items()]
        items.sort(key=lambda kv: encode(kv[0]))
        return dict(items)
    if ty is Map:
        items = sorted(((_canonical(k), _canonical(v)) for k, v in t.items()), key=lambda kv: encode(kv[0]))
        return Map(items)
    return t


def key_bytes(key: Any) -> bytes:
    """The mirror's dictionary key for ``key``: its external term format, maps in canonical
    order (so the bytes are equal exactly when the keys are ``=:=``). Raises ``EncodeError``."""
    if _has_map(key):
        key = _canonical(key)
    return encode(key)


def _has_map(t: Any) -> bool:
    tt = type(t)
    if tt is dict or tt is Map:
        return True
    if tt is not tuple and tt is not list:
        return False
    stack = [t]
    while stack:
        for x in stack.pop():  # only containers are pushed: scalars cost one type check
            tx = type(x)
            if tx is dict or tx is Map:
                return True
            if tx is tuple or tx is list:
                stack.append(x)
    return False


_kb = key_bytes


class _LocalWrite:
    """A ``reg``/``unreg`` call made by :class:`RegistryAPI` from a process of this node.

    It is the Python twin of ``{'$gen_call', From, {reg, Key, Value}}`` without the
    monitor/alias/selective-receive machinery: the object is put in the registry process's
    mailbox (so it is served in mailbox order, serialized with every other write), and the
    server resolves ``fut`` with the reply. The key arrives checked and encoded (``kb``; None
    when it could not be encoded, and the server answers ``{error, badarg}`` as before). It is
    a Python object, so it never comes off the wire: remote callers can only send the plain
    ``{reg, Key, Value}`` / ``{unreg, Key}`` requests, which the server checks and encodes.
    A registry that dies with calls pending fails them with its exit reason
    (:meth:`Registry._fail_pending`), as ``gen_server:call``'s monitor would."""

    __slots__ = ("unreg", "key", "kb", "value", "pid", "fut", "timeout")

    def __init__(self, unreg: bool, key: Any, kb: bytes | None, value: Any, pid: Pid,
                 fut: "asyncio.Future[Any]", timeout: float | None) -> None:
        self.unreg = unreg
        self.key = key
        self.kb = kb
        self.value = value
        self.pid = pid
        self.fut = fut
        self.timeout = timeout

    def plain(self) -> tuple[Any, ...]:
        """The request as ``gen_server:call`` carries it (for :class:`CallError`)."""
        return (UNREG, self.key) if self.unreg else (REG, self.key, self.value)


def _expire(fut: "asyncio.Future[Any]", w: _LocalWrite, dest: Pid) -> None:
    if not fut.done():
        fut.set_exception(CallError(TIMEOUT, dest, w.plain(), w.timeout))


# -- the conflict rule ---------------------------------------------------------------------
def _rank(pid: Pid) -> tuple[bytes, int, int, int]:
    # Node name first (atom text, byte-wise UTF-8: protocol, "Conflicts"); on one node the
    # smaller pid, ordered as OTP orders local pids (serial, then number).
    return (pid.node.encode("utf-8"), pid.serial, pid.id, pid.creation)


def winner(a: Pid, b: Pid) -> Pid:
    """The holder that keeps a unique name both ``a`` and ``b`` claim (protocol, "Conflicts")."""
    return a if _rank(a) <= _rank(b) else b


# -- the table -----------------------------------------------------------------------------
class Mirror:
    """All entries this node knows of, keyed by the bytes of their key. No I/O.

    ``claims[kb]`` maps each holder pid to ``(Key, Value)`` in insertion order. For a
    property every claim is visible; for a unique name only :func:`winner` of the claims is.
    """

    def __init__(self) -> None:
        self.claims: dict[bytes, dict[Pid, tuple[Any, Any]]] = {}
        self.by_pid: dict[Pid, dict[bytes, None]] = {}
        self.by_node: dict[Atom, set[Pid]] = {}

    # -- reading --------------------------------------------------------------------------
    def holder(self, kb: bytes) -> tuple[Pid, Any, Any] | None:
        """``(Pid, Key, Value)`` of the visible holder (first holder for a property)."""
        c = self.claims.get(kb)
        if not c:
            return None
        it = iter(c.items())
        pid, (key, value) = next(it)
        if key[0] == N and len(c) > 1:
            for p, (k, v) in it:
                if _rank(p) < _rank(pid):
                    pid, key, value = p, k, v
        return pid, key, value

    def visible(self, kb: bytes) -> list[tuple[Pid, Any]]:
        """``[(Pid, Value)]`` of the visible holders of ``kb``."""
        c = self.claims.get(kb)
        if not c:
            return []
        pid, (key, _v) = next(iter(c.items()))
        if key[0] == N:
            h = self.holder(kb)
            assert h is not None
            return [(h[0], h[2])]
        return [(p, v) for p, (_k, v) in c.items()]

    def entries(self) -> list[tuple[Any, Pid, Any]]:
        """Every visible entry, ``(Key, Pid, Value)``."""
        out: list[tuple[Any, Pid, Any]] = []
        for kb, c in self.claims.items():
            if not c:
                continue
            key = next(iter(c.values()))[0]
            out.extend((key, p, v) for p, v in self.visible(kb))
        return out

    def entries_of_node(self, node: Atom) -> list[tuple[Any, Pid, Any]]:
        """Every claim held by a process of ``node`` (visible or not), ``(Key, Pid, Value)``."""
        out = []
        for pid in self.by_node.get(node, ()):
            for kb in self.by_pid.get(pid, ()):
                key, value = self.claims[kb][pid]
                out.append((key, pid, value))
        return out

    def keys_of(self, pid: Pid) -> list[bytes]:
        return list(self.by_pid.get(pid, ()))

    def claim(self, kb: bytes, pid: Pid) -> tuple[Any, Any] | None:
        c = self.claims.get(kb)
        return None if c is None else c.get(pid)

    def losers(self, kb: bytes) -> list[Pid]:
        """Claims of a unique name that are not its winner."""
        c = self.claims.get(kb)
        if not c or len(c) < 2 or next(iter(c.values()))[0][0] != N:
            return []  # a property has no losers
        h = self.holder(kb)
        assert h is not None
        return [p for p in c if p != h[0]]

    # -- writing --------------------------------------------------------------------------
    def put(self, kb: bytes, key: Any, pid: Pid, value: Any) -> None:
        self.claims.setdefault(kb, {})[pid] = (key, value)
        self.by_pid.setdefault(pid, {})[kb] = None
        self.by_node.setdefault(pid.node, set()).add(pid)

    def remove(self, kb: bytes, pid: Pid) -> bool:
        c = self.claims.get(kb)
        if c is None or pid not in c:
            return False
        del c[pid]
        if not c:
            del self.claims[kb]
        ks = self.by_pid[pid]
        del ks[kb]
        if not ks:
            del self.by_pid[pid]
            s = self.by_node[pid.node]
            s.discard(pid)
            if not s:
                del self.by_node[pid.node]
        return True

    def remove_pid(self, pid: Pid) -> list[tuple[bytes, Any]]:
        """Drop every claim of ``pid``; return ``[(kb, Key)]`` dropped."""
        out = []
        for kb in self.keys_of(pid):
            key = self.claims[kb][pid][0]
            self.remove(kb, pid)
            out.append((kb, key))
        return out

    def drop_node(self, node: Atom) -> set[bytes]:
        """Purge every claim held on ``node``; return the keys touched."""
        touched: set[bytes] = set()
        for pid in list(self.by_node.get(node, ())):
            touched.update(kb for kb, _k in self.remove_pid(pid))
        return touched

    def replace_node(self, node: Atom, entries: list[tuple[bytes, Any, Pid, Any]]) -> set[bytes]:
        """Make ``node``'s claims exactly ``entries`` (``(kb, Key, Pid, Value)``); return keys touched."""
        new = {(kb, pid): (key, value) for kb, key, pid, value in entries}
        touched: set[bytes] = set()
        for pid in list(self.by_node.get(node, ())):
            for kb in self.keys_of(pid):
                if (kb, pid) not in new:
                    self.remove(kb, pid)
                    touched.add(kb)
        for (kb, pid), (key, value) in new.items():
            if self.claim(kb, pid) != (key, value):
                self.put(kb, key, pid, value)
                touched.add(kb)
        return touched


# -- the registry process ------------------------------------------------------------------
class Registry(GenServer):
    """The ``pynode_registry`` process. Start with :meth:`start_for` (done by ``Node.start``)."""

    mirror: Mirror
    #: peer node -> (its registry pid, our monitor ref on it)
    peers: dict[Atom, tuple[Pid, Reference]]
    #: peer node -> its registry pid that has our snapshot (protocol, "Membership and
    #: discovery": a ``discover`` is answered once per peer registry, until it is relearnt)
    synced: dict[Atom, Pid]

    @classmethod
    async def start_for(cls, node: "Node") -> "Registry":
        """Start the registry of ``node``, registered as ``pynode_registry``."""
        server = await cls.start(node, name=REGISTRY_NAME)
        assert isinstance(server, Registry)
        return server

    async def init(self, *args: Any) -> None:
        self.mirror = Mirror()
        self.peers = {}
        self.synced = {}
        self._peer_refs: dict[Reference, Atom] = {}
        self._local_mons: dict[Pid, Reference] = {}
        self._waiters: dict[bytes, list[asyncio.Future[tuple[Pid, Any]]]] = {}
        self._warned: set[Any] = set()
        #: local calls in flight (:class:`_LocalWrite`), failed if this process dies
        self._pending: dict[asyncio.Future[Any], _LocalWrite] = {}
        task = self.process.task
        assert task is not None
        task.add_done_callback(self._fail_pending)
        node = self.process.node
        node.monitor_nodes(self.process)
        for peer in list(node.connected_nodes):
            self._discover_node(peer)

    # -- state views used by RegistryAPI ---------------------------------------------------
    def members(self) -> list[Atom]:
        return sorted([self.process.node.name, *self.peers])

    def add_waiter(self, kb: bytes, fut: "asyncio.Future[tuple[Pid, Any]]") -> None:
        self._waiters.setdefault(kb, []).append(fut)

    def drop_waiter(self, kb: bytes, fut: "asyncio.Future[tuple[Pid, Any]]") -> None:
        ws = self._waiters.get(kb)
        if ws is not None:
            try:
                ws.remove(fut)
            except ValueError:
                pass
            if not ws:
                del self._waiters[kb]

    # -- local writes (calls) --------------------------------------------------------------
    async def handle_call(self, request: Any, from_: From) -> Any:
        pid = from_[0]
        try:
            if type(request) is tuple and len(request) == 3 and request[0] == REG:
                return self._local_reg(pid, request[1], request[2])
            if type(request) is tuple and len(request) == 2 and request[0] == UNREG:
                return self._local_unreg(pid, request[1])
        except (ValueError, EncodeError):
            return (ERROR, BADARG)
        return (ERROR, (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        self._warn_once(("cast", type(request).__name__), "ignored cast %r", request)

    def _local_reg(self, pid: Pid, key: Any, value: Any) -> Any:
        key = check_key(key)
        return self._reg_kb(pid, key, _kb(key), value)

    def _reg_kb(self, pid: Pid, key: tuple[Atom, Atom, Any], kb: bytes, value: Any) -> Any:
        """``reg`` of a checked ``key`` whose mirror bytes are ``kb``."""
        if type(pid) is not Pid or pid.node != self.process.node.name:
            return (ERROR, Atom("not_local"))
        proc = self.process.node.process(pid)
        if proc is None or not proc.alive:
            return (ERROR, Atom("noproc"))
        if key[0] == N:
            h = self.mirror.holder(kb)
            if h is not None and h[0] != pid:
                return (ERROR, (ALREADY_REGISTERED, h[0]))
        self.mirror.put(kb, key, pid, value)
        if pid not in self._local_mons:
            self._local_mons[pid] = self.process.monitor(pid)
        self._broadcast((TAG, PROTOCOL_VERSION, REG, self.pid, key, pid, value))
        self._wake(kb)
        return OK

    def _local_unreg(self, pid: Pid, key: Any) -> Any:
        key = check_key(key)
        return self._unreg_kb(pid, key, _kb(key))

    def _unreg_kb(self, pid: Pid, key: tuple[Atom, Atom, Any], kb: bytes) -> Any:
        """``unreg`` of a checked ``key`` whose mirror bytes are ``kb``."""
        if self.mirror.remove(kb, pid):
            self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, pid))
            self._maybe_demonitor(pid)
        return OK

    def _maybe_demonitor(self, pid: Pid) -> None:
        if pid not in self.mirror.by_pid:
            ref = self._local_mons.pop(pid, None)
            if ref is not None:
                self.process.demonitor(ref, flush=True)

    # -- everything else (info) ------------------------------------------------------------
    def _fail_pending(self, _task: Any) -> None:
        """The registry process is gone: fail the calls still waiting for it."""
        reason = self.process.exit_reason
        pending, self._pending = self._pending, {}
        for fut, w in pending.items():
            if not fut.done():
                fut.set_exception(CallError(reason, self.process.pid, w.plain(), w.timeout))

    def _local_write(self, w: _LocalWrite) -> None:
        # As handle_call for the plain request; an unexpected error crashes the registry
        # (and _fail_pending answers the caller with the exit reason), as there.
        try:
            if w.kb is None:
                result: Any = (ERROR, BADARG)
            elif w.unreg:
                result = self._unreg_kb(w.pid, w.key, w.kb)
            else:
                result = self._reg_kb(w.pid, w.key, w.kb, w.value)
        except (ValueError, EncodeError):
            result = (ERROR, BADARG)
        fut = w.fut
        self._pending.pop(fut, None)
        if not fut.done():  # else the caller timed out or was killed: the write stands
            fut.set_result(result)

    async def handle_info(self, msg: Any) -> None:
        if type(msg) is _LocalWrite:
            self._local_write(msg)
            return
        try:
            self._info(msg)
        except Exception:  # a bad message must never take the registry down
            log.exception("%s: registry failed to handle %r (ignored)", self.process.node.name, msg)

    def _info(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            self._warn_once("junk", "ignored message %r", msg)
            return
        tag = msg[0]
        if tag == TAG and type(tag) is Atom:
            self._protocol(msg)
        elif tag == DOWN_TAG and len(msg) == 5:
            self._down(msg[1], msg[3], msg[4])
        elif tag == NODEUP and len(msg) == 2:
            self._discover_node(msg[1])
        elif tag == NODEDOWN and len(msg) == 2:
            pass  # the peer registry's DOWN (noconnection) does the purge
        else:
            self._warn_once("junk", "ignored message %r", msg)

    def _protocol(self, msg: tuple[Any, ...]) -> None:
        n = len(msg)
        vsn = msg[1] if n > 1 else None
        frm = msg[3] if n > 3 else None
        sender: Any = frm if type(frm) is Pid else "unknown"
        if type(vsn) is not int or vsn != PROTOCOL_VERSION:
            self._warn_once(sender, "ignored registry message of another version from %s: %r", sender, msg)
            return
        kind = msg[2] if n > 2 else None
        if type(frm) is not Pid or frm.node == self.process.node.name:
            self._warn_once(sender, "ignored registry message with a bad sender: %r", msg)
            return
        if not self._linked(frm.node):
            # Read off a link that has already gone down (its DOWN is processed or on its
            # way): acting on it would resurrect a member the partition removed.
            log.debug("%s: dropped a registry message from %s, which is not connected", self.process.node.name, frm)
            return
        if kind == DISCOVER and n == 4:
            self._on_discover(frm)
        elif kind == SYNC and n == 6 and type(msg[4]) is list and type(msg[5]) is list:
            self._on_sync(frm, msg[4], msg[5])
        elif kind == REG and n == 7:
            self._on_reg(frm, msg[4], msg[5], msg[6])
        elif kind == UNREG and n == 6:
            self._on_unreg(frm, msg[4], msg[5])
        else:
            self._warn_once(sender, "ignored malformed registry message from %s: %r", sender, msg)

    def _linked(self, peer: Atom) -> bool:
        dist = self.process.node.dist
        c = None if dist is None else dist.conns.get(peer)
        return c is not None and c.state == "up"

    def _warn_once(self, sender: Any, fmt: str, *args: Any) -> None:
        if sender in self._warned:
            return
        self._warned.add(sender)
        log.warning("%s: " + fmt, self.process.node.name, *args)

    # -- discovery -------------------------------------------------------------------------
    def _discover_node(self, peer: Any) -> None:
        if type(peer) is not Atom or peer == self.process.node.name or "@" not in peer:
            return  # not a node name (alive@host): a hostile member list must not make us dial it
        dist = self.process.node.dist
        c = dist.conns.get(peer) if dist is not None else None
        if c is not None and c.state == "up" and not c.flags & DistFlags.SPAWN:
            # A C node (erl_call, ei, JInterface): it runs no registry, and a message it does
            # not expect makes erl_call fail. BEAM nodes and pynodes all have SPAWN.
            return
        self.process.send((Atom(REGISTRY_NAME), peer), (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))

    def _know(self, frm: Pid) -> bool:
        """Record ``frm`` as the registry of its node; True when it was not known."""
        cur = self.peers.get(frm.node)
        if cur is not None:
            if cur[0] == frm:
                return False
            # Another registry for that node: the old one is gone, whatever its DOWN says.
            self._forget(frm.node)
        ref = self.process.monitor(frm)
        self.synced.pop(frm.node, None)  # (re)learnt: it gets a fresh snapshot
        self.peers[frm.node] = (frm, ref)
        self._peer_refs[ref] = frm.node
        return True

    def _forget(self, node: Atom) -> None:
        pid, ref = self.peers.pop(node)
        self.synced.pop(node, None)
        self._peer_refs.pop(ref, None)
        self.process.demonitor(ref, flush=True)
        self._settle(self.mirror.drop_node(node))

    def _is_current(self, frm: Pid) -> bool:
        cur = self.peers.get(frm.node)
        return cur is not None and cur[0] == frm

    def _on_discover(self, frm: Pid) -> None:
        if self._know(frm):
            self.process.send(frm, (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))
        if self.synced.get(frm.node) == frm:
            # It has our snapshot already, and every change since went to it after that
            # snapshot on the same ordered link: another one would only repeat it.
            return
        self.synced[frm.node] = frm
        own = [(k, p, v) for k, p, v in self.mirror.entries_of_node(self.process.node.name)]
        self.process.send(frm, (TAG, PROTOCOL_VERSION, SYNC, self.pid, own, self.members()))

    def _on_sync(self, frm: Pid, entries: list[Any], members: list[Any]) -> None:
        self._know(frm)
        parsed: list[tuple[bytes, Any, Pid, Any]] = []
        for e in entries:
            ok = self._parse_remote(frm, e[0], e[1], e[2]) if type(e) is tuple and len(e) == 3 else None
            if ok is None:
                self._warn_once((frm, "entry"), "ignored bad entry %r in a sync from %s", e, frm)
                continue
            parsed.append((ok[0], ok[1], e[1], e[2]))
        self._settle(self.mirror.replace_node(frm.node, parsed))
        me = self.process.node.name
        for m in members:
            if type(m) is Atom and m != me and m not in self.peers:
                self._discover_node(m)

    def _parse_remote(self, frm: Pid, key: Any, pid: Any, value: Any) -> tuple[bytes, Any] | None:
        """``(kb, Key)`` of an entry announced by ``frm``, or None when it breaks the protocol."""
        if type(pid) is not Pid or pid.node != frm.node:
            return None
        try:
            key = check_key(key)
            return _kb(key), key
        except (ValueError, EncodeError):
            return None

    def _on_reg(self, frm: Pid, key: Any, pid: Any, value: Any) -> None:
        if not self._is_current(frm):
            # Not (or no longer) a member: its snapshot, asked for now, will carry this entry.
            self.process.send(frm, (TAG, PROTOCOL_VERSION, DISCOVER, self.pid))
            return
        ok = self._parse_remote(frm, key, pid, value)
        if ok is None:
            self._warn_once((frm, "reg"), "ignored reg violating the protocol from %s: %r", frm, (key, pid))
            return
        kb, key = ok
        self.mirror.put(kb, key, pid, value)
        self._settle({kb})

    def _on_unreg(self, frm: Pid, key: Any, pid: Any) -> None:
        if not self._is_current(frm):
            return
        ok = self._parse_remote(frm, key, pid, None)
        if ok is None:
            self._warn_once((frm, "unreg"), "ignored unreg violating the protocol from %s: %r", frm, (key, pid))
            return
        kb, _key = ok
        if self.mirror.remove(kb, pid):
            self._settle({kb})

    # -- DOWN ------------------------------------------------------------------------------
    def _down(self, ref: Any, obj: Any, reason: Any) -> None:
        node = self._peer_refs.pop(ref, None)
        if node is not None:
            cur = self.peers.get(node)
            if cur is not None and cur[1] == ref:
                del self.peers[node]
                self.synced.pop(node, None)  # it purged our entries too (or is gone)
                log.info("%s: registry of %s is gone (%s); purging its entries", self.process.node.name, node, reason)
                self._settle(self.mirror.drop_node(node))
            return
        if type(obj) is Pid and self._local_mons.get(obj) == ref:
            del self._local_mons[obj]
            for kb, key in self.mirror.remove_pid(obj):
                self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, obj))
                self._settle({kb})

    # -- conflicts and waiters -------------------------------------------------------------
    def _settle(self, kbs: Iterable[bytes]) -> None:
        """Apply the conflict rule to ``kbs`` (evicting local losers) and wake waiters."""
        me = self.process.node.name
        for kb in kbs:
            losers = self.mirror.losers(kb)
            if losers:
                h = self.mirror.holder(kb)
                assert h is not None
                for loser in losers:
                    if loser.node == me:
                        self._evict(kb, loser, h[0])
            self._wake(kb)

    def _evict(self, kb: bytes, loser: Pid, winner_pid: Pid) -> None:
        claim = self.mirror.claim(kb, loser)
        if claim is None:
            return
        key = claim[0]
        self.mirror.remove(kb, loser)
        self._broadcast((TAG, PROTOCOL_VERSION, UNREG, self.pid, key, loser))
        self._maybe_demonitor(loser)
        log.info("%s: %s lost %r to %s", self.process.node.name, loser, key, winner_pid)
        self.process.exit(loser, (NAME_CONFLICT, key, winner_pid))

    def _wake(self, kb: bytes) -> None:
        ws = self._waiters.get(kb)
        if not ws:
            return
        h = self.mirror.holder(kb)
        if h is None:
            return
        del self._waiters[kb]
        for fut in ws:
            if not fut.done():
                fut.set_result((h[0], h[2]))

    def _broadcast(self, msg: Any) -> None:
        for pid, _ref in self.peers.values():
            self.process.send(pid, msg)


# -- the public API ------------------------------------------------------------------------
class RegistryAPI:
    """The registry as seen from Python: ``node.registry``.

    Methods that act for a process take it first, where Erlang uses ``self()``. Reads are
    answered from this node's mirror. Keys are ``(Atom('n'|'p'), Atom('g'), Name)``; plain
    ``"n"``, ``"p"``, ``"g"`` strings are accepted for the first two elements.
    """

    def __init__(self, node: "Node", server: Registry) -> None:
        self.node = node
        self.server = server

    @property
    def pid(self) -> Pid:
        """The registry process's pid."""
        return self.server.pid

    async def reg(self, proc: Process, key: Any, value: Any = UNDEFINED, timeout: float | None = 5.0) -> Any:
        """Register ``key`` for ``proc`` (``Value`` defaults to ``undefined``).

        Returns ``Atom('ok')`` or ``(Atom('error'), Reason)``, e.g.
        ``(error, (already_registered, HolderPid))`` for a name someone else holds.
        Raises :class:`ValueError` for a malformed key."""
        key = check_key(key)
        kb = _kb(key)  # raises EncodeError here, in the caller, for an unencodable key
        return await self._call(proc, False, key, kb, value, timeout)

    async def unreg(self, proc: Process, key: Any, timeout: float | None = 5.0) -> Any:
        """Remove ``proc``'s entry for ``key``; returns ``Atom('ok')``."""
        key = check_key(key)
        try:
            kb: bytes | None = _kb(key)
        except EncodeError:
            kb = None  # the server answers {error, badarg}, as for the plain request
        return await self._call(proc, True, key, kb, None, timeout)

    async def _call(self, proc: Process, unreg: bool, key: Any, kb: bytes | None, value: Any,
                    timeout: float | None) -> Any:
        """The registry call for ``proc``: through the registry's mailbox, as a
        :class:`_LocalWrite` when ``proc`` is a process of this node and the registry is
        running, else as a plain ``gen_server:call`` (which reports ``noproc`` etc.)."""
        server = self.server
        sp = server.process
        task = sp.task
        if (proc.node is not self.node or sp.exit_reason is not None or task is None or task.done()
                or (timeout is not None and timeout <= 0)):
            return await proc.call(server.pid, (UNREG, key) if unreg else (REG, key, value), timeout)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        w = _LocalWrite(unreg, key, kb, value, proc.pid, fut, timeout)
        pending = server._pending
        pending[fut] = w
        sp.deliver(w)
        h = None if timeout is None else loop.call_later(timeout, _expire, fut, w, server.pid)
        try:
            return await fut
        finally:
            if h is not None:
                h.cancel()
            pending.pop(fut, None)

    def where(self, key: Any) -> Pid | Atom:
        """The holder of a name (the first holder of a property), or ``Atom('undefined')``."""
        h = self.server.mirror.holder(_kb(check_key(key)))
        return UNDEFINED if h is None else h[0]

    def lookup_pids(self, key: Any) -> list[Pid]:
        """All holders: one for a name, every holder for a property."""
        return [p for p, _v in self.server.mirror.visible(_kb(check_key(key)))]

    def lookup_values(self, key: Any) -> list[tuple[Pid, Any]]:
        """``[(Pid, Value)]`` for every holder."""
        return self.server.mirror.visible(_kb(check_key(key)))

    def send(self, key: Any, msg: Any, sender: Process | None = None) -> Any:
        """Send ``msg`` to the holder (every holder of a property); return ``msg``.

        A unique name with no holder raises ``ErlangError(badarg)``, as ``gproc:send/2``."""
        key = check_key(key)
        pids = self.lookup_pids(key)
        if not pids and key[0] == N:
            raise ErlangError(BADARG)
        for pid in pids:
            if sender is not None:
                sender.send(pid, msg)
            else:
                self.node.send(pid, msg)
        return msg

    async def wait_for(self, key: Any, timeout: float | None = DEFAULT_AWAIT_TIMEOUT) -> tuple[Pid, Any]:
        """``await(Key, Timeout)``: ``(Pid, Value)`` as soon as the key has a holder.

        ``timeout`` in seconds (default 5, as the protocol's 5000 ms); raises
        :class:`TimeoutError` when it runs out."""
        key = check_key(key)
        kb = _kb(key)
        h = self.server.mirror.holder(kb)
        if h is not None:
            return (h[0], h[2])
        fut: asyncio.Future[tuple[Pid, Any]] = asyncio.get_running_loop().create_future()
        self.server.add_waiter(kb, fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no holder for {key!r} after {timeout}s") from None
        finally:
            self.server.drop_waiter(kb, fut)

    await_ = wait_for

    def members(self) -> list[Atom]:
        """This node and every node whose registry is known and up, sorted."""
        return self.server.members()

    def entries(self) -> list[tuple[Any, Pid, Any]]:
        """Every visible entry of the mirror, ``(Key, Pid, Value)`` (for inspection)."""
        return self.server.mirror.entries()
