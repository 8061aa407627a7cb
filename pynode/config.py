"""Read ``sys.config``, the cluster configuration both sides share.

The file is Erlang term text: ``[{App, [{Key, Value}, ...]}, ...].`` pynode reads the
``pynode`` application's environment (the OTP application of the Elixir library in
``elixir/``, ``Pynode.Application``, which reads the same section; ``mix_compat/sys.config``
is the repository's cluster configuration) and returns it as a ``dict`` with ``str`` keys, e.g. ``{"connect": [...], "result_ttl": ...}``.
Nodes to connect to at start may be given as ``{connect, [n1@localhost, ...]}`` there, or as
kernel's ``sync_nodes_optional``.

The ``kernel`` section is read too (:func:`load_kernel_settings`, :class:`KernelSettings`):
the keys that apply to a distribution node (``net_ticktime``, ``net_setuptime``,
``inet_dist_listen_min``/``inet_dist_listen_max``, ``inet_dist_use_interface``,
``inet_dist_connect_options``/``inet_dist_listen_options``, ``dist_nodelay``,
``dist_auto_connect``) and the
equivalents of ``erl -proto_dist inet_tls -ssl_dist_optfile FILE`` (``proto_dist``,
``ssl_dist_optfile``, or the options themselves as ``ssl_dist_opts``). Each value is checked
here, so a malformed one is a :class:`ConfigError` naming the key before the node starts;
the other keys of the section are listed in :attr:`KernelSettings.ignored`.

The parser handles what config files contain: atoms (bare and quoted), integers (with
``_`` and ``Base#Digits``), floats, strings, binaries of strings, tuples, lists, maps,
comments. It is not an Erlang evaluator: no expressions, no records.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from typing import Any, Mapping, Sequence

from erl_interop.terms import Atom

__all__ = ["load_config", "parse_terms", "ConfigError", "APP", "KernelSettings", "SocketOptions", "kernel_settings",
           "load_kernel_settings", "socket_options", "erl_text", "AUTO_CONNECT", "PROTO_DIST"]

#: the section of sys.config both sides read: the Elixir library's OTP application, ``:pynode``
APP = "pynode"


class ConfigError(ValueError):
    """The file is not valid term text; the message names line and column."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<float>-?\d[\d_]*\.\d[\d_]*(?:[eE][+-]?\d+)?)
  | (?P<int>-?\d+\#[0-9a-zA-Z_]+|-?\d[\d_]*)
  | (?P<char>\$(?:\\.|.))
  | (?P<string>"(?:\\.|[^"\\])*")
  | (?P<qatom>'(?:\\.|[^'\\])*')
  | (?P<atom>[a-z][A-Za-z0-9_@.]*)
  | (?P<punct><<|>>|=>|[{}\[\],|.#])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESC = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "0": "\0", "\\": "\\", '"': '"', "'": "'", "b": "\b", "f": "\f", "v": "\v", "d": "\x7f"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESC.get(m.group(1), m.group(1)), s)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ConfigError(f"unexpected {text[pos]!r} at line {line}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    return out


def parse_terms(text: str) -> list[Any]:
    """Parse ``Term. Term. ...`` (a ``file:consult/1`` file) into Python terms."""
    toks = _tokens(text)
    i = 0
    result = []

    def where(k: int) -> str:
        p = toks[k][2] if k < len(toks) else len(text)
        return f"line {text.count(chr(10), 0, p) + 1}"

    def expect(v: str) -> None:
        nonlocal i
        if i >= len(toks) or toks[i][1] != v:
            raise ConfigError(f"expected {v!r} at {where(i)}")
        i += 1

    def seq(close: str) -> list[Any]:
        nonlocal i
        items: list[Any] = []
        if i < len(toks) and toks[i][1] == close:
            i += 1
            return items
        while True:
            items.append(term())
            if i < len(toks) and toks[i][1] == ",":
                i += 1
                continue
            expect(close)
            return items

    def term() -> Any:
        nonlocal i
        if i >= len(toks):
            raise ConfigError("unexpected end of file")
        kind, v, _ = toks[i]
        i += 1
        if kind == "int":
            if "#" in v:
                base, digits = v.split("#", 1)
                neg = base.startswith("-")
                n = int(digits.replace("_", ""), int(base.lstrip("-")))
                return -n if neg else n
            return int(v.replace("_", ""))
        if kind == "float":
            return float(v.replace("_", ""))
        if kind == "char":
            return ord(_unescape(v[1:]))
        if kind == "string":
            s = _unescape(v[1:-1])
            while i < len(toks) and toks[i][0] == "string":  # adjacent strings concatenate
                s += _unescape(toks[i][1][1:-1])
                i += 1
            return [ord(c) for c in s]
        if kind in ("atom", "qatom"):
            a = v if kind == "atom" else _unescape(v[1:-1])
            return {"true": True, "false": False, "nil": None}.get(a, Atom(a)) if kind == "atom" else Atom(a)
        if v == "{":
            return tuple(seq("}"))
        if v == "[":
            if i < len(toks) and toks[i][1] == "]":
                i += 1
                return []
            items = [term()]
            while i < len(toks) and toks[i][1] == ",":
                i += 1
                items.append(term())
            if i < len(toks) and toks[i][1] == "|":
                raise ConfigError(f"improper lists are not supported in config ({where(i)})")
            expect("]")
            return items
        if v == "<<":
            if i < len(toks) and toks[i][1] == ">>":
                i += 1
                return b""
            parts = seq(">>")
            out = b""
            for p in parts:
                out += bytes(p) if isinstance(p, list) else bytes([p])
            return out
        if v == "#":
            expect("{")
            d: dict[Any, Any] = {}
            if i < len(toks) and toks[i][1] == "}":
                i += 1
                return d
            while True:
                k = term()
                expect("=>")
                d[k] = term()
                if i < len(toks) and toks[i][1] == ",":
                    i += 1
                    continue
                expect("}")
                return d
        raise ConfigError(f"unexpected {v!r} at {where(i - 1)}")

    while i < len(toks):
        result.append(term())
        expect(".")
    return result


def _read_sys_config(path: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:  # as erl: the file named by -config must be readable
        raise ConfigError(f"cannot read the configuration file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        terms = parse_terms(text)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{path}: not Erlang term text: {e}") from None
    if len(terms) != 1 or not isinstance(terms[0], list):
        raise ConfigError(f"{path}: a sys.config holds one list of {{App, Env}} tuples")
    return terms[0]


def load_config(path: str) -> dict[str, Any]:
    """The ``pynode`` environment (:data:`APP`) from a ``sys.config`` file, as a dict."""
    env: dict[str, Any] = {}
    for entry in _read_sys_config(path):
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], list)):
            continue
        app, kv = entry
        for item in kv:
            if isinstance(item, tuple) and len(item) == 2:
                if app == APP:
                    env[str(item[0])] = item[1]
                elif app == "kernel" and item[0] in ("sync_nodes_optional", "sync_nodes_mandatory"):
                    env.setdefault("connect", []).extend(item[1])
    return env


