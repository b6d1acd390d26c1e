#!/usr/bin/env bash
# Python tools the test suite checks prep's outputs with (BagIt and Croissant validators),
# in a git-ignored virtual environment .venv/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REQS="bagit==1.9.0 mlcroissant==1.1.1"
stamp=.venv/.prep-reqs
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$REQS" ]; then
  exit 0
fi
"$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check $REQS
echo "$REQS" > "$stamp"
echo "python tools ready in .venv ($REQS)"
