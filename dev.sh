#!/usr/bin/env bash
# pynode developer entry point. Safe to run any number of times.
#   ./dev.sh node [pynode options]   start a Python node (installs the venv first)
#   ./dev.sh test [pytest options]   install Erlang/Elixir + the venv, then run every test on
#                                    OTP 25, and the interop tests on OTP 27 and 29 (chroots)
#   ./dev.sh test-otp SUITE [pytest options]   the interop tests and mix_compat's ExUnit on one
#                                    other OTP release (trixie: OTP 27, sid: OTP 29, or a chroot)
#   ./dev.sh otp-root SUITE          build (once; cached) that release's chroot and print its path
#   ./dev.sh bench                   run the benchmarks in bench/
#   ./dev.sh docs [DIR]              the Python API reference (pdoc) into DIR (default build/api)
set -euo pipefail
cd "$(dirname "$0")"
SELF="$(pwd -P)/$(basename "$0")"
VENV="${PYNODE_VENV:-.venv}"
PY="${PYTHON:-python3}"

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_debs() {  # $@: Debian packages; apt-get installs those missing (one dpkg query when none is)
  local have missing=() p
  if ! command -v dpkg-query >/dev/null; then return; fi
  # (dpkg-query fails when one of them is unknown to dpkg: that is a missing one)
  have=" $({ dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' "$@" 2>/dev/null || true; } | sed -n 's/^ii *|//p' | tr '\n' ' ') "
  for p in "$@"; do
    case "$p" in  # a BEAM installed otherwise (kerl, asdf, from source) is on PATH: it will do
      erlang-nox) command -v erl >/dev/null && continue ;;
      elixir) command -v elixir >/dev/null && continue ;;
    esac
    [[ "$have" == *" $p "* ]] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "== installing ${missing[*]} with apt-get" >&2
  need_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# erl and elixir for the peers; javac and OtpErlang.jar for the JInterface peers of the tests;
# a headless browser and its WebDriver for the operator's page test (tests/test_web.py).
ensure_beam() { ensure_debs erlang-nox elixir default-jdk-headless erlang-jinterface chromium chromium-driver; }

# -- OTP releases other than the host's --------------------------------------------------------
# Debian chroots with a newer suite's erlang-nox and elixir (trixie: OTP 27 / Elixir 1.18,
# sid: OTP 29 / Elixir 1.20), built once with debootstrap and kept in $OTP_CACHE/otp-<suite>
# (outside the checkout: a fresh clone reuses them). A chroot is built in a scratch directory
# beside it and renamed into place only after erl and elixir ran in it, with its stamp file
# written last: a run interrupted at any point leaves no directory that looks complete, and the
# scratch is removed by the next build. Everything mounted while building is mounted in a mount
# namespace of its own (unshare), so it ends with the build and never shows on the host.
# pynode.testing runs the release's programs from the chroot (PYNODE_OTP_ROOT=<chroot>).
OTP_CACHE="${PYNODE_OTP_CACHE:-/var/cache/pynode}"
DEBIAN_MIRROR="${PYNODE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
OTP_SUITES="${PYNODE_OTP_SUITES-trixie sid}"
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o DPkg::Lock::Timeout=600)  # sid's Release is past Valid-Until on the mirror

# (git: mix fetches git dependencies with it, tests/test_elixir_library.py; a chroot built
# without it is built again)
otp_complete() { [ -s "$1/.pynode-otp" ] && [ -x "$1/usr/bin/erl" ] && [ -x "$1/usr/bin/elixir" ] && [ -x "$1/usr/bin/git" ]; }

remove_tree() {  # a chroot, with anything still mounted under it unmounted first (never crossed)
  [ -e "$1" ] || return 0
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf --one-file-system "$1"
}

