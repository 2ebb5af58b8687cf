#!/usr/bin/env bash
# Installs Postway into .venv on a fresh Debian machine and starts it on the embedded default
# (one process, SQLite in ./postway-data). Extra arguments go to `postway serve` (e.g. --demo).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $( [ "$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
  $( [ "$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x .venv/bin/postway ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
fi
exec .venv/bin/postway serve "$@"