# -- the kernel section ---------------------------------------------------------------------

#: ``dist_auto_connect`` values: OTP's ``never`` and ``once``, and ``always`` (its default)
AUTO_CONNECT = ("always", "once", "never")
#: ``proto_dist`` values a Python node speaks (IPv4): plain TCP and TLS over TCP
PROTO_DIST = ("inet_tcp", "inet_tls")

#: kernel keys this reader applies (``sync_nodes_*`` are read by :func:`load_config`)
_KERNEL_KEYS = frozenset({
    "net_ticktime", "net_setuptime", "inet_dist_listen_min", "inet_dist_listen_max", "inet_dist_use_interface",
    "inet_dist_connect_options", "inet_dist_listen_options", "dist_auto_connect", "proto_dist",
    "ssl_dist_optfile", "ssl_dist_opts", "sync_nodes_optional", "sync_nodes_mandatory", "dist_nodelay",
})

#: gen_tcp options that mean nothing for a Python socket (buffering and delivery modes of
#: the port driver, options inet_tcp_dist forces itself): accepted, listed as ignored
_TCP_IGNORED = frozenset({
    "active", "binary", "list", "mode", "packet", "packet_size", "header", "deliver", "buffer", "delay_send",
    "exit_on_close", "high_watermark", "low_watermark", "high_msgq_watermark", "low_msgq_watermark",
    "send_timeout", "send_timeout_close", "show_econnreset", "linger", "raw", "inet", "inet6", "local",
    "bind_to_device", "netns", "read_ahead", "debug", "nopush", "keepcnt", "keepidle", "keepintvl",
    "recvtos", "recvtclass", "recvttl", "ipv6_v6only", "dontroute", "line_delimiter",
})

