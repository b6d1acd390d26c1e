#!/usr/bin/env bash
# Benchmark prep split's near-duplicate search at scale. Prints the time of each phase per size,
# the growth exponent between consecutive sizes (target <= 1.2 from 10k to 100k), and last
#   near-duplicate search: N images in T s        (target: 100,000 images <= 60 s on 2 cores)
#
#   scripts/bench-split.sh --images 10000 --images 100000     # synthetic fingerprints, cached
#   scripts/bench-split.sh --images 100000 --whole 112120     # + a whole `prep split` of a
#                                                             #   ChestX-ray14-shaped bag
#   scripts/bench-split.sh --real-only                        # the real films in ../shared only
#
# Run it under the shared lock on the 2-core machine: flock /tmp/prep-heavy.lock scripts/bench-split.sh ...
# Synthetic fingerprints are real films' fingerprints (../shared/data/nih/images, 160x160
# thumbnails) jittered per image (examples/bench-split.rs says how), written to a cache file
# first; the search then reads that cache as prep split does. --whole builds a bag with the real
# ChestX-ray14 table's ids, patients and follow-ups, 256-px PNG stand-ins and a fingerprint cache,
# and times `prep split --healthy BAG --diseased BAG --link` with /usr/bin/time -v.
# Environment: SHARED=path/to/shared  WORK=dir (kept; default a temp dir, removed)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
SIZES=()
WHOLE=""
REAL=1
REAL_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --images) SIZES+=("$2"); shift 2 ;;
    --whole) WHOLE=$2; shift 2 ;;
    --no-real) REAL=0; shift ;;
    --real-only) REAL_ONLY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#SIZES[@]} -gt 0 ] || [ "$REAL_ONLY" = 1 ] || [ -n "$WHOLE" ] || SIZES=(10000 100000)
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d /tmp/prep-bench-split.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build -q --release --no-default-features --example bench-split --bin prep
BENCH=target/release/examples/bench-split
PREP=target/release/prep
BASES=()
[ -d "$SHARED/data/nih/images" ] && BASES=(--bases "$SHARED/data/nih/images")

echo "# prep split benchmark — $(date -u '+%Y-%m-%d %H:%M UTC') — $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$REAL" = 1 ] && [ -d "$SHARED/data" ]; then
  echo; echo "## real films ($SHARED/data): index vs brute force"
  "$BENCH" real "$SHARED/data"
fi
[ "$REAL_ONLY" = 1 ] && exit 0

prev_n=""; prev_t=""; last=""
for n in "${SIZES[@]}"; do
  echo; echo "## synthetic, $n images, cached fingerprints"
  out=$("$BENCH" search --images "$n" --work "$WORK" "${BASES[@]}")
  echo "$out"
  t=$(echo "$out" | sed -n 's/^near-duplicate search: [0-9]* images in \([0-9.]*\) s$/\1/p')
  if [ -n "$prev_n" ]; then
    awk -v n1="$prev_n" -v t1="$prev_t" -v n2="$n" -v t2="$t" \
      'BEGIN { printf "growth exponent %d -> %d: %.2f (target <= 1.2)\n", n1, n2, log(t2/t1)/log(n2/n1) }'
  fi
  awk -v t="$t" -v n="$n" 'BEGIN { if (n == 100000) printf "ratio to the 60 s target at 100,000: %.2f\n", t/60 }'
  prev_n=$n; prev_t=$t; last="near-duplicate search: $n images in $t s"
done

if [ -n "$WHOLE" ]; then
  echo; echo "## whole prep split, $WHOLE ChestX-ray14-shaped records (256-px stand-ins, cached fingerprints)"
  table=$WORK/Data_Entry_2017.csv
  zcat "$SHARED/data/nih/Data_Entry_2017_v2020.csv.gz" > "$table"
  "$BENCH" bag --images "$WHOLE" --table "$table" --out "$WORK/bag" "${BASES[@]}"
  du -sh "$WORK/bag" | sed 's/^/bag size: /'
  rm -rf "$WORK/split"
  PREP_TIMINGS=1 /usr/bin/time -v "$PREP" split --healthy "$WORK/bag" --diseased "$WORK/bag" \
    --link --out "$WORK/split" > "$WORK/split.out" 2> "$WORK/split.err" || { cat "$WORK/split.err"; exit 1; }
  grep -E "images in|fingerprints:|near-duplicate " "$WORK/split.out" || true
  grep -E "^timing:" "$WORK/split.err"
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/split.err")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/split.err")
  echo "whole prep split: $WHOLE images, wall $wall, max RSS $((rss / 1024)) MB (targets: 10 min, 4096 MB)"
  awk -v r="$rss" 'BEGIN { printf "ratio to the 4 GB target: %.2f\n", r / 1024 / 4096 }'
fi
[ -n "$last" ] && echo "$last"
exit 0
