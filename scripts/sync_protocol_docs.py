"""Copy docs/*_PROTOCOL.md into the modules that must repeat them verbatim.

    python scripts/sync_protocol_docs.py          # rewrite the embedded copies
    python scripts/sync_protocol_docs.py --check  # exit 1 if any copy is stale

The tests (tests/test_registry_unit.py, elixir/test/protocol_doc_test.exs) fail when
a copy drifts; this script is how a change to a protocol document reaches the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (document, file, prefix put before each line of the copy)
TARGETS = [
    ("docs/REGISTRY_PROTOCOL.md", "pynode/registry/protocol.py", ""),
    ("docs/REGISTRY_PROTOCOL.md", "elixir/lib/pynode/registry_impl.ex", "  #"),
    ("docs/JOBS_PROTOCOL.md", "elixir/lib/pynode/jobs/host.ex", "  #"),
    ("docs/JOBS_PROTOCOL.md", "pynode/jobs/protocol.py", ""),
]


def embed(doc: str, text: str, name: str, prefix: str) -> str:
    begin = f"{prefix} --- BEGIN {name} ---\n" if prefix else f"--- BEGIN {name} ---\n"
    end = f"\n{prefix} --- END {name} ---" if prefix else f"\n--- END {name} ---"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    lines = doc.rstrip("\n").split("\n")
    if prefix:
        body = "\n".join(f"{prefix} {line}" if line else prefix for line in lines)
    else:
        body = "\n".join(lines)
    return head + begin + body + end + tail


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for doc_path, target, prefix in TARGETS:
        doc = (ROOT / doc_path).read_text()
        path = ROOT / target
        old = path.read_text()
        new = embed(doc, old, doc_path, prefix)
        if new != old:
            stale.append(target)
            if not check:
                path.write_text(new)
    if stale:
        print(("stale: " if check else "updated: ") + ", ".join(stale))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
