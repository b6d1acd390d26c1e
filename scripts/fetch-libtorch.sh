#!/usr/bin/env bash
# Fetch the CPU parts of libtorch 2.11.0 from PyPI's torch wheel into .libtorch/ (git-ignored).
# Why: tch's download-libtorch feature needs a host that is not reachable here; the PyPI wheel is.
# Idempotent: does nothing when .libtorch/ already holds the expected files.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${LIBTORCH_DEST:-.libtorch}
TORCH_VERSION=2.11.0
stamp="$DEST/.prep-libtorch-$TORCH_VERSION"
if [ -f "$stamp" ] && [ -f "$DEST/lib/libtorch_cpu.so" ] && [ -d "$DEST/include/torch" ]; then
  echo "libtorch $TORCH_VERSION already in $DEST"
  exit 0
fi
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading torch==$TORCH_VERSION wheel and two CUDA runtime wheels from PyPI (about 540 MB)..."
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
  "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
stage="$DEST.partial"
rm -rf "$stage"
mkdir -p "$stage/lib"
# Unpack only what tch needs: headers and the CPU libraries (the CUDA ones are 2 GB more and
# come from the user's own PyTorch on a GPU machine). libtorch_cpu.so links libcudart/libcupti.
"$PY" - "$tmp" "$stage" <<'PYEOF'
import sys, zipfile, glob, os, shutil
tmp, stage = sys.argv[1], sys.argv[2]
want_libs = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"}
torch_whl = glob.glob(os.path.join(tmp, "torch-*.whl"))[0]
with zipfile.ZipFile(torch_whl) as z:
    for name in z.namelist():
        if name.startswith("torch/include/") and not name.endswith("/"):
            out = os.path.join(stage, "include", name[len("torch/include/"):])
        elif name.startswith("torch/lib/") and os.path.basename(name) in want_libs:
            out = os.path.join(stage, "lib", os.path.basename(name))
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(name) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
for pattern in ("nvidia_cuda_runtime-*.whl", "nvidia_cuda_cupti-*.whl"):
    whl = glob.glob(os.path.join(tmp, pattern))[0]
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if base in ("libcudart.so.13", "libcupti.so.13"):
                with z.open(name) as src, open(os.path.join(stage, "lib", base), "wb") as dst:
                    shutil.copyfileobj(src, dst)
missing = [l for l in sorted(want_libs | {"libcudart.so.13", "libcupti.so.13"})
           if not os.path.exists(os.path.join(stage, "lib", l))]
if missing:
    sys.exit("missing from the wheels: " + ", ".join(missing))
PYEOF
touch "$stage/.prep-libtorch-$TORCH_VERSION"
rm -rf "$DEST"
mv "$stage" "$DEST"
echo "libtorch $TORCH_VERSION ready in $DEST ($(du -sh "$DEST" | cut -f1))"
