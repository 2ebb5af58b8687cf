#!/usr/bin/env bash
# Remakes the lock files from pyproject.toml with pip-compile (pip-tools), every file's hash
# included:
#   requirements/test.lock  runtime, the `test` extra, pip and setuptools (scripts/test.sh)
#   requirements/run.lock   runtime only, at the same versions as test.lock   (scripts/run.sh)
# Pins already in test.lock are kept while pyproject.toml allows them, so after an edit of
# pyproject.toml only what it touched moves. To take newer releases:
#   bash scripts/lock.sh --upgrade                     # everything
#   bash scripts/lock.sh --upgrade-package httpx       # one package (the option repeats)
# pip-tools runs from a venv of its own ($LOCK_VENV), never from .venv. It resolves through
# this machine's pip configuration, so the hashes are those of the files pip will download.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${LOCK_VENV:-${TMPDIR:-/tmp}/postway-lock-venv}
if [ ! -x "$tools/bin/pip-compile" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --upgrade 'pip==26.3' 'pip-tools==7.6.2'
fi
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"  # the header the locks carry
compile=("$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras
         --no-emit-index-url --no-emit-find-links)
"${compile[@]}" "$@" --extra test -o requirements/test.lock pyproject.toml requirements/tools.in
# run.lock: constrained to test.lock, so `postway serve` runs exactly the tested versions
"${compile[@]}" -c requirements/test.lock -o requirements/run.lock \
  pyproject.toml requirements/tools.in
echo "requirements/test.lock: $(grep -c '==' requirements/test.lock) packages," \
     "requirements/run.lock: $(grep -c '==' requirements/run.lock)"
