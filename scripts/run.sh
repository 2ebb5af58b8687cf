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
# the exact versions of requirements/run.lock (test.lock's, which hold them too, also do)
bash scripts/sync_venv.sh requirements/run.lock requirements/test.lock
exec .venv/bin/postway serve "$@"
