#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu-check.sh, and its report.

  gpu_check.py weights --arch densenet121 --out W.safetensors
  gpu_check.py torch --bag BAG --weights W --device cuda --epochs 2 --batch-size 32 \\
               --unfreeze denseblock4 --workers 16 --precision bf16 [--channels-last] --out R.json
  gpu_check.py logits --weights RUN/best.safetensors --device cuda --out L.json IMAGE...
  gpu_check.py report WORK

`torch` trains like `prep train` does (torchvision DenseNet with the same weights, a fresh
2-class classifier, everything frozen but --unfreeze with frozen BatchNorm in eval mode,
Adam(1e-3, weight decay 1e-4), cross-entropy, RandomResizedCrop(224) + RandomHorizontalFlip +
ImageNet Normalize, shuffled batches) with an idiomatic, strong PyTorch loop: ImageFolder +
DataLoader(num_workers, pin_memory on CUDA, persistent workers), non_blocking copies,
torch.autocast(dtype) and torch.amp.GradScaler for fp16, cudnn.benchmark like prep, losses kept
on the device (no per-step synchronisation). Per epoch it records the training seconds, images/s
and the seconds the loop waited for the DataLoader (same definition as prep's timing.csv).

Needs only what a PyTorch + torchvision install brings (torch, torchvision, numpy, pillow):
safetensors files are read and written by hand when the `safetensors` package is absent.
"""
import argparse
import json
import os
import struct
import sys
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# --- safetensors without the package (the GPU machine has no registry access) -----------------
_DT = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}
_TD = {v: k for k, v in _DT.items()}


def save_safetensors(tensors, path):
    try:
        from safetensors.torch import save_file
        return save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    except ImportError:
        pass
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": _DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        pass
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = bytearray(raw[base + a:base + b])
        t = torch.frombuffer(buf, dtype=_TD[v["dtype"]]) if buf else torch.empty(0, dtype=_TD[v["dtype"]])
        out[k] = t.reshape(v["shape"]).clone()
    return out


# --- the model -------------------------------------------------------------------------------
def build(arch, num_classes=1000):
    """torchvision's densenet121, or prep's reduced `densenet:G,B1-B2-..,INIT,BN`."""
    if arch == "densenet121":
        return torchvision.models.densenet121(weights=None, num_classes=num_classes)
    g, blocks, init, bn = arch.split(":", 1)[1].split(",")
    return torchvision.models.DenseNet(growth_rate=int(g), block_config=tuple(int(b) for b in blocks.split("-")),
                                       num_init_features=int(init), bn_size=int(bn), num_classes=num_classes)


def arch_of(sd):
    """The spec prep would infer from these weights."""
    g = sd["features.denseblock1.denselayer1.conv2.weight"].shape[0]
    blocks = []
    b = 1
    while any(k.startswith(f"features.denseblock{b}.") for k in sd):
        blocks.append(max(int(k.split(".")[2][len("denselayer"):]) for k in sd
                          if k.startswith(f"features.denseblock{b}.denselayer")))
        b += 1
    init = sd["features.conv0.weight"].shape[0]
    bn = sd["features.denseblock1.denselayer1.conv1.weight"].shape[0] // g
    spec = f"densenet:{g},{'-'.join(map(str, blocks))},{init},{bn}"
    return "densenet121" if spec == "densenet:32,6-12-24-16,64,4" else spec


def cmd_weights(a):
    torch.manual_seed(1)
    save_safetensors(build(a.arch).state_dict(), a.out)
    print(f"{a.arch} weights (seed 1) -> {a.out}")


def freeze(model, unfreeze):
    """prep's --unfreeze: the named stages and the classifier train, the rest is frozen and in
    eval mode (frozen BatchNorm statistics never move)."""
    if unfreeze == "all":
        model.train()
        return
    keep = [s for s in unfreeze.split(",") if s and s != "none"]
    for n, p in model.named_parameters():
        stage = n.split(".")[1] if n.startswith("features.") else None
        stage = "conv0" if stage in ("conv0", "norm0") else stage
        p.requires_grad = stage is None or stage in keep
    model.eval()
    for k in keep:
        if k == "conv0":
            model.features.conv0.train()
            model.features.norm0.train()
        else:
            getattr(model.features, k).train()


def rgb(path):
    """PIL's RGB copy of a film (a named function: DataLoader workers may be spawned, not forked,
    and must unpickle the loader)."""
    return Image.open(path).convert("RGB")


def cmd_torch(a):
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = cuda
    torch.manual_seed(0)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    tf = transforms.Compose([
        transforms.RandomResizedCrop(a.image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)])
    ds = torchvision.datasets.ImageFolder(os.path.join(a.bag, "data", "train"), tf, loader=rgb)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                                     pin_memory=cuda, persistent_workers=a.workers > 0)
    sd = load_safetensors(a.weights)
    model = build(arch_of(sd))
    model.load_state_dict(sd)
    model.classifier = torch.nn.Linear(model.classifier.in_features, 2)
    freeze(model, a.unfreeze)
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=mf)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(dev.type) if a.precision == "fp16" else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    epochs = []
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        wait, n, loss_sum = 0.0, 0, torch.zeros((), device=dev)
        it = iter(dl)
        while True:
            tw = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            x = x.to(dev, non_blocking=True, memory_format=mf)
            y = y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            loss_sum += loss.detach() * len(y)
            n += len(y)
        if cuda:
            torch.cuda.synchronize(dev)
        secs = time.perf_counter() - t0
        epochs.append({"epoch": epoch, "train_seconds": secs, "images_per_second": n / secs,
                       "data_wait_seconds": wait, "loss": loss_sum.item() / max(n, 1)})
        print(f"pytorch epoch {epoch}: {n / secs:.1f} images/s, data wait {100 * wait / secs:.1f} %, "
              f"loss {epochs[-1]['loss']:.4f}", flush=True)
    out = {"side": "pytorch", "torch": torch.__version__, "torchvision": torchvision.__version__,
           "epochs": epochs,
           "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(dev) if cuda else None}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


def cmd_logits(a):
    """Eval logits of a prep run's best.safetensors, validation transform, as `prep predict`."""
    dev = torch.device(a.device)
    sd = load_safetensors(a.weights)
    model = build(arch_of(sd), sd["classifier.weight"].shape[0])
    model.load_state_dict(sd)
    model = model.to(dev).eval()
    tf = transforms.Compose([transforms.Resize(a.image_size), transforms.CenterCrop(a.image_size),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    x = torch.stack([tf(rgb(p)) for p in a.images]).to(dev)
    with torch.no_grad():
        logits = model(x).float().cpu().tolist()
    with open(a.out, "w") as f:
        json.dump([{"image": p, "logits": l} for p, l in zip(a.images, logits)], f)


# --- the report --------------------------------------------------------------------------------
def prep_epochs(run):
    rows = open(os.path.join(run, "timing.csv")).read().split()
    head = rows[0].split(",")
    out = []
    for r in rows[1:]:
        d = dict(zip(head, map(float, r.split(","))))
        out.append({"epoch": int(d["epoch"]), "train_seconds": d["train_seconds"],
                    "images_per_second": d["train_images_per_second"],
                    "data_wait_seconds": d["data_wait_seconds"]})
    return out


def max_logit_diff(pa, pb):
    a, b = json.load(open(pa)), json.load(open(pb))
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["logits"], rb["logits"]))


