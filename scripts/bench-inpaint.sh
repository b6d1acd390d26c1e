#!/usr/bin/env bash
# Benchmark `prep inpaint` side by side with its anchors (OpenCV Telea/NS, scikit-image
# biharmonic, the harness's baseline detector) on the harness's cases, and measure whole-bag
# throughput on the real samples. Prints the tables and the ratios.
#
#   scripts/bench-inpaint.sh            # full run (~10-20 min on 2 shared cores)
#   QUICK=1 scripts/bench-inpaint.sh    # 1024 px only, fewer repeats
#
# Needs python3 (a throwaway venv gets opencv-python-headless, scikit-image, numpy from PyPI)
# and ../shared (the harness in tools/, real X-rays in data/samples). Environment:
#   SHARED=path/to/shared  PREP_BIN=path/to/prep (else built here, without libtorch)
#   VENV=dir (reuse a venv)  WORK=dir (keep cases and outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
HARNESS=$SHARED/tools/inpaint_anchor.py
SAMPLES=$SHARED/data/samples
REAL=$SAMPLES/cohen/images/covid-19-pneumonia-58-prior.jpg
[ -f "$HARNESS" ] || { echo "no harness at $HARNESS (set SHARED)" >&2; exit 2; }
WORK=${WORK:-$(mktemp -d /tmp/prep-bench-inpaint.XXXXXX)}
mkdir -p "$WORK"
if [ "${QUICK:-0}" = 1 ]; then SIZES="1024"; REPEAT=3; else SIZES="1024 2048"; REPEAT=5; fi

if [ -z "${VENV:-}" ]; then
  VENV=$WORK/venv
  trap 'rm -rf "$WORK/venv"' EXIT   # throwaway
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q opencv-python-headless scikit-image numpy
fi
PY=$VENV/bin/python

if [ -z "${PREP_BIN:-}" ]; then
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build -q --release --no-default-features
  PREP_BIN=target/release/prep
fi

echo "# prep inpaint benchmark — $(date -u '+%Y-%m-%d %H:%M UTC') — $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. cases: synthetic (3 seeds) and the real X-ray the anchor table used, merged into one set.
"$PY" "$HARNESS" export --sizes $SIZES --n-images 3 --out "$WORK/synth" >/dev/null
if [ -f "$REAL" ]; then
  "$PY" "$HARNESS" export --sizes $SIZES --n-images 1 --real "$REAL" --out "$WORK/real" >/dev/null
fi
"$PY" - "$WORK" <<'EOF'
import json, sys, pathlib
w = pathlib.Path(sys.argv[1]); out = []
for part in ("synth", "real"):
    m = w / part / "manifest.json"
    if m.exists():
        out += json.loads(m.read_text())
(w / "cases").mkdir(exist_ok=True)
(w / "cases" / "manifest.json").write_text(json.dumps(out, indent=1))
EOF

# 2. telea vs OpenCV (timed interleaved, single-threaded both sides)
echo; echo "## telea vs OpenCV Telea r3 / NS r3 (single thread)"
"$PY" "$HARNESS" compare --cases "$WORK/cases" --opencv telea:3 ns:3 --repeat $REPEAT --inner 6 \
  --cmd "$PREP_BIN inpaint --image {corrupted} --mask {mask} --output {out} --method telea --bench-repeat 6" \
  | tee "$WORK/compare_telea.md"

# 3. the default method (auto: biharmonic + film kept + grain; patch only for holes >= 64 px
#    deep, none in these cases) vs scikit-image biharmonic
echo; echo "## default method vs OpenCV Telea r3 and scikit-image biharmonic (split)"
"$PY" "$HARNESS" compare --cases "$WORK/cases" --opencv telea:3 biharmonic:split --repeat 3 --inner 3 \
  --cmd "$PREP_BIN inpaint --image {corrupted} --mask {mask} --output {out} --bench-repeat 6" \
  | tee "$WORK/compare_default.md"

# 3b. the exemplar fill on every hole (PatchMatch-style), vs OpenCV Telea r3
echo; echo "## patch (exemplar fill on every hole) vs OpenCV Telea r3"
"$PY" "$HARNESS" compare --cases "$WORK/cases" --opencv telea:3 --repeat 3 --inner 3 \
  --cmd "$PREP_BIN inpaint --image {corrupted} --mask {mask} --output {out} --method patch --bench-repeat 4" \
  | tee "$WORK/compare_patch.md"

echo; echo "## summary per image group (means over cases; speed = OpenCV Telea ms / ours)"
"$PY" - "$WORK/compare_telea.md" "$WORK/compare_default.md" "$WORK/compare_patch.md" <<'EOF'
import re, sys, statistics as st
def rows(path):
    out = []
    for line in open(path):
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) >= 9 and c[0] not in ("case", "---"):
            try:
                out.append(dict(case=c[0], impl=c[1], ms=float(c[2]), psnr=float(c[4]), tex=float(c[7]), ratio=float(c[8])))
            except ValueError:
                pass
    return out
SIZE = re.compile(r"_(\d+)(_8b)?$")
def group(case):
    kind = "real" if case.startswith("real") else "synthetic"
    return kind + " " + SIZE.search(case).group(1)