#: gen_tcp options that become a ``setsockopt``: name -> (level, option, kind)
_SOCKOPTS: dict[str, tuple[int, int, str]] = {
    "nodelay": (socket.IPPROTO_TCP, socket.TCP_NODELAY, "bool"),
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE, "bool"),
    "sndbuf": (socket.SOL_SOCKET, socket.SO_SNDBUF, "int"),
    "recbuf": (socket.SOL_SOCKET, socket.SO_RCVBUF, "int"),
    "tos": (socket.IPPROTO_IP, socket.IP_TOS, "int"),
}
if hasattr(socket, "SO_PRIORITY"):  # Linux
    _SOCKOPTS["priority"] = (socket.SOL_SOCKET, socket.SO_PRIORITY, "int")


def erl_text(value: Any) -> str | None:
    """An Erlang string (a list of character codes, as :func:`parse_terms` reads ``"..."``), a
    binary or a ``str`` as text; ``None`` for anything else."""
    if isinstance(value, str) and not isinstance(value, Atom):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, list) and all(type(c) is int and 0 <= c <= 0x10FFFF for c in value):
        return "".join(map(chr, value))
    return None


def _ipv4(value: Any, where: str) -> str:
    """An IPv4 address tuple ``{127,0,0,1}`` (as the kernel takes it) as ``"127.0.0.1"``."""
    if isinstance(value, tuple) and len(value) == 4 and all(type(b) is int and 0 <= b <= 255 for b in value):
        return ".".join(map(str, value))
    raise ConfigError(f"{where} must be an IPv4 address tuple such as {{127,0,0,1}} (this node speaks inet, "
                      f"IPv4), not {_show(value)}")


def _show(value: Any) -> str:
    text = erl_text(value)
    if isinstance(value, list) and value and text is not None:
        return f'"{text}"'
    return repr(value)


@dataclasses.dataclass(frozen=True)
class SocketOptions:
    """The ``gen_tcp`` options of ``inet_dist_connect_options`` or ``inet_dist_listen_options``,
    as far as they map onto a socket (:func:`socket_options`)."""

    #: ``(level, option, value)`` set on each distribution socket (``nodelay``, ``keepalive``,
    #: ``sndbuf``, ``recbuf``, ``tos``, ``priority``)
    sockopts: tuple[tuple[int, int, int], ...] = ()
    #: ``{ip, Addr}``: the address to listen on (listen options) or to dial from (connect options)
    ip: str | None = None
    #: ``{port, P}``: the local port to dial from (connect options)
    port: int | None = None
    #: ``{backlog, N}`` (listen options)
    backlog: int | None = None
    #: ``{reuseaddr, Bool}`` (listen options)
    reuseaddr: bool | None = None
    #: the options that are no ``gen_tcp`` option; ``inet_tls_dist`` merges the connect options
    #: into the ssl client options, so for a TLS node these are ssl options
    other: tuple[tuple[Any, Any], ...] = ()
    #: the ``gen_tcp`` options without effect here (the port driver's own)
    ignored: tuple[str, ...] = ()


