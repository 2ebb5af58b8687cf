#!/usr/bin/env bash
# Brings .venv to a lock file, as scripts/run.sh, scripts/test.sh and `make install` do:
#   bash scripts/sync_venv.sh [--exact] LOCK [ALSO_GOOD_LOCK...]
# Installs the lock's pinned files, each checked against its hash (pip --require-hashes), then
# Postway itself (editable; --no-deps: its dependencies are all in the lock, and
# --no-build-isolation: the build backend is the lock's setuptools). Does nothing when .venv
# was last brought to this very lock and pyproject.toml (their sha256 are kept in .venv), or to
# one of the ALSO_GOOD locks, so a changed lock re-syncs on the next run. --exact also removes
# packages the lock does not name (left from an older lock).
set -euo pipefail
cd "$(dirname "$0")/.."
exact=0
if [ "${1:-}" = --exact ]; then exact=1; shift; fi
lock=$1
stamp=.venv/postway-lock.sha256
stamp_of() { echo "$(sha256sum "$1" | cut -d' ' -f1) $(sha256sum pyproject.toml | cut -d' ' -f1) $1"; }
if [ -x .venv/bin/postway ] && [ -f "$stamp" ]; then
  for good in "$@"; do
    if [ "$(cat "$stamp")" = "$(stamp_of "$good")" ]; then exit 0; fi
  done
fi
echo "installing Python packages from $lock into .venv"
if [ ! -x .venv/bin/python ]; then "${PY:-python3}" -m venv .venv; fi
rm -f "$stamp"
.venv/bin/pip install -q --require-hashes -r "$lock"
if [ $exact = 1 ]; then
  # what is installed but not named in the lock (nor Postway itself)
  extra=$(.venv/bin/python - "$lock" <<'PY'
import re
import sys
from importlib.metadata import distributions

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

with open(sys.argv[1]) as f:
    locked = {norm(m[1]) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", f.read(), re.M)}
names = {norm(d.metadata["Name"]) for d in distributions() if d.metadata["Name"]}
print(" ".join(sorted(names - locked - {"postway"})))
PY
)
  if [ -n "$extra" ]; then
    echo "removing packages the lock does not name: $extra"
    # shellcheck disable=SC2086
    .venv/bin/pip uninstall -q -y $extra
  fi
fi
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
stamp_of "$lock" > "$stamp"