build_otp() {  # $1: Debian suite; prints the chroot's path. As root.
  local suite=$1 dir="$OTP_CACHE/otp-$1" tmp="$OTP_CACHE/.otp-$1.building" log="$OTP_CACHE/otp-$1.log" t0=$SECONDS
  mkdir -p "$OTP_CACHE"
  exec 9>"$OTP_CACHE/.otp-$suite.lock"
  flock 9  # one build at a time per suite; a second run waits and then finds it built
  if otp_complete "$dir"; then echo "$dir"; return; fi
  remove_tree "$dir"; remove_tree "$tmp"
  ensure_debs debootstrap
  echo "== building $dir: debootstrap --variant=minbase $suite, then erlang-nox and elixir (log: $log)" >&2
  if ! unshare --mount --propagation private -- bash -euc '
      tmp=$1 suite=$2 mirror=$3; shift 3
      debootstrap --variant=minbase "$suite" "$tmp" "$mirror"
      mount --bind /dev "$tmp/dev"; mount -t proc proc "$tmp/proc"
      run_in() { chroot "$tmp" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
      run_in apt-get "$@" update
      run_in apt-get "$@" install -y --no-install-recommends erlang-nox elixir git ca-certificates
      run_in apt-get clean
      otp=$(run_in erl -noshell -eval "{ok, V} = file:read_file(filename:join([code:root_dir(), \"releases\", erlang:system_info(otp_release), \"OTP_VERSION\"])), io:put_chars(string:trim(V)), halt().")
      ex=$(run_in elixir -e "IO.write(System.version())")
      echo "suite=$suite otp=$otp elixir=$ex built=$(date -u +%FT%TZ)" > "$tmp/.pynode-otp"
    ' build-otp "$tmp" "$suite" "$DEBIAN_MIRROR" "${APT_OPTS[@]}" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    remove_tree "$tmp"
    echo "== building the $suite chroot failed (log: $log)" >&2
    return 1
  fi
  mv -T "$tmp" "$dir"
  echo "== $dir: $(cat "$dir/.pynode-otp") (built in $((SECONDS - t0)) s)" >&2
  echo "$dir"
}

ensure_otp() {  # $1: Debian suite; prints the cached chroot's path (building it when missing)
  local dir="$OTP_CACHE/otp-$1"
  if otp_complete "$dir"; then echo "$dir"; return; fi
  # A process of its own: `set -e` holds there, whatever context this function is called in.
  if [ "$(id -u)" -eq 0 ]; then "$SELF" otp-root "$1"; else sudo "$SELF" otp-root "$1"; fi
}

otp_label() { sed -E 's/.*otp=([^ ]*) elixir=([^ ]*).*/OTP \1, Elixir \2/' "$1/.pynode-otp"; }

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
    # the distribution was called pynode before it became pynode-erlang: two editable
    # installs of one tree would register the pytest plugin twice
    if "$VENV/bin/python" -m pip show -q pynode >/dev/null 2>&1; then
      "$VENV/bin/python" -m pip uninstall -q -y pynode
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
    echo "$sum" > "$stamp"
  fi
}