def socket_options(value: Any, where: str) -> SocketOptions:
    """Read a list of ``gen_tcp`` options (``[{nodelay, true}, {sndbuf, 65536}, binary]``);
    a value of the wrong type is a :class:`ConfigError` naming ``where``."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of gen_tcp options, not {_show(value)}")
    sockopts: list[tuple[int, int, int]] = []
    other: list[tuple[Any, Any]] = []
    ignored: list[str] = []
    found: dict[str, Any] = {}
    for opt in value:
        if isinstance(opt, Atom) or type(opt) is bool:
            name = str(opt).lower()
            if name in _TCP_IGNORED:
                ignored.append(name)
                continue
            raise ConfigError(f"{where}: unknown option {opt}")
        if not (isinstance(opt, tuple) and len(opt) == 2 and isinstance(opt[0], str)):
            raise ConfigError(f"{where}: each option is {{Name, Value}} or an atom, not {_show(opt)}")
        name, v = str(opt[0]), opt[1]
        found[name] = v  # a later occurrence wins, as inet's option parsing does
        if name in _SOCKOPTS:
            level, option, kind = _SOCKOPTS[name]
            if kind == "bool":
                if type(v) is not bool:
                    raise ConfigError(f"{where}: {name} must be true or false, not {_show(v)}")
                sockopts.append((level, option, int(v)))
            else:
                if type(v) is not int or v < 0:
                    raise ConfigError(f"{where}: {name} must be a non-negative integer, not {_show(v)}")
                sockopts.append((level, option, v))
        elif name in _TCP_IGNORED:
            ignored.append(name)
        elif name not in ("ip", "ifaddr", "port", "backlog", "reuseaddr"):
            other.append((Atom(name), v))
    ip: str | None = None
    for key in ("ip", "ifaddr"):
        if key in found:
            ip = _ipv4(found[key], f"{where}: {key}")
            break
    port = found.get("port")
    if port is not None and (type(port) is not int or not 0 <= port <= 65535):
        raise ConfigError(f"{where}: port must be an integer 0..65535, not {_show(port)}")
    backlog = found.get("backlog")
    if backlog is not None and (type(backlog) is not int or backlog < 0):
        raise ConfigError(f"{where}: backlog must be a non-negative integer, not {_show(backlog)}")
    reuseaddr = found.get("reuseaddr")
    if reuseaddr is not None and type(reuseaddr) is not bool:
        raise ConfigError(f"{where}: reuseaddr must be true or false, not {_show(reuseaddr)}")
    return SocketOptions(tuple(sockopts), ip, port, backlog, reuseaddr, tuple(other), tuple(ignored))


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    """The ``kernel`` keys of ``sys.config`` that apply to a distribution node, checked
    (:func:`kernel_settings`). ``None`` means the key is absent: the default applies."""

    #: ``net_ticktime``, seconds (OTP: 60)
    net_ticktime: int | None = None
    #: ``net_setuptime``, seconds (OTP: 7)
    net_setuptime: float | None = None
    #: ``inet_dist_listen_min`` / ``inet_dist_listen_max``: the ports tried in turn
    listen_min: int | None = None
    listen_max: int | None = None
    #: ``inet_dist_use_interface``, as an address string
    use_interface: str | None = None
    #: ``inet_dist_connect_options`` / ``inet_dist_listen_options``
    connect_options: SocketOptions = SocketOptions()
    listen_options: SocketOptions = SocketOptions()
    #: ``dist_auto_connect``: ``always`` (OTP's default), ``once`` or ``never``
    dist_auto_connect: str | None = None
    #: ``proto_dist``: ``inet_tcp`` or ``inet_tls`` (``erl -proto_dist``)
    proto_dist: str | None = None
    #: ``ssl_dist_optfile`` (``erl -ssl_dist_optfile``)
    ssl_dist_optfile: str | None = None
    #: ``ssl_dist_opts``: the optfile's term itself, ``[{server, Opts}, {client, Opts}]``
    ssl_dist_opts: list[Any] | None = None
    #: the keys of the section this node does not use
    ignored: tuple[str, ...] = ()
    #: where the settings were read (for messages)
    source: str = "sys.config"

    @property
    def listen_port_range(self) -> tuple[int, int] | None:
        """``(min, max)`` from ``inet_dist_listen_min``/``max``: max defaults to min (as
        ``inet_tcp_dist:get_port_range``); None when no minimum is set."""
        if self.listen_min is None:
            return None
        return self.listen_min, self.listen_max if self.listen_max is not None else self.listen_min

    @property
    def tls(self) -> bool:
        return self.proto_dist == "inet_tls"

    def with_proto_dist(self, proto_dist: str | None, ssl_dist_optfile: str | None) -> "KernelSettings":
        """These settings with ``erl``'s ``-proto_dist`` and ``-ssl_dist_optfile`` (command-line
        flags win over ``sys.config``); a :class:`ConfigError` when TLS has no options."""
        if proto_dist is not None and proto_dist not in PROTO_DIST:
            raise ConfigError(f"--proto-dist must be one of {', '.join(PROTO_DIST)}, not {proto_dist!r}")
        proto = proto_dist if proto_dist is not None else self.proto_dist
        optfile = ssl_dist_optfile if ssl_dist_optfile is not None else self.ssl_dist_optfile
        opts = None if ssl_dist_optfile is not None else self.ssl_dist_opts
        if proto == "inet_tls" and optfile is None and opts is None:
            raise ConfigError("proto_dist inet_tls needs an ssl_dist_optfile (--ssl-dist-optfile FILE): the node's "
                              "certificate and key")
        return dataclasses.replace(self, proto_dist=proto, ssl_dist_optfile=optfile, ssl_dist_opts=opts)


def _pos_int(value: Any, where: str) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{where} must be a positive integer (seconds), not {_show(value)}")
    return value


def _port(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be a port number 0..65535, not {_show(value)}")
    return value


def _word(value: Any, allowed: Sequence[str], where: str) -> str:
    text = str(value) if isinstance(value, Atom) else erl_text(value)
    if text is None or text not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, not {_show(value)}")
    return text


def kernel_settings(env: Mapping[str, Any] | Sequence[tuple[Any, Any]], source: str = "sys.config") -> KernelSettings:
    """Check the ``kernel`` environment ``env`` (a dict, or the ``[{Key, Value}]`` list of
    ``sys.config``) and return what applies. Raises :class:`ConfigError` naming the key and
    ``source`` for a malformed value; unknown keys end up in ``ignored``."""
    items = list(env.items()) if isinstance(env, Mapping) else list(env)
    kv: dict[str, Any] = {}
    ignored: list[str] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"{source}: the kernel section holds {{Key, Value}} tuples, not {_show(item)}")
        key = str(item[0])
        if key not in _KERNEL_KEYS:
            if key not in ignored:
                ignored.append(key)
            continue
        kv[key] = item[1]  # a later occurrence wins, as in the application environment
    where = f"{source}: kernel"
    ticktime = _pos_int(kv["net_ticktime"], f"{where} net_ticktime") if "net_ticktime" in kv else None
    setuptime: float | None = None
    if "net_setuptime" in kv:
        v = kv["net_setuptime"]
        if type(v) not in (int, float) or v <= 0:
            raise ConfigError(f"{where} net_setuptime must be a positive number (seconds), not {_show(v)}")
        setuptime = float(v)
    lo = _port(kv["inet_dist_listen_min"], f"{where} inet_dist_listen_min") if "inet_dist_listen_min" in kv else None
    hi = _port(kv["inet_dist_listen_max"], f"{where} inet_dist_listen_max") if "inet_dist_listen_max" in kv else None
    if lo is not None and hi is not None and hi < lo:
        raise ConfigError(f"{where} inet_dist_listen_max {hi} is below inet_dist_listen_min {lo}")
    if lo is None and hi is not None:
        raise ConfigError(f"{where} inet_dist_listen_max needs inet_dist_listen_min (the kernel ignores a maximum alone)")
    iface = _ipv4(kv["inet_dist_use_interface"], f"{where} inet_dist_use_interface") if "inet_dist_use_interface" in kv else None
    connect = socket_options(kv.get("inet_dist_connect_options", []), f"{where} inet_dist_connect_options")
    listen = socket_options(kv.get("inet_dist_listen_options", []), f"{where} inet_dist_listen_options")
    if "dist_nodelay" in kv:  # TCP_NODELAY on every distribution socket (OTP's default: true)
        if type(kv["dist_nodelay"]) is not bool:
            raise ConfigError(f"{where} dist_nodelay must be true or false, not {_show(kv['dist_nodelay'])}")
        nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY, int(kv["dist_nodelay"]))
        connect = dataclasses.replace(connect, sockopts=(nodelay, *connect.sockopts))
        listen = dataclasses.replace(listen, sockopts=(nodelay, *listen.sockopts))
    auto = _word(kv["dist_auto_connect"], AUTO_CONNECT, f"{where} dist_auto_connect") if "dist_auto_connect" in kv else None
    proto = _word(kv["proto_dist"], PROTO_DIST, f"{where} proto_dist") if "proto_dist" in kv else None
    optfile: str | None = None
    if "ssl_dist_optfile" in kv:
        optfile = erl_text(kv["ssl_dist_optfile"])
        if not optfile:
            raise ConfigError(f"{where} ssl_dist_optfile must be a file name (a string), not {_show(kv['ssl_dist_optfile'])}")
    opts: list[Any] | None = None
    if "ssl_dist_opts" in kv:
        if not isinstance(kv["ssl_dist_opts"], list):
            raise ConfigError(f"{where} ssl_dist_opts must be a list [{{server, Opts}}, {{client, Opts}}], "
                              f"not {_show(kv['ssl_dist_opts'])}")
        opts = kv["ssl_dist_opts"]
    if optfile is not None and opts is not None:
        raise ConfigError(f"{where}: give ssl_dist_optfile or ssl_dist_opts, not both")
    if proto == "inet_tls" and optfile is None and opts is None:
        raise ConfigError(f"{where} proto_dist inet_tls needs ssl_dist_optfile (or ssl_dist_opts): the node's "
                          "certificate and key")
    return KernelSettings(ticktime, setuptime, lo, hi, iface, connect, listen, auto, proto, optfile, opts,
                          tuple(ignored), source)


def load_kernel_settings(path: str) -> KernelSettings:
    """The ``kernel`` section of a ``sys.config`` file (:func:`kernel_settings`); an empty
    :class:`KernelSettings` when there is none."""
    env: list[Any] = []
    for entry in _read_sys_config(path):
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "kernel":
            if not isinstance(entry[1], list):
                raise ConfigError(f"{path}: the kernel section must be a list of {{Key, Value}} tuples")
            env.extend(entry[1])
    return kernel_settings(env, source=path)
