#!/usr/bin/env bash
# Python tools the test suite checks prep's outputs against, in a git-ignored virtual
# environment .venv/: the BagIt and Croissant validators, and PyTorch + torchvision (the same
# libtorch 2.11 as prep) for full-size DenseNet-121 parity, transform parity, ImageFolder loading
# and scripts/convert-weights.py; webdataset, wids and datasets read prep export's shards back;
# scikit-learn and scipy recompute prep evaluate's AUC and DeLong CI. Idempotent.
# PREP_NO_TORCH=1 leaves PyTorch out (those tests then skip with a printed reason).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REQS="bagit==1.9.0 mlcroissant==1.1.1 scikit-learn==1.9.1 scipy==1.17.1"
# prep export read back (tests/export.rs) and scripts/train_ddp.py's data pipeline.
REQS="$REQS webdataset==1.0.2 wids==0.1.11 datasets==5.2.0 pyarrow==26.0.1"
# tests/dicom.rs: pydicom makes and decodes the DICOM test films (pylibjpeg-libjpeg decodes the
# 12-bit JPEG and JPEG-LS test files, Pillow the JPEG and JPEG 2000 ones); pyjpegls (CharLS) and
# python-gdcm encode the JPEG-LS and JPEG Lossless test films.
REQS="$REQS pydicom==3.0.1 numpy==2.4.6 pillow==13.0.0 pylibjpeg==2.0.1 pylibjpeg-libjpeg==2.3.0"
REQS="$REQS pyjpegls==1.5.1 python-gdcm==3.2.6"
if [ -z "${PREP_NO_TORCH:-}" ]; then
  REQS="$REQS torch==2.11.0 torchvision==0.26.0 safetensors numpy pillow"
fi
stamp=.venv/.prep-reqs
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$REQS" ]; then
  exit 0
fi
"$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check $REQS
echo "$REQS" > "$stamp"
echo "python tools ready in .venv ($REQS)"
