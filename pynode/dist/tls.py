"""TLS distribution (``erl -proto_dist inet_tls``): the ``ssl_dist_optfile``'s options as two
:class:`ssl.SSLContext` objects, one for the connections the node accepts and one for those
it dials (:class:`DistTls`).

Theory of operation
-------------------
OTP's ``inet_tls_dist`` runs the ordinary distribution inside TLS (docs/WIRE.md §7): every
accepted socket goes through ``ssl:handshake`` with the options of the file's
``{server, Opts}``, every dialled one through ``ssl:connect`` with those of ``{client, Opts}``.
This module reads the very same file (Erlang terms, :func:`pynode.config.parse_terms`), or the
same terms from ``sys.config`` or from Python, and maps each ssl option onto Python's ``ssl``
module. Where the file says nothing, OTP 25's defaults hold:

- ``versions``: ``['tlsv1.2']`` when the role's entry exists (``inet_tls_dist``'s
  ``dist_defaults``), ssl's own range (TLS 1.2 and 1.3) when the entry is missing;
- ``verify``: ``verify_none`` on both sides (a warning is logged for the client side);
- ``fail_if_no_peer_cert``: ``false``;
- ``server_name_indication``: the host part of the dialled node's name (``disable``: none). With
  ``verify_peer`` the server's certificate must be valid for that name, as ssl checks it.

Options that only tune OTP's implementation (``reuse_sessions``, ``hibernate_after``,
``log_level``, ...) are accepted and listed in :attr:`DistTls.ignored`. Options that would
change what is verified and that Python's ``ssl`` cannot do (``verify_fun``, ``crl_check``,
``partial_chain``, ...) are a :class:`TlsConfigError`, as is any unknown option: a node must
not start believing they apply. ``depth`` is checked after the TLS handshake on the peer's
verified chain (:meth:`DistTls.check_peer`): Python's ``ssl`` has no verify-depth setting.

Owns: :class:`DistTls`, :class:`TlsConfigError`, :func:`dist_tls`, :func:`load_optfile`. May
import: :mod:`erl_interop`, :mod:`pynode.errors`, :mod:`pynode.config`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
from typing import Any, Mapping, Sequence, Union

from erl_interop.bounded import bounded_logger
from erl_interop.terms import Atom

from ..config import ConfigError, erl_text, parse_terms

__all__ = ["DistTls", "TlsConfigError", "TlsSpec", "dist_tls", "load_optfile"]

log = bounded_logger(logging.getLogger("pynode.dist.tls"))


class TlsConfigError(ConfigError):
    """The TLS distribution options cannot be used; the message names the file and option."""


_VERSIONS = {
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}

#: options of OTP's ssl that tune its own implementation: no effect on a Python node
_IGNORED = frozenset({
    "reuse_sessions", "reuse_session", "hibernate_after", "log_level", "log_alert", "erl_dist", "handshake",
    "keep_secrets", "middlebox_comp_mode", "beast_mitigation", "padding_check", "ktls", "session_tickets",
    "anti_replay", "use_ticket", "early_data", "max_handshake_size", "receiver_spawn_opts", "sender_spawn_opts",
    "cb_info", "max_fragment_length", "secure_renegotiate", "client_renegotiation", "renegotiate_at",
})
#: options of OTP's ssl that change what is verified and have no Python equivalent
_UNSUPPORTED = frozenset({
    "verify_fun", "crl_check", "crl_cache", "partial_chain", "customize_hostname_check", "cert", "key",
    "certs_keys", "sni_fun", "sni_hosts", "psk_identity", "user_lookup_fun", "srp_identity", "signature_algs",
    "signature_algs_cert", "eccs", "supported_groups", "alpn_advertised_protocols", "alpn_preferred_protocols",
    "next_protocols_advertised", "client_preferred_next_protocols", "ocsp_stapling", "ocsp_nonce",
    "ocsp_responder_certs", "certificate_authorities", "dh", "fallback", "stateless_tickets_seed",
})
_COMMON = frozenset({"certfile", "keyfile", "password", "cacertfile", "cacerts", "verify", "versions", "ciphers", "depth"})
_SERVER_ONLY = frozenset({"fail_if_no_peer_cert", "dhfile", "honor_cipher_order"})
_CLIENT_ONLY = frozenset({"server_name_indication"})


@dataclasses.dataclass(frozen=True)
class DistTls:
    """The TLS side of a distribution node: :attr:`server` for accepted connections,
    :attr:`client` for dialled ones, and the client's name rules."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    #: the SNI (and, with ``verify_peer``, the name the server's certificate must match):
    #: ``None``: the host part of the dialled node's name (OTP's default); ``""``: none
    #: (``disable``); else this name for every peer
    server_name_indication: str | None = None
    #: ``depth`` of the server and client options: at most this many intermediate CAs in the
    #: peer's verified chain (``None``: not checked beyond OpenSSL's own limit)
    server_depth: int | None = None
    client_depth: int | None = None
    #: where the options came from, for messages
    source: str = "tls"
    #: options accepted without effect
    ignored: tuple[str, ...] = ()
    #: one line for the start-up log
    summary: str = ""

    def client_hostname(self, peer: str) -> str:
        """The ``server_hostname`` to dial ``alive@host`` with: the SNI name, ``""`` for none."""
        if self.server_name_indication is not None:
            return self.server_name_indication
        return peer.rpartition("@")[2]

    def check_peer(self, ssl_object: Any, server_side: bool) -> str | None:
        """Why the peer's verified certificate chain exceeds ``depth``, or None."""
        depth = self.server_depth if server_side else self.client_depth
        if depth is None:
            return None
        # Python 3.13 has SSLObject.get_verified_chain(); 3.11 and 3.12 have it on the
        # underlying _ssl object.
        get = getattr(ssl_object, "get_verified_chain", None) or getattr(
            getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
        if get is None:
            return None
        chain = get() or []
        intermediates = max(len(chain) - 2, 0)
        if intermediates > depth:
            return (f"the peer's certificate chain has {intermediates} intermediate CA(s), more than "
                    f"depth {depth} allows")
        return None


#: what ``Node(tls=...)`` takes: a :class:`DistTls`, the path of an ``ssl_dist_optfile``, the
#: file's term (``[(Atom("server"), [...]), (Atom("client"), [...])]``) or a mapping
#: ``{"server": {"certfile": ..., ...}, "client": {...}}``
TlsSpec = Union[DistTls, str, "os.PathLike[str]", Sequence[Any], Mapping[str, Any]]


def _where(source: str, role: str, key: str | None = None) -> str:
    return f"{source}: {{{role}, ...}}" + (f" {key}" if key else "")


def _text(value: Any, where: str) -> str:
    t = erl_text(value)
    if not t:
        raise TlsConfigError(f"{where} must be a string (a file name or text), not {value!r}")
    return t


def _word(value: Any) -> str | None:
    if isinstance(value, str):
        return str(value)
    return erl_text(value)


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise TlsConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _options(raw: Any, where: str) -> dict[str, Any]:
    """A role's options, ``[{Key, Value}]`` or a mapping, as a dict (the first occurrence of
    a key wins, as ``proplists:get_value``)."""
    items = list(raw.items()) if isinstance(raw, Mapping) else raw
    if not isinstance(items, list):
        raise TlsConfigError(f"{where} must be a list of {{Option, Value}} tuples, not {raw!r}")
    out: dict[str, Any] = {}
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TlsConfigError(f"{where}: each option is {{Option, Value}}, not {item!r}")
        out.setdefault(str(item[0]), item[1])
    return out


def _sections(spec: Any, source: str) -> dict[str, dict[str, Any] | None]:
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    elif isinstance(spec, list):
        pairs = spec
    else:
        raise TlsConfigError(f"{source}: expected [{{server, Opts}}, {{client, Opts}}], not {spec!r}")
    out: dict[str, dict[str, Any] | None] = {"server": None, "client": None}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TlsConfigError(f"{source}: expected {{server, Opts}} or {{client, Opts}}, not {pair!r}")
        role = str(pair[0])
        if role not in out:
            raise TlsConfigError(f"{source}: unknown section {role!r} (server or client)")
        if out[role] is None:
            out[role] = _options(pair[1], _where(source, role))
    return out


def _context(role: str, opts: dict[str, Any] | None, source: str, ignored: list[str]) -> tuple[ssl.SSLContext, dict[str, Any]]:
    """The context of one role, and the values the caller still needs (verify, sni, depth)."""
    server = role == "server"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if opts is None:
        # no entry for the role: ssl's own defaults (verify_none, TLS 1.2 and 1.3), and no
        # certificate: a server that has none cannot accept
        if server:
            raise TlsConfigError(f"{source}: no {{server, Opts}} entry: a node needs a certificate (certfile) to accept")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        return ctx, {"verify": "verify_none", "versions": "TLSv1.2-TLSv1.3"}
    for key in opts:
        where = _where(source, role, key)
        if key == "secure_renegotiate" and opts[key] is True:
            continue  # OpenSSL renegotiates securely (RFC 5746) anyway; TLS 1.3 has no renegotiation
        if key in _IGNORED:
            ignored.append(f"{role} {key}")
        elif key in _UNSUPPORTED:
            if key == "crl_check" and opts[key] is False:
                continue
            raise TlsConfigError(f"{where} is not supported by pynode's TLS distribution (Python's ssl module "
                                 "has no equivalent); remove it or run this node on the BEAM")
        elif key in _SERVER_ONLY and not server or key in _CLIENT_ONLY and server:
            raise TlsConfigError(f"{where} is a {'server' if key in _SERVER_ONLY else 'client'} option only")
        elif key not in _COMMON | _SERVER_ONLY | _CLIENT_ONLY:
            raise TlsConfigError(f"{where}: unknown ssl option")
    # versions: inet_tls_dist adds ['tlsv1.2'] when the entry gives none
    names = opts.get("versions", [Atom("tlsv1.2")])
    if not isinstance(names, list) or not names:
        raise TlsConfigError(f"{_where(source, role, 'versions')} must be a non-empty list such as ['tlsv1.2', 'tlsv1.3']")
    versions = []
    for n in names:
        w = _word(n)
        if w not in _VERSIONS:
            raise TlsConfigError(f"{_where(source, role, 'versions')}: unknown version {n!r} (tlsv1.2, tlsv1.3; "
                                 "also tlsv1, tlsv1.1)")
        versions.append(_VERSIONS[w])
    ctx.minimum_version, ctx.maximum_version = min(versions), max(versions)
    lo, hi = (v.name.replace("_", ".") for v in (min(versions), max(versions)))
    label = lo if lo == hi else f"{lo}-{hi}"
    # the certificate and key
    if "certfile" in opts:
        certfile = _text(opts["certfile"], _where(source, role, "certfile"))
        keyfile = _text(opts["keyfile"], _where(source, role, "keyfile")) if "keyfile" in opts else None
        password = _text(opts["password"], _where(source, role, "password")) if "password" in opts else None
        try:
            ctx.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"{_where(source, role, 'certfile')}: cannot load {certfile}"
                                 f"{' with keyfile ' + keyfile if keyfile else ''}: {e}") from None
    elif "keyfile" in opts:
        raise TlsConfigError(f"{_where(source, role, 'keyfile')} needs certfile")
    elif server:
        raise TlsConfigError(f"{_where(source, role)}: a node needs a certificate (certfile) to accept connections")
    # what peers' certificates are checked against
    has_ca = False
    if "cacertfile" in opts:
        cafile = _text(opts["cacertfile"], _where(source, role, "cacertfile"))
        try:
            ctx.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"{_where(source, role, 'cacertfile')}: cannot load {cafile}: {e}") from None
        has_ca = True
    if "cacerts" in opts:
        ders = opts["cacerts"]
        if not (isinstance(ders, list) and ders and all(isinstance(d, bytes) for d in ders)):
            raise TlsConfigError(f"{_where(source, role, 'cacerts')} must be a list of DER binaries")
        try:
            ctx.load_verify_locations(cadata=b"".join(ders))
        except ssl.SSLError as e:
            raise TlsConfigError(f"{_where(source, role, 'cacerts')}: {e}") from None
        has_ca = True
    verify = _word(opts.get("verify", Atom("verify_none")))
    if verify not in ("verify_peer", "verify_none"):
        raise TlsConfigError(f"{_where(source, role, 'verify')} must be verify_peer or verify_none, not {opts['verify']!r}")
    if verify == "verify_peer" and not has_ca:
        raise TlsConfigError(f"{_where(source, role, 'verify')} verify_peer needs cacertfile: the CA certificates "
                             "that peers' certificates must chain to")
    fail = _bool(opts["fail_if_no_peer_cert"], _where(source, role, "fail_if_no_peer_cert")) if "fail_if_no_peer_cert" in opts else False
    if fail and verify != "verify_peer":
        raise TlsConfigError(f"{_where(source, role, 'fail_if_no_peer_cert')} true needs {{verify, verify_peer}}")
    sni: str | None = None
    if "server_name_indication" in opts:
        v = opts["server_name_indication"]
        if v is False or v is None or v == "disable":
            sni = ""
        else:
            sni = _text(v, _where(source, role, "server_name_indication"))
    if server:
        ctx.verify_mode = (ssl.CERT_REQUIRED if fail else ssl.CERT_OPTIONAL) if verify == "verify_peer" else ssl.CERT_NONE
    else:
        ctx.check_hostname = verify == "verify_peer" and sni != ""
        ctx.verify_mode = ssl.CERT_REQUIRED if verify == "verify_peer" else ssl.CERT_NONE
    if "ciphers" in opts:
        c = opts["ciphers"]
        if isinstance(c, list) and c and not all(type(x) is int for x in c):  # a list of suite names
            names_ = [erl_text(x) for x in c]
            text = ":".join(n for n in names_ if n) if all(names_) else None
        else:
            text = erl_text(c)
        if not text:
            raise TlsConfigError(f"{_where(source, role, 'ciphers')} must be an OpenSSL cipher string or a list of "
                                 "cipher suite names (cipher maps are not supported)")
        try:
            ctx.set_ciphers(text)
        except ssl.SSLError as e:
            raise TlsConfigError(f"{_where(source, role, 'ciphers')}: {e}") from None
    if "dhfile" in opts:
        dh = _text(opts["dhfile"], _where(source, role, "dhfile"))
        try:
            ctx.load_dh_params(dh)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"{_where(source, role, 'dhfile')}: cannot load {dh}: {e}") from None
    if "honor_cipher_order" in opts and _bool(opts["honor_cipher_order"], _where(source, role, "honor_cipher_order")):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    depth: int | None = None
    if "depth" in opts:
        depth = opts["depth"]
        if type(depth) is not int or depth < 0:
            raise TlsConfigError(f"{_where(source, role, 'depth')} must be a non-negative integer, not {depth!r}")
    return ctx, {"verify": verify, "fail": fail, "sni": sni, "depth": depth, "versions": label}