for name, path, ref in (("telea", sys.argv[1], "telea:3"), ("default", sys.argv[2], "biharmonic:split"),
                        ("patch", sys.argv[3], "telea:3")):
    r = rows(path)
    print(f"\n{name}: | group | ours ms | OpenCV Telea ms | speed ratio | ours PSNR | {ref} PSNR | ΔPSNR | ours texture | {ref} texture |")
    print("|---|---|---|---|---|---|---|---|---|")
    for g in sorted({group(x['case']) for x in r}):
        sel = lambda impl: [x for x in r if group(x['case']) == g and x['impl'].startswith(impl)]
        me, cv, rf = sel("impl"), sel("telea:3"), sel(ref)
        if not me:
            continue
        m = lambda xs, k: st.mean(x[k] for x in xs)
        print(f"| {g} | {st.median(x['ms'] for x in me):.1f} | {st.median(x['ms'] for x in cv):.1f} | "
              f"{m(me,'ratio'):.2f} | {m(me,'psnr'):.2f} | {m(rf,'psnr'):.2f} | "
              f"{m(me,'psnr') - m(rf,'psnr'):+.2f} | {m(me,'tex'):.2f} | {m(rf,'tex'):.2f} |")
EOF

# 4. detection: the harness's baseline detector, then ours on the same images
echo; echo "## detection: harness baseline (OpenCV, python)"
"$PY" "$HARNESS" detect --sizes $SIZES --n-images 3 --out "$WORK/det_base" | sed 's/^/    /'
if [ -f "$REAL" ]; then
  "$PY" "$HARNESS" detect --sizes $SIZES --n-images 1 --real "$REAL" --out "$WORK/det_base_real" | sed 's/^/    /'
fi
echo; echo "## detection: prep inpaint --detect auto (detect_ms = median of 3 runs)"
"$PY" - "$HARNESS" "$PREP_BIN" "$WORK/cases" "$WORK" <<'EOF'
import sys, json, re, subprocess, statistics as st, pathlib
sys.path.insert(0, str(pathlib.Path(sys.argv[1]).parent))
import inpaint_anchor as A, cv2
exe, cases, work = sys.argv[2], pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
def run(img, mask_out):
    ms = []
    for _ in range(3):
        p = subprocess.run([exe, "inpaint", "--image", str(img), "--detect", "auto", "--method", "telea",
                            "--output", str(work / "det_out.png"), "--save-mask", str(mask_out)],
                           capture_output=True, text=True, check=True)
        ms.append(float(re.search(r"detect_ms=([\d.]+)", p.stdout).group(1)))
    return st.median(ms)
print("| case | detect ms | recall all | " + " | ".join(f"recall {c}" for c in A.CLASSES) + " | flagged on clean |")
print("|---|---|---|" + "---|" * len(A.CLASSES) + "---|")
worst = {}
for c in json.loads((cases / "manifest.json").read_text()):
    d = pathlib.Path(c["dir"])
    ms = run(d / "corrupted.png", work / "det_mask.png")
    pred = cv2.imread(str(work / "det_mask.png"), cv2.IMREAD_UNCHANGED)
    sc = A.detection_scores(pred, cv2.imread(str(d / "mask_exact.png"), -1), cv2.imread(str(d / "labels.png"), -1))
    run(d / "clean.png", work / "det_clean.png")
    fp = float((cv2.imread(str(work / "det_clean.png"), -1) > 0).mean())
    print(f"| {c['case']} | {ms:.1f} | {sc['recall']:.3f} | " + " | ".join(f"{sc.get('recall_' + k, float('nan')):.3f}" for k in A.CLASSES) + f" | {100 * fp:.3f}% |")
    for k in A.CLASSES:
        if k != "watermark" and "recall_" + k in sc:
            worst[k] = min(worst.get(k, 1.0), sc["recall_" + k])
    worst["_fp"] = max(worst.get("_fp", 0.0), fp)
    worst["_ms"] = max(worst.get("_ms", 0.0), ms if c["size"] == 1024 else 0.0)
print(f"\nworst recall per class (watermark excluded): " + ", ".join(f"{k} {v:.3f}" for k, v in worst.items() if not k.startswith("_"))
      + f"; worst flagged on a clean image {100 * worst['_fp']:.3f}%; slowest 1024-px detection {worst['_ms']:.1f} ms")
EOF

# 5. whole bag, both cores: the real samples -> prep filter (folder) -> prep inpaint
if [ -d "$SAMPLES" ]; then
  echo; echo "## whole bag: real samples, prep inpaint with RAYON_NUM_THREADS=2"
  rm -rf "$WORK/bag" "$WORK/bag_clean"
  "$PREP_BIN" filter --source folder --dataset "$SAMPLES" --label sample --out "$WORK/bag" >/dev/null
  n=$("$PY" -c "import csv,sys; print(sum(1 for _ in csv.DictReader(open(sys.argv[1]))))" "$WORK/bag/data/records.csv")
  times=()
  for i in 1 2 3; do
    rm -rf "$WORK/bag_clean"
    t0=$(date +%s.%N)
    RAYON_NUM_THREADS=2 "$PREP_BIN" inpaint "$WORK/bag" --out "$WORK/bag_clean" >"$WORK/bag_run.txt"
    t1=$(date +%s.%N)
    times+=("$("$PY" -c "print(f'{$t1 - $t0:.2f}')")")
  done
  cat "$WORK/bag_run.txt"
  "$PY" -c "
import statistics, sys
t = [float(x) for x in sys.argv[2:]]; n = int(sys.argv[1]); m = statistics.median(t)
print(f'runs: {t} s; median {m:.2f} s for {n} images = {n / m:.1f} images/s (verify input + detect + inpaint + PNG encode + hashing, 2 threads)')
" "$n" "${times[@]}"
  "$PREP_BIN" verify "$WORK/bag_clean"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# outputs kept in $WORK"
