"""What every subcommand shares: the cookie ``erl`` would use, and one logging and event
loop set-up (uvloop when installed)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any, Callable, Coroutine

__all__ = ["default_cookie", "run_main", "LOG_FORMAT"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

uvloop: Any
try:
    import uvloop  # type: ignore[import-not-found, no-redef, unused-ignore]
except ImportError:  # optional: the standard event loop then
    uvloop = None


def default_cookie() -> str:
    """The cookie ``erl`` would use: ``~/.erlang.cookie``, created (20 random capital letters,
    mode 0400) when it does not exist, as ``erl`` does."""
    path = Path.home() / ".erlang.cookie"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(cookie)
        return cookie


def run_main(fn: Callable[[Any], Coroutine[Any, Any, int]], args: Any) -> int:
    """Set up logging at ``args.log_level`` and run ``await fn(args)`` on a fresh loop."""
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    if uvloop is not None:
        return int(uvloop.run(fn(args)))
    return asyncio.run(fn(args))