def cmd_report(a):
    runs = [l.rstrip("\n").split("\t") for l in open(os.path.join(a.work, "runs.tsv")) if l.strip()]
    print(f"{'configuration':<50} {'side':<8} {'images/s per epoch':<26} {'data wait':>9} "
          f"{'GPU MiB (smi peak)':>18} {'torch max alloc':>15}")
    results = {}
    for label, side, path, smi, status in runs:
        if status != "ok":
            print(f"{label:<50} {side:<8} {status}")
            continue
        if side == "prep":
            eps, alloc = prep_epochs(path), None
        else:
            r = json.load(open(path))
            eps, alloc = r["epochs"], r["max_memory_allocated_bytes"]
        last = eps[-1]
        wait = last["data_wait_seconds"] / max(last["train_seconds"], 1e-9)
        results[(label, side)] = last["images_per_second"]
        ips = " ".join(f"{e['images_per_second']:8.1f}" for e in eps)
        print(f"{label:<50} {side:<8} {ips:<26} {100 * wait:8.1f}% {smi or 'n/a':>18} "
              f"{'n/a' if alloc is None else f'{alloc / 2**20:.0f} MiB':>15}")
    print()
    print("ratio prep / pytorch, images/s of the last epoch (goal >= 1.3x; data wait goal <= 10 %):")
    for label in dict.fromkeys(l for l, _ in results):
        p, t = results.get((label, "prep")), results.get((label, "pytorch"))
        if p and t:
            print(f"  {label:<48} {p / t:5.2f}x  ({p:.1f} vs {t:.1f} images/s)")
    parity = os.path.join(a.work, "parity")
    if os.path.isdir(parity):
        print()
        print("eval logits of the same trained model (fp32, validation transform), max abs difference:")
        pairs = [("prep-cpu.json", "prep-dev.json", "prep CPU vs prep on the device"),
                 ("torch-cpu.json", "torch-dev.json", "PyTorch CPU vs PyTorch on the device"),
                 ("prep-cpu.json", "torch-cpu.json", "prep CPU vs PyTorch CPU"),
                 ("prep-dev.json", "torch-dev.json", "prep vs PyTorch on the device")]
        for fa, fb, what in pairs:
            pa, pb = os.path.join(parity, fa), os.path.join(parity, fb)
            if os.path.exists(pa) and os.path.exists(pb):
                print(f"  {what:<40} {max_logit_diff(pa, pb):.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights")
    w.add_argument("--arch", default="densenet121")
    w.add_argument("--out", required=True)
    t = sub.add_parser("torch")
    t.add_argument("--bag", required=True)
    t.add_argument("--weights", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--unfreeze", default="denseblock4")
    t.add_argument("--workers", type=int, default=os.cpu_count())
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    t.add_argument("--channels-last", action="store_true")
    t.add_argument("--image-size", type=int, default=224)
    t.add_argument("--threads", type=int)
    t.add_argument("--out", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("--weights", required=True)
    lg.add_argument("--device", default="cpu")
    lg.add_argument("--image-size", type=int, default=224)
    lg.add_argument("--out", required=True)
    lg.add_argument("images", nargs="+")
    r = sub.add_parser("report")
    r.add_argument("work")
    a = ap.parse_args()
    {"weights": cmd_weights, "torch": cmd_torch, "logits": cmd_logits, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
