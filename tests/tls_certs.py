"""Certificates for the TLS distribution tests and bench/tls_bench.py, made at run time with
Debian's ``openssl`` command (nothing is checked in).

:func:`make_pki` builds, in one directory: a CA (``ca.pem``), a node certificate it signs
(``node.pem``/``node.key``, valid for ``localhost``, ``127.0.0.1`` and this host's name, for
both TLS server and client use), one that has expired (signed by the same CA with ``openssl ca
-startdate/-enddate``), one signed by another CA that nobody trusts, and one signed by an
intermediate CA (for ``depth``). :func:`optfile` writes an ``ssl_dist_optfile`` for them, the
file ``erl -ssl_dist_optfile`` and ``python -m pynode --ssl-dist-optfile`` both read.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki", "optfile", "erl_tls_args"]

_CA_CNF = """\
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
"""

_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {san}
"""

_CA_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
"""


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    node_cert: Path
    node_key: Path
    expired_cert: Path
    expired_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path
    deep_cert: Path  # leaf + intermediate, signed by the intermediate under ``ca``
    deep_key: Path
    wrongname_cert: Path  # signed by ``ca``, valid for wrong.example only (not localhost)
    wrongname_key: Path


def _run(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def _key_args(key: str) -> list[str]:
    return ["-newkey", "rsa:2048"] if key == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def _ca(d: Path, name: str, key: str) -> tuple[Path, Path]:
    (d / f"{name}.ext").write_text(_CA_EXT)
    _run("req", "-x509", *_key_args(key), "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "30",
         "-subj", f"/CN=pynode test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def _leaf(d: Path, name: str, ca: str, key: str, ext: str = "leaf.ext") -> tuple[Path, Path]:
    _run("req", *_key_args(key), "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-out", f"{name}.pem", "-days", "30", "-extfile", ext, cwd=d)
    return d / f"{name}.pem", d / f"{name}.key"


def make_pki(d: Path, key: str = "ec") -> Pki:
    """Make every certificate in ``d`` (``key``: ``ec`` for P-256, ``rsa`` for RSA 2048)."""
    d.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    san = f"DNS:localhost, IP:127.0.0.1, DNS:{host}, DNS:{host.split('.')[0]}"
    (d / "leaf.ext").write_text(_LEAF_EXT.format(san=san))
    ca, _ = _ca(d, "ca", key)
    node_cert, node_key = _leaf(d, "node", "ca", key)
    rogue_ca, _ = _ca(d, "rogue_ca", key)
    rogue_cert, rogue_key = _leaf(d, "rogue", "rogue_ca", key)
    # expired: a validity that ended long ago, which `openssl x509` cannot give but `openssl ca` can
    (d / "newcerts").mkdir(exist_ok=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(_CA_CNF.format(dir=d))
    _run("req", *_key_args(key), "-nodes", "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired", cwd=d)
    _run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "expired.csr",
         "-out", "expired.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", "leaf.ext",
         "-notext", cwd=d)
    # a chain one intermediate deep: ca -> inter -> deep (the file holds deep and inter)
    (d / "inter.ext").write_text(_CA_EXT)
    _run("req", *_key_args(key), "-nodes", "-keyout", "inter.key", "-out", "inter.csr", "-subj", "/CN=pynode test inter",
         cwd=d)
    _run("x509", "-req", "-in", "inter.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "inter.pem",
         "-days", "30", "-extfile", "inter.ext", cwd=d)
    leaf, deep_key = _leaf(d, "deep", "inter", key)
    deep_cert = d / "deep_chain.pem"
    deep_cert.write_text(leaf.read_text() + (d / "inter.pem").read_text())
    (d / "wrong.ext").write_text(_LEAF_EXT.format(san="DNS:wrong.example"))
    wrong_cert, wrong_key = _leaf(d, "wrongname", "ca", key, ext="wrong.ext")
    return Pki(d, ca, node_cert, node_key, d / "expired.pem", d / "expired.key", rogue_ca, rogue_cert, rogue_key,
               deep_cert, deep_key, wrong_cert, wrong_key)


def _erl_str(p: Path | str) -> str:
    return '"' + str(p).replace("\\", "\\\\").replace('"', '\\"') + '"'


def optfile(path: Path, cert: Path, key: Path, cacert: Path, *, verify: str = "verify_peer", fail_if_no_peer_cert: bool = True,
            server_extra: str = "", client_extra: str = "") -> Path:
    """Write an ``ssl_dist_optfile`` using ``cert``/``key`` on both sides, trusting ``cacert``;
    ``*_extra``: more options, Erlang text (``{versions, ['tlsv1.3']}``)."""
    common = f"{{certfile, {_erl_str(cert)}}}, {{keyfile, {_erl_str(key)}}}, {{cacertfile, {_erl_str(cacert)}}}, {{verify, {verify}}}"
    server = common + (f", {{fail_if_no_peer_cert, {str(fail_if_no_peer_cert).lower()}}}" if verify == "verify_peer" else "")
    server += f", {server_extra}" if server_extra else ""
    client = common + (f", {client_extra}" if client_extra else "")
    path.write_text(f"%% made by tests/tls_certs.py\n[{{server, [{server}]}},\n {{client, [{client}]}}].\n")
    return path


def erl_tls_args(opt: Path) -> list[str]:
    """The ``erl`` arguments of a TLS distribution node using ``opt``."""
    return ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(opt)]
