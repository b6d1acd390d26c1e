"""A synthetic split bag for benchmarks: grey PNG "films" in prep split's ImageFolder layout.

Needs numpy and pillow only (what torchvision brings along), so it runs on a GPU machine that has
PyTorch but no registry access. Images are drawn in parallel; each one is seeded by
(seed, split, class, index), so the bag is the same whatever the number of processes.

  python3 scripts/synth_bag.py OUT --images 2000 --source-size 512 [--workers N] [--seed 0]
"""
import argparse
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

CLASSES = ("covid", "no-covid")


def _film(job):
    """One image: smooth background, noise, and a disc brighter (class 0) or darker (class 1)."""
    path, size, seed, split_i, c, i = job
    rng = np.random.default_rng([seed, split_i, c, i])
    yy, xx = np.mgrid[0:size, 0:size]
    base = 90 + 60 * np.sin(xx / size * 3.1) * np.cos(yy / size * 2.3)
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 5) ** 2
    img = base + rng.normal(0, 25, (size, size)) + (40 if c == 0 else -40) * disc
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path)
    return path


def write_bag(root, images, size, seed=0, workers=None, val=None):
    """`images` training films (half per class) and `val` (default images/8, at least 4)
    validation films, plus the BagIt files `prep verify` checks. Returns the file count."""
    data = os.path.join(root, "data")
    jobs = []
    for split_i, (split, n) in enumerate((("train", images), ("val", val or max(4, images // 8)))):
        for c, cls in enumerate(CLASSES):
            d = os.path.join(data, split, cls)
            os.makedirs(d, exist_ok=True)
            for i in range(max(1, n // 2)):
                jobs.append((os.path.join(d, f"{cls}-{i:05d}.png"), size, seed, split_i, c, i))
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as ex:
        files = list(ex.map(_film, jobs, chunksize=16))
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
    return len(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--source-size", type=int, default=512)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    n = write_bag(a.out, a.images, a.source_size, a.seed, a.workers)
    print(f"{n} films of {a.source_size} px in {a.out}")


if __name__ == "__main__":
    main()
