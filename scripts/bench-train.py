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
--source-size px stand in for X-rays. prep runs in each of --modes: `exact` (torchvision's
operations, bit-identical logits) and `fast` (--fast-frozen: folded BatchNorm, channels-last frozen
stages). Prints images/s of each and the ratio prep / PyTorch.

Needs: torch==2.11.0 torchvision==0.26.0 safetensors pillow numpy (pip), and a built prep.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms


def write_bag(root, images, size, seed):
    """A minimal BagIt bag in prep split's ImageFolder layout (what `prep verify` accepts)."""
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "data")
    files = []
    for split, n in (("train", images), ("val", max(4, images // 8))):
        for c, cls in enumerate(("covid", "no-covid")):
            d = os.path.join(data, split, cls)
            os.makedirs(d, exist_ok=True)
            for i in range(n // 2):
                yy, xx = np.mgrid[0:size, 0:size]
                base = 90 + 60 * np.sin(xx / size * 3.1) * np.cos(yy / size * 2.3)
                img = base + rng.normal(0, 25, (size, size)) + (40 if c == 0 else -40) * (
                    (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 5) ** 2)
                p = os.path.join(d, f"{cls}-{i:04d}.png")
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(p)
                files.append(p)
    lines, total = [], 0
    for p in sorted(files):
        b = open(p, "rb").read()
        total += len(b)
        lines.append(f"{hashlib.sha256(b).hexdigest()}  {os.path.relpath(p, root)}\n")
    with open(os.path.join(root, "bagit.txt"), "w") as f:
        f.write("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    with open(os.path.join(root, "manifest-sha256.txt"), "w") as f:
        f.writelines(lines)
    with open(os.path.join(root, "bag-info.txt"), "w") as f:
        f.write(f"Payload-Oxum: {total}.{len(files)}\n")
    with open(os.path.join(root, "tagmanifest-sha256.txt"), "w") as f:
        for t in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt"):
            f.write(f"{hashlib.sha256(open(os.path.join(root, t), 'rb').read()).hexdigest()}  {t}\n")


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


def prep_epoch(bag, weights, out, args, mode):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.workers))
    cmd = [args.prep, "train", "--data", bag, "--out", out, "--weights", weights, "--epochs", "1",
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", "cpu",
           "--unfreeze", args.unfreeze or "none", "--image-size", "224", "--force"]
    if mode == "fast":
        cmd.append("--fast-frozen")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "timing.csv")) as f:
        row = f.read().splitlines()[1].split(",")
    return float(row[3])


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
                    help="prep variants to time: exact (default prep) and/or fast (--fast-frozen)")
    ap.add_argument("--keep", help="build the bag here and keep it")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("exact", "fast") for m in modes):
        ap.error("--modes takes exact and/or fast")
    tmp = tempfile.mkdtemp(prefix="prep-bench-")
    try:
        bag = args.keep or os.path.join(tmp, "bag")
        if not os.path.exists(os.path.join(bag, "bagit.txt")):
            write_bag(bag, args.images, args.source_size, 0)
        torch.manual_seed(1)
        sd = torchvision.models.densenet121(weights=None).state_dict()
        weights = os.path.join(tmp, "densenet121.safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, weights)
        print(f"{args.images} train images {args.source_size}px grey PNG -> 224, batch {args.batch_size}, "
              f"libtorch threads {args.threads}, loader workers {args.workers}, trainable: {args.unfreeze or 'classifier only'}; "
              f"torch {torch.__version__}")
        ps, ts = {m: [] for m in modes}, []
        for r in range(args.rounds):
            for m in modes:
                ps[m].append(prep_epoch(bag, weights, os.path.join(tmp, "run"), args, m))
            ts.append(torch_epoch(bag, sd, args))
            line = ", ".join(f"prep {m} {ps[m][-1]:.2f}" for m in modes)
            print(f"round {r + 1}: {line}, pytorch {ts[-1]:.2f} images/s", flush=True)
        t = max(ts)
        for m in modes:
            print(f"prep {m:5s}: {max(ps[m]):8.2f} images/s (best of {args.rounds})")
        print(f"pytorch   : {t:8.2f} images/s (best of {args.rounds})")
        for m in modes:
            print(f"ratio prep {m}/pytorch: {max(ps[m]) / t:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
