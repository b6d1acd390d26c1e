#!/usr/bin/env python3
"""One training epoch of the same data in prep and in PyTorch + torchvision, side by side.

  bench-train.py [--prep target/release/prep] [--images 128] [--source-size 512] [--threads 2]
                 [--batch-size 8] [--unfreeze denseblock4] [--workers 2] [--rounds 3]
                 [--modes exact,fast] [--keep DIR]

Both sides: densenet121 with the same random weights, a fresh 2-class classifier, everything
frozen but --unfreeze (frozen BatchNorm in eval mode), Adam(lr 1e-3, weight decay 1e-4),
cross-entropy, RandomResizedCrop(224) + RandomHorizontalFlip + ImageNet Normalize on the training
split, the same libtorch thread count. PyTorch reads with torchvision ImageFolder + DataLoader
(--workers processes); prep decodes on rayon (RAYON_NUM_THREADS=--workers). Grey PNGs of
--source-size px stand in for X-rays (scripts/synth_bag.py). prep runs in each of --modes: `exact`
(torchvision's operations, bit-identical logits), `fast` (--fast-frozen: folded BatchNorm,
channels-last frozen stages), `bf16` (--precision bf16), `cl` (--channels-last), `sync`
(--prefetch 0: no background decoding). Prints images/s of each, prep's data-wait share of the
epoch (timing.csv), and the ratio prep / PyTorch.

Needs: torch==2.11.0 torchvision==0.26.0 safetensors pillow numpy (pip), and a built prep.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synth_bag import write_bag  # noqa: E402


def torch_epoch(bag, weights_sd, args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(os.path.join(bag, "data", "train"), tf,
                                          loader=lambda p: Image.open(p).convert("RGB"))
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     persistent_workers=False)
    model = torchvision.models.densenet121(weights=None)
    model.load_state_dict(weights_sd)
    model.classifier = torch.nn.Linear(model.classifier.in_features, 2)
    keep = [s for s in args.unfreeze.split(",") if s]
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith("classifier.") or any(n.startswith(f"features.{k}.") for k in keep)
    model.eval()
    for k in keep:
        getattr(model.features, k).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    t = time.perf_counter()
    n = 0
    for x, y in dl:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t)


# prep variants: exact (default), fast (--fast-frozen), bf16 (--precision bf16), cl (channels-last),
# sync (--prefetch 0: no background decoding, what the data wait looks like without a prefetcher).
PREP_MODES = {
    "exact": [],
    "fast": ["--fast-frozen"],
    "bf16": ["--precision", "bf16"],
    "cl": ["--channels-last"],
    "sync": ["--prefetch", "0"],
}


def prep_epoch(bag, weights, out, args, mode):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.workers))
    cmd = [args.prep, "train", "--data", bag, "--out", out, "--weights", weights, "--epochs", "1",
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", "cpu",
           "--unfreeze", args.unfreeze or "none", "--image-size", "224", "--force"]
    cmd += PREP_MODES[mode]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "timing.csv")) as f:
        row = f.read().splitlines()[1].split(",")
    # images/s, and the share of the training epoch spent waiting for data
    return float(row[3]), float(row[4]) / float(row[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prep", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "prep"))
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--source-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--unfreeze", default="denseblock4")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate prep and PyTorch this many times and keep each one's best (the machine may be shared)")
    ap.add_argument("--modes", default="exact,fast",
                    help="prep variants to time: " + ", ".join(PREP_MODES) + " (see PREP_MODES)")
    ap.add_argument("--keep", help="build the bag here and keep it")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in PREP_MODES for m in modes):
        ap.error(f"--modes takes a comma list of {', '.join(PREP_MODES)}")
    tmp = tempfile.mkdtemp(prefix="prep-bench-")
    try:
        bag = args.keep or os.path.join(tmp, "bag")
        if not os.path.exists(os.path.join(bag, "bagit.txt")):
            write_bag(bag, args.images, args.source_size, 0, args.workers)
        torch.manual_seed(1)
        sd = torchvision.models.densenet121(weights=None).state_dict()
        weights = os.path.join(tmp, "densenet121.safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, weights)
        print(f"{args.images} train images {args.source_size}px grey PNG -> 224, batch {args.batch_size}, "
              f"libtorch threads {args.threads}, loader workers {args.workers}, trainable: {args.unfreeze or 'classifier only'}; "
              f"torch {torch.__version__}")
        ps, ws, ts = {m: [] for m in modes}, {m: [] for m in modes}, []
        for r in range(args.rounds):
            for m in modes:
                ips, wait = prep_epoch(bag, weights, os.path.join(tmp, "run"), args, m)
                ps[m].append(ips)
                ws[m].append(wait)
            ts.append(torch_epoch(bag, sd, args))
            line = ", ".join(f"prep {m} {ps[m][-1]:.2f} (data wait {100 * ws[m][-1]:.1f} %)" for m in modes)
            print(f"round {r + 1}: {line}, pytorch {ts[-1]:.2f} images/s", flush=True)
        t = max(ts)
        for m in modes:
            print(f"prep {m:5s}: {max(ps[m]):8.2f} images/s (best of {args.rounds}), "
                  f"data wait {100 * min(ws[m]):.1f}-{100 * max(ws[m]):.1f} % of the epoch")
        print(f"pytorch   : {t:8.2f} images/s (best of {args.rounds})")
        for m in modes:
            print(f"ratio prep {m}/pytorch: {max(ps[m]) / t:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