def _from_sections(sections: dict[str, dict[str, Any] | None], source: str) -> DistTls:
    ignored: list[str] = []
    server, s = _context("server", sections["server"], source, ignored)
    client, c = _context("client", sections["client"], source, ignored)
    sni = c.get("sni")
    if c["verify"] == "verify_none":
        log.warning("%s: client verify_none (OTP's default): the certificates of the nodes this node dials are "
                    "not checked; set {verify, verify_peer} and cacertfile in {client, ...}", source)
    if ignored:
        log.info("%s: ssl options without effect on a Python node, ignored: %s", source, ", ".join(ignored))
    summary = (f"server {s['verify']}{' fail_if_no_peer_cert' if s.get('fail') else ''} {s['versions']}, "
               f"client {c['verify']} {c['versions']}"
               + (", no SNI" if sni == "" else f", SNI {sni}" if sni else ""))
    return DistTls(server, client, sni, s.get("depth"), c.get("depth"), source, tuple(ignored), summary)


def load_optfile(path: str | os.PathLike[str], client_overrides: Sequence[tuple[Any, Any]] = ()) -> DistTls:
    """Read an ``ssl_dist_optfile`` (``erl -ssl_dist_optfile``: one Erlang term,
    ``[{server, Opts}, {client, Opts}].``); raise :class:`TlsConfigError` naming the file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise TlsConfigError(f"ssl_dist_optfile {name}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # ssl_dist_sup reads the file as Latin-1 unless it says otherwise
    try:
        terms = parse_terms(text)
    except ConfigError as e:
        raise TlsConfigError(f"ssl_dist_optfile {name}: {e}") from None
    if len(terms) != 1:
        raise TlsConfigError(f"ssl_dist_optfile {name}: expected one term, [{{server, Opts}}, {{client, Opts}}].")
    return _build(terms[0], f"ssl_dist_optfile {name}", client_overrides)


def _build(spec: Any, source: str, client_overrides: Sequence[tuple[Any, Any]]) -> DistTls:
    sections = _sections(spec, source)
    if client_overrides:
        # inet_tls_dist: lists:ukeysort(1, ConnectOptions ++ ClientOptions): the kernel's
        # inet_dist_connect_options win over the file's client options
        over: dict[str, Any] = {}
        for key, value in client_overrides:
            over.setdefault(str(key), value)
        sections["client"] = {**(sections["client"] or {}), **over}
    return _from_sections(sections, source)


def dist_tls(spec: Any, client_overrides: Sequence[tuple[Any, Any]] = (), source: str | None = None) -> DistTls:
    """A :class:`DistTls` from what ``Node(tls=...)`` takes (:data:`TlsSpec`).
    ``client_overrides``: ssl options from the kernel's ``inet_dist_connect_options``, which
    win over the client options (as in ``inet_tls_dist``)."""
    if isinstance(spec, DistTls):
        if client_overrides:
            raise TlsConfigError("inet_dist_connect_options holds ssl options, but the TLS settings were given "
                                 "as a ready DistTls: put them in its client options")
        return spec
    if isinstance(spec, (str, os.PathLike)) and not isinstance(spec, Atom):
        return load_optfile(spec, client_overrides)
    return _build(spec, source or "tls", client_overrides)
