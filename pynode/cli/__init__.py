"""The command line, ``python -m pynode``: one parser with subcommands and one logging and
event loop set-up (:mod:`pynode.cli.common`).

- ``node`` (the default: ``python -m pynode --sname n1@localhost --cookie test``) runs a node
  until SIGINT/SIGTERM (:mod:`pynode.cli.node`);
- ``run_job N`` is the seed's job check and ``jobs --node NODE`` lists every job
  (:mod:`pynode.cli.jobs`).

Imports :mod:`pynode.node` and the layers below it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import jobs, node
from .common import default_cookie, run_main

__all__ = ["main", "parser", "default_cookie", "SUBCOMMANDS"]

SUBCOMMANDS = ("node", "run_job", "jobs")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pynode", description="pynode: a Python node in an Erlang/Elixir cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    node.add_parser(sub)
    jobs.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pynode [node|run_job|jobs] ...``; without a subcommand, ``node``."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] not in SUBCOMMANDS:
        args_in = ["node", *args_in]
    args = parser().parse_args(args_in)
    return run_main(args.func, args)
