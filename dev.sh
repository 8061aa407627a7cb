#!/usr/bin/env bash
# pynode developer entry point. Safe to run any number of times.
#   ./dev.sh node [pynode options]   start a Python node (installs the venv first)
#   ./dev.sh test [pytest options]   install Erlang/Elixir + the venv, then run every test
#   ./dev.sh bench                   run the benchmarks in bench/
set -euo pipefail
cd "$(dirname "$0")"
VENV="${PYNODE_VENV:-.venv}"
PY="${PYTHON:-python3}"

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_beam() {
  if command -v erl >/dev/null && command -v elixir >/dev/null; then return; fi
  echo "== installing erlang-nox and elixir with apt-get" >&2
  need_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq erlang-nox elixir >/dev/null
}

ensure_venv() {  # $1: pip extras
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV" >&2
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
      # Debian/Ubuntu ship venv and ensurepip separately from python3.
      rm -rf "$VENV"
      echo "== installing python3-venv with apt-get" >&2
      need_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv "$VENV"
    fi
  fi
  local stamp="$VENV/.installed-$1" sum
  sum=$(cat pyproject.toml | md5sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    echo "== installing Python dependencies ($1)" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
    echo "$sum" > "$stamp"
  fi
}

cmd="${1:-help}"; shift || true
case "$cmd" in
  node)
    ensure_venv test
    exec "$VENV/bin/python" -m pynode "$@" ;;
  test)
    ensure_beam
    ensure_venv "test,bench"
    "$VENV/bin/python" -m pytest -n 2 "$@"
    # Once more on the pure-Python codec: what a user gets when the optional C accelerator
    # does not build (erl_interop/codec.py, ERL_INTEROP_PURE).
    echo "== the suite again on the pure-Python codec (ERL_INTEROP_PURE=1)" >&2
    ERL_INTEROP_PURE=1 "$VENV/bin/python" -m pytest -n 2 "$@"
    if [ -d mix_compat ] && [ -f mix_compat/mix.exs ]; then
      (cd mix_compat && MIX_ENV=test mix test)
    fi ;;
  bench)
    ensure_beam
    ensure_venv "test,bench"
    for b in bench/*_bench.py; do "$VENV/bin/python" "$b" "$@"; done ;;
  *)
    sed -n '2,5p' "$0"; exit 2 ;;
esac
