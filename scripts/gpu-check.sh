#!/usr/bin/env bash
# prep train on a GPU against PyTorch + torchvision, side by side, in one run.
#
#   scripts/gpu-check.sh [--device cuda|cpu] [--images 2000] [--source-size 512] [--image-size 224]
#                        [--epochs 2] [--batch-size 32] [--workers NPROC] [--precisions fp32,bf16,fp16]
#                        [--arch densenet121] [--prep BIN] [--python PY] [--work DIR] [--budget 420]
#
# Prints `prep doctor` first, then generates a synthetic split bag (scripts/synth_bag.py: --images
# grey films of --source-size px, RandomResizedCrop to --image-size), one set of random weights for
# both sides (scripts/gpu_check.py weights), and for each precision and each freeze (denseblock4 +
# head, then --unfreeze all) trains --epochs epochs with `prep train` and with the PyTorch
# DataLoader loop of scripts/gpu_check.py (same model, freeze, batch size, transforms, workers).
# Extra prep rows: --channels-last and --cache-features --no-augment. Then eval logits of one
# trained model on the CPU and on the device (prep predict, and torchvision). The report gives
# images/s per epoch, data-wait share, GPU memory (nvidia-smi peak while each run ran, and
# torch.cuda.max_memory_allocated for PyTorch) and the ratio prep / PyTorch.
#
# On the GPU machine (no Rust, no registry): carry a stripped release binary and point
# LD_LIBRARY_PATH at PyTorch's torch/lib (with --device cuda this script prepends it itself).
# Runs that would start after --budget seconds are skipped (and listed as skipped), so the whole
# script stays inside the device's time.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
device=cuda images=2000 source_size=512 image_size=224 epochs=2 batch=32
workers=$(nproc) precisions="" arch=densenet121 prep="" py=python3 work="" budget=420
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --source-size) source_size=$2; shift 2 ;;
    --image-size) image_size=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --precisions) precisions=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --prep) prep=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu-check.sh: --device cuda or cpu" >&2; exit 2 ;; esac
# fp16 is CUDA-only in prep (a usage error on the CPU, checked below).
[ -n "$precisions" ] || { [ "$device" = cuda ] && precisions=fp32,bf16,fp16 || precisions=fp32,bf16; }
if [ -z "$prep" ]; then
  for c in "$here/../.gpu/prep" "$here/../target/release/prep"; do [ -x "$c" ] && { prep=$c; break; }; done
fi
[ -x "$prep" ] || { echo "gpu-check.sh: no prep binary (build one, or --prep BIN)" >&2; exit 2; }
if [ "$device" = cuda ]; then
  tl=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")' 2>/dev/null) \
    && export LD_LIBRARY_PATH="$tl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -n "$work" ] || work=$(mktemp -d /tmp/gpu-check.XXXXXX)
mkdir -p "$work"
start=$(date +%s)
smi() { command -v nvidia-smi >/dev/null 2>&1 && [ "$device" = cuda ]; }

