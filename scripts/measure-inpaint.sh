#!/usr/bin/env bash
# Score the annotation detector of `prep inpaint` against ground-truth boxes of real films:
# recall per mark class (text, marker, arrow), the share of device and border pixels the mask
# touches, the share of films without marks that get any mask; each beside its issue-#12
# target. The rules are in docs/inpaint.md ("Measuring the detector").
#
#   scripts/measure-inpaint.sh --annotations CSV --root DIR [--films LIST] [--worst N]
#   scripts/measure-inpaint.sh        # the committed boxes on ../shared/data
#
# CSV: `image,x0,y0,x1,y1,class`, image relative to DIR, x0,y0 inclusive, x1,y1 exclusive.
# Every image under DIR is measured (a film without boxes is a film without marks), or only
# those listed in LIST. Environment: PREP_BIN=path/to/prep (else built here, release, without
# libtorch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- --annotations tests/fixtures/real-annotations.csv --root ../shared/data --worst 10
fi
if [ -z "${PREP_BIN:-}" ]; then
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build -q --release --no-default-features
  PREP_BIN=target/release/prep
fi
echo "# prep inpaint --annotations — $(date -u '+%Y-%m-%d %H:%M UTC') — $("$PREP_BIN" --version)"
echo "# $PREP_BIN inpaint $*"
exec "$PREP_BIN" inpaint "$@"