# -- the test command: timed phases; a failing phase does not keep the later ones from running --
T0=$SECONDS RESULTS=() FAILED=0 NARGS=0 OTP_ROOTS=()
phase() {  # $1: title; the rest: the command
  local title=$1 t0=$SECONDS rc=0; shift
  echo "== $title" >&2
  "$@" || rc=$?
  # pytest's 5 is "no tests selected": fine when the options given select none of a phase's tests
  if [ "$rc" -eq 5 ] && [ "$NARGS" -gt 0 ]; then rc=0; fi
  RESULTS+=("$(printf '%5d s  %s' $((SECONDS - t0)) "$title")$([ "$rc" -eq 0 ] || echo "   FAILED (exit $rc)")")
  [ "$rc" -eq 0 ] || FAILED=1
}
note() { RESULTS+=("$(printf '%5d s  %s' $(($SECONDS - $1)) "$2")"); }  # $1: start (SECONDS); $2: what
summary() {
  echo "== summary" >&2; printf '%s\n' "${RESULTS[@]}" >&2
  echo "$(printf '%5d s' $((SECONDS - T0)))  in all$([ "$FAILED" -eq 0 ] || echo ", with failures")" >&2
  return "$FAILED"
}
prepare_otp() {  # $@: suites, or chroot paths; fills OTP_ROOTS
  local s root rc=0
  for s in "$@"; do
    if [ -d "$s" ]; then OTP_ROOTS+=("$(cd "$s" && pwd -P)"); continue; fi
    if root=$(ensure_otp "$s"); then OTP_ROOTS+=("$root"); else rc=1; fi
  done
  return "$rc"
}
mix_test() {  # $1: a chroot, or nothing for the host's Elixir. The library (elixir/), then the
  # seed application on top of it (mix_compat/); both run, the status is the first failure's.
  local py="$VENV/bin/python" dir rc=0 s
  [[ "$py" == /* ]] || py="$ROOT_DIR/$py"
  for dir in elixir mix_compat; do
    [ -f "$dir/mix.exs" ] || continue
    echo "== ExUnit in $dir/" >&2
    if [ -z "${1:-}" ]; then
      (cd "$dir" && MIX_ENV=test mix test) || { s=$?; [ "$rc" -ne 0 ] || rc=$s; }
    else
      # pynode.testing runs mix from the chroot, building into $dir/_build/otp<N>/
      (cd "$dir" && MIX_ENV=test PYNODE_OTP_ROOT="$1" "$py" -m pynode.testing mix test) || { s=$?; [ "$rc" -ne 0 ] || rc=$s; }
    fi
  done
  return "$rc"
}
release_phases() {  # the interop tests and mix_compat's ExUnit on each of OTP_ROOTS
  local root label
  for root in ${OTP_ROOTS[@]+"${OTP_ROOTS[@]}"}; do
    label=$(otp_label "$root")
    phase "interop tests (-m interop) on $label ($root)" \
      env PYNODE_OTP_ROOT="$root" "$VENV/bin/python" -m pytest -n 2 -m interop "$@"
    phase "ExUnit (elixir/, mix_compat/) on $label" mix_test "$root"
  done
}
ROOT_DIR=$(pwd -P)

cmd="${1:-help}"; shift || true
NARGS=$#
case "$cmd" in
  node)
    ensure_venv "test,bench"  # the same install as the test command (one stamp)
    exec "$VENV/bin/python" -m pynode "$@" ;;
  test)
    t=$SECONDS; ensure_beam; ensure_venv "test,bench"; note "$t" "Debian packages and the venv"
    # shellcheck disable=SC2086  # the suites are words
    phase "OTP chroots (${OTP_SUITES:-none}; built once into $OTP_CACHE)" prepare_otp $OTP_SUITES
    phase "the suite on OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().' 2>/dev/null) (host)" \
      "$VENV/bin/python" -m pytest -n 2 "$@"
    # Once more on the pure-Python codec: what a user gets when the optional C accelerator
    # does not build (erl_interop/codec.py, ERL_INTEROP_PURE).
    phase "the suite again on the pure-Python codec (ERL_INTEROP_PURE=1)" \
      env ERL_INTEROP_PURE=1 "$VENV/bin/python" -m pytest -n 2 "$@"
    phase "ExUnit (elixir/, mix_compat/) on the host's Elixir" mix_test
    release_phases "$@"
    summary ;;
  test-otp)  # ./dev.sh test-otp SUITE|CHROOT [pytest options]: one release only
    [ $# -ge 1 ] || { sed -n '2,10p' "$SELF"; exit 2; }
    s=$1; shift; NARGS=$#
    t=$SECONDS; ensure_beam; ensure_venv "test,bench"; note "$t" "Debian packages and the venv"
    phase "OTP chroot ($s)" prepare_otp "$s"
    release_phases "$@"
    summary ;;
  otp-root)  # ./dev.sh otp-root SUITE: the chroot's path (built when missing)
    [ $# -eq 1 ] || { sed -n '2,10p' "$SELF"; exit 2; }
    if [ "$(id -u)" -eq 0 ]; then build_otp "$1"; else sudo "$SELF" otp-root "$1"; fi ;;
  bench)
    ensure_beam
    ensure_venv "test,bench"
    for b in bench/*_bench.py; do "$VENV/bin/python" "$b" "$@"; done ;;
  docs)  # warnings are errors (scripts/api_docs.py); tests/test_packaging.py builds it too
    ensure_venv "test,bench"  # the same install as the test command (one stamp)
    "$VENV/bin/python" scripts/api_docs.py "${1:-build/api}" ;;
  *)
    sed -n '2,10p' "$SELF"; exit 2 ;;
esac