echo "== prep doctor"
"$prep" doctor
echo
echo "== machine"
smi && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cpus: $(nproc); $("$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)')"
echo "settings: device $device, $images films of ${source_size} px -> $image_size, batch $batch, epochs $epochs, loader workers $workers, arch $arch, precisions $precisions"
echo

echo "== data"
t=$(date +%s)
"$py" "$here/synth_bag.py" "$work/bag" --images "$images" --source-size "$source_size" --workers "$workers" || exit 1
"$py" "$here/gpu_check.py" weights --arch "$arch" --out "$work/weights.safetensors" || exit 1
echo "($(( $(date +%s) - t )) s)"
echo

: > "$work/runs.tsv"
# One run, its nvidia-smi peak sampled every 100 ms; recorded in runs.tsv.
# usage: record LABEL SIDE RESULT CMD...
record() {
  local label=$1 side=$2 result=$3; shift 3
  if [ $(( $(date +%s) - start )) -ge "$budget" ]; then
    echo "-- $label / $side: skipped (past the --budget of $budget s)"
    printf '%s\t%s\t%s\t\t%s\n' "$label" "$side" "$result" "skipped (time budget)" >> "$work/runs.tsv"
    return
  fi
  echo "-- $label / $side"
  local smi_pid="" smi_log="$work/smi.$$.log" peak=""
  if smi; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$smi_log" 2>/dev/null &
    smi_pid=$!
  fi
  local t0; t0=$(date +%s%N)
  "$@"
  local rc=$?
  [ -n "$smi_pid" ] && { kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null; peak=$(sort -n "$smi_log" | tail -1); }
  echo "   ($(( ($(date +%s%N) - t0) / 1000000 )) ms wall, exit $rc)"
  local status=ok; [ $rc -eq 0 ] || status="failed (exit $rc)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$side" "$result" "$peak" "$status" >> "$work/runs.tsv"
}

prep_train() { # OUT ARGS...
  local out=$1; shift
  RAYON_NUM_THREADS=$workers "$prep" train --data "$work/bag" --weights "$work/weights.safetensors" \
    --out "$out" --epochs "$epochs" --patience "$epochs" --batch-size "$batch" --image-size "$image_size" \
    --device "$device" --loader-threads "$workers" --force "$@"
}
torch_train() { # OUT ARGS...
  local out=$1; shift
  "$py" "$here/gpu_check.py" torch --bag "$work/bag" --weights "$work/weights.safetensors" --device "$device" \
    --epochs "$epochs" --batch-size "$batch" --image-size "$image_size" --workers "$workers" --out "$out" "$@"
}

echo "== training"
IFS=, read -r -a plist <<< "$precisions"
for p in "${plist[@]}"; do
  for u in denseblock4 all; do
    label="$p unfreeze $u"
    record "$label" prep "$work/prep-$p-$u" prep_train "$work/prep-$p-$u" --precision "$p" --unfreeze "$u"
    record "$label" pytorch "$work/torch-$p-$u.json" torch_train "$work/torch-$p-$u.json" --precision "$p" --unfreeze "$u"
  done
done
best=${plist[${#plist[@]}-1]}
[ "$device" = cuda ] && best=bf16
for u in denseblock4 all; do
  label="$best unfreeze $u channels-last"
  record "$label" prep "$work/prep-$best-$u-cl" prep_train "$work/prep-$best-$u-cl" --precision "$best" --unfreeze "$u" --channels-last
  record "$label" pytorch "$work/torch-$best-$u-cl.json" torch_train "$work/torch-$best-$u-cl.json" --precision "$best" --unfreeze "$u" --channels-last
done
record "$best unfreeze denseblock4 cache-features no-augment" prep "$work/prep-cache" \
  prep_train "$work/prep-cache" --precision "$best" --unfreeze denseblock4 --cache-features --no-augment
if [ "$device" = cpu ]; then
  echo "-- fp16 on the CPU (expected: a usage error)"
  prep_train "$work/prep-fp16-cpu" --precision fp16; echo "   exit $?"
fi
echo

if [ "$device" = cuda ]; then echo "== eval logits, same model, CPU vs cuda"; else echo "== eval logits, same model, prep vs PyTorch on the CPU"; fi
run=$work/prep-fp32-denseblock4
if [ -f "$run/best.safetensors" ]; then
  mkdir -p "$work/parity"
  mapfile -t imgs < <(find "$work/bag/data/val" -name '*.png' | sort | head -8)
  "$prep" predict --model "$run" --device cpu --json "${imgs[@]}" > "$work/parity/prep-cpu.json"
  "$py" "$here/gpu_check.py" logits --weights "$run/best.safetensors" --device cpu --image-size "$image_size" \
    --out "$work/parity/torch-cpu.json" "${imgs[@]}"
  if [ "$device" = cuda ]; then
    "$prep" predict --model "$run" --device cuda --json "${imgs[@]}" > "$work/parity/prep-dev.json"
    "$py" "$here/gpu_check.py" logits --weights "$run/best.safetensors" --device cuda --image-size "$image_size" \
      --out "$work/parity/torch-dev.json" "${imgs[@]}"
  fi
fi
echo

echo "== report ($(( $(date +%s) - start )) s so far; work folder $work)"
"$py" "$here/gpu_check.py" report "$work"
echo "total $(( $(date +%s) - start )) s"
