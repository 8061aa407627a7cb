"""The command line: the ``pynode`` console script and ``python -m pynode`` (the same
program): one parser with subcommands, one set of connection flags shared by all of them, and
one logging and event loop set-up (:mod:`pynode.cli.common`).

- ``node`` (the default: ``pynode --sname n1@localhost --cookie test``) runs a node until
  SIGINT/SIGTERM (:mod:`pynode.cli.node`);
- ``ping NODE``, ``rpc NODE MOD FUN [ARGS]`` and ``members --node NODE`` ask the cluster as
  ``net_adm:ping``, ``rpc:call`` and the registry would (:mod:`pynode.cli.client`);
- ``run_job N`` is the seed's job check and ``jobs --node NODE`` lists every job
  (:mod:`pynode.cli.jobs`).

Every command takes ``--sname``/``--name``, ``--cookie``, ``--epmd-port``, ``--config``,
``--proto-dist``/``--ssl-dist-optfile`` and ``--log-level`` alike; the client commands make
up a unique node name when given none.

Imports :mod:`pynode.node` and the layers below it.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from typing import Sequence

from . import client, jobs, node
from .common import codec_note, default_cookie, run_main

__all__ = ["main", "parser", "default_cookie", "SUBCOMMANDS", "DISTRIBUTION", "prog_name"]

SUBCOMMANDS = ("node", "ping", "rpc", "members", "jobs", "run_job")

#: the name on PyPI (the import names are ``pynode`` and ``erl_interop``)
DISTRIBUTION = "pynode-erlang"


def prog_name() -> str:
    """``pynode`` for the console script, ``python -m pynode`` when run that way."""
    return "python -m pynode" if os.path.basename(sys.argv[0]) == "__main__.py" else "pynode"


def _version() -> str:
    try:
        v = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        v = "(not installed)"
    note = codec_note()
    return f"{DISTRIBUTION} {v}; codec: " + ("C accelerator" if note is None else note)


class _VersionAction(argparse.Action):
    """``--version``: the line as it is (argparse's own action would wrap it)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=str(kw.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(_version())
        parser.exit()


def parser() -> argparse.ArgumentParser:
    prog = prog_name()
    p = argparse.ArgumentParser(
        prog=prog,
        description="pynode: a Python node in an Erlang/Elixir cluster. Without a command, "
        f"'{prog} --sname n1 ...' is '{prog} node --sname n1 ...'.",
        epilog=f"'{prog} COMMAND --help' tells each command's options. Every command takes the same "
        "connection flags, as erl takes them: --sname NAME[@HOST] or --name NAME@HOST, --cookie (default "
        "~/.erlang.cookie), --epmd-port, --config sys.config, --proto-dist inet_tls --ssl-dist-optfile FILE, "
        "--log-level.",
    )
    p.add_argument("--version", action=_VersionAction, help="show the version and which codec runs, and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    node.add_parser(sub, prog)
    client.add_parsers(sub, prog)
    jobs.add_parsers(sub, prog)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``pynode [node|ping|rpc|members|jobs|run_job] ...``; without a command, ``node``."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or (args_in[0] not in SUBCOMMANDS and args_in[0] not in ("-h", "--help", "--version")):
        args_in = ["node", *args_in]
    args = parser().parse_args(args_in)
    return run_main(args.func, args)
