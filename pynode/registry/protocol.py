r"""The registry protocol's vocabulary: the message tags and atoms, the names, and what a
key is (:func:`check_key`) and how the mirror files it (:func:`key_bytes`). No processes
and no I/O here.

Owns: :data:`REGISTRY_NAME`, :data:`PROTOCOL_VERSION`, the atoms of the messages
``{'$pynode_reg', Vsn, Kind, From, ...}``, :func:`check_key`, :func:`key_bytes`.
May import: :mod:`erl_interop` only.

The protocol is docs/REGISTRY_PROTOCOL.md, repeated verbatim between the markers below
(tests/test_registry_unit.py fails when the two drift apart; scripts/sync_protocol_docs.py
rewrites the copy); the Elixir twin, ``elixir/lib/pynode/registry_impl.ex``, repeats it
the same way.

--- BEGIN docs/REGISTRY_PROTOCOL.md ---
# The pynode registry protocol (version 1)

One registry process runs on every node of the cluster, BEAM or Python, locally registered
as `pynode_registry`. It owns the registrations of its node's local processes and holds a
full mirror of everyone else's. Reads are answered from the local mirror; writes are made
by the owning node and broadcast. This text is the contract; the Elixir module
(`elixir/lib/pynode/registry_impl.ex`) and the Python package (`pynode/registry/`, in
`protocol.py`) repeat it in their headers and must stay in lockstep with it.

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
"""

from __future__ import annotations

from typing import Any

from erl_interop import encode
from erl_interop.terms import Atom, Map

__all__ = ["REGISTRY_NAME", "PROTOCOL_VERSION", "check_key", "key_bytes"]

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
