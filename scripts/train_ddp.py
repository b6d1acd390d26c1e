#!/usr/bin/env python3
"""Train torchvision's DenseNet-121 with DistributedDataParallel on `prep export` shards.

prep trains on one device (tch has no DistributedDataParallel); for more, export the split bag
as WebDataset shards and let PyTorch's own engine run it:

  prep export bags/split --format webdataset --min-shards 16 --out bags/shards
  torchrun --standalone --nproc_per_node=4 scripts/train_ddp.py --shards bags/shards \\
      --weights chexnet.safetensors --out runs/ddp

Same recipe as `prep train`: ImageNet normalisation; train transform RandomResizedCrop(size,
scale=(0.08, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip + ToTensor + Normalize; val transform
Resize(size) + CenterCrop(size) + ToTensor + Normalize; Adam (lr 1e-3, weight decay 1e-4);
only --unfreeze stages (default denseblock4) and the classifier train, and frozen stages'
BatchNorm stays in eval mode. Weights in and out are safetensors with torchvision names
(what `prep train --weights` reads and writes, see scripts/convert-weights.py); a classifier
of another size starts fresh.

Backend: nccl when CUDA is available, else gloo. Shards are split across ranks
(webdataset.split_by_node) and then across loader workers (split_by_worker), so every rank sees
its own samples; export with --min-shards >= ranks x workers. Ranks with fewer batches are
handled by DDP's Join. Rank 0 writes OUT/best.safetensors (best val accuracy), OUT/metrics.json;
--log-keys writes the sample keys each rank saw (OUT/keys-<split>-rank<R>-epoch<E>.txt).

Needs torch, torchvision, webdataset 1.0, safetensors (scripts/setup-python.sh installs them).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
import webdataset as wds
from safetensors.torch import load_file, save_file
from torchvision import transforms as T

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
STAGES = ["conv0", "denseblock1", "transition1", "denseblock2", "transition2",
          "denseblock3", "transition3", "denseblock4", "norm5"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="bag written by `prep export --format webdataset`")
    p.add_argument("--out", required=True, help="output folder (rank 0 writes it)")
    p.add_argument("--weights", help="safetensors with torchvision names to start from")
    p.add_argument("--arch", default="densenet121",
                   help="densenet121, or densenet:GROWTH,B1-B2-..,INIT,BN_SIZE as prep train --arch")
    p.add_argument("--unfreeze", default="denseblock4",
                   help="stages that train (comma-separated), all, or none; the classifier always trains")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2, help="data loader workers per rank")
    p.add_argument("--shuffle-buffer", type=int, default=1000, help="samples shuffled in memory (train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batches", type=int, default=0, help="stop an epoch after this many batches per rank (0: all)")
    p.add_argument("--log-keys", action="store_true", help="write the sample keys each rank saw")
    p.add_argument("--no-augment", action="store_true", help="validation transform for training too")
    return p.parse_args(argv)


def build_model(arch, num_classes):
    if arch == "densenet121":
        return torchvision.models.densenet121(weights=None, num_classes=num_classes)
    if arch.startswith("densenet:"):
        growth, blocks, init, bn = arch[len("densenet:"):].split(",")
        return torchvision.models.DenseNet(
            growth_rate=int(growth), block_config=tuple(int(b) for b in blocks.split("-")),
            num_init_features=int(init), bn_size=int(bn), num_classes=num_classes)
    raise SystemExit(f"--arch {arch!r}: densenet121 or densenet:GROWTH,B1-B2-..,INIT,BN_SIZE")


def load_weights(model, path):
    """Load by name; a classifier of another size (or none) starts fresh, like prep train."""
    sd = load_file(path)
    own = model.state_dict()
    head_ok = all(k in sd and sd[k].shape == own[k].shape for k in ("classifier.weight", "classifier.bias"))
    keep = {k: v for k, v in sd.items() if not (k.startswith("classifier.") and not head_ok)}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")]
    if missing:
        raise SystemExit(f"{path}: missing tensors {missing[:5]}...")
    return head_ok


def stage_of(name):
    """prep's stages: features.<stage>.* (conv0 and norm0 are one stage), else the classifier."""
    if not name.startswith("features."):
        return None
    first = name.split(".")[1]
    return "conv0" if first in ("conv0", "norm0") else first


def trainable_stages(spec):
    if spec == "all":
        return set(STAGES)
    if spec in ("none", ""):
        return set()
    want = {s.strip() for s in spec.split(",") if s.strip()}
    bad = want - set(STAGES)
    if bad:
        raise SystemExit(f"--unfreeze: no stage {sorted(bad)}; stages are {', '.join(STAGES)}")
    return want


def freeze(model, train_stages):
    for name, p in model.named_parameters():
        st = stage_of(name)
        p.requires_grad_(st is None or st in train_stages)


def frozen_bn_eval(model, train_stages):
    """Frozen stages keep their BatchNorm statistics: eval mode inside model.train()."""
    for name, m in model.features.named_children():
        st = "conv0" if name in ("conv0", "norm0") else name
        if st not in train_stages:
            m.eval()


def transforms(size, train):
    if train:
        return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                          T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def shard_urls(bag, split):
    """Shard paths of a split, from the export's wids index data/<split>.json."""
    index = os.path.join(bag, "data", f"{split}.json")
    if not os.path.exists(index):
        return None, 0
    with open(index) as f:
        idx = json.load(f)
    if idx.get("__kind__") != "wids-shard-index-v1":
        raise SystemExit(f"{index}: not a wids shard index")
    urls = [os.path.join(bag, "data", s["url"]) for s in idx["shardlist"]]
    return urls, sum(s["nsamples"] for s in idx["shardlist"])


def loader(urls, size, train, augment, batch_size, workers, buffer, seed, epoch):
    tf = transforms(size, train and augment)
    stages = [wds.SimpleShardList(urls)]
    if train:
        stages.append(wds.shuffle(len(urls), seed=seed + epoch))  # shard order per epoch
    stages += [wds.split_by_node, wds.split_by_worker, wds.tarfile_to_samples()]
    if train and buffer > 1:
        stages.append(wds.shuffle(buffer, seed=seed + epoch))
    stages += [
        wds.decode("pil"),
        wds.to_tuple("png;jpg;jpeg", "cls", "__key__"),
        wds.map_tuple(lambda im: tf(im.convert("RGB")), int, str),
        wds.batched(batch_size, partial=True),
    ]
    ds = wds.DataPipeline(*stages)
    return wds.WebLoader(ds, batch_size=None, num_workers=workers,
                         persistent_workers=False)


def main(argv=None):
    a = parse_args(argv)
    cuda = torch.cuda.is_available()
    # Under Ray Train's TorchTrainer the process group already exists: join it.
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(a.seed)

    with open(os.path.join(a.shards, "data", "provenance.json")) as f:
        classes = json.load(f)["parameters"]["classes"]
    train_urls, n_train = shard_urls(a.shards, "train")
    val_urls, n_val = shard_urls(a.shards, "val")
    if not train_urls:
        raise SystemExit(f"{a.shards}: no train shards (data/train.json)")
    for name, urls in (("train", train_urls), ("val", val_urls or [])):
        if urls and len(urls) < world * max(a.workers, 1) and rank == 0:
            print(f"warning: {name} has {len(urls)} shard(s) for {world} rank(s) x {a.workers} worker(s): "
                  f"some get none (export with --min-shards {world * max(a.workers, 1)})", file=sys.stderr)

    model = build_model(a.arch, len(classes))
    if a.weights:
        head_ok = load_weights(model, a.weights)
        if rank == 0 and not head_ok:
            print("the weights' classifier does not fit these classes: it starts fresh", file=sys.stderr)
    stages = trainable_stages(a.unfreeze)
    freeze(model, stages)
    model.to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local] if cuda else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=a.lr, weight_decay=a.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    os.makedirs(a.out, exist_ok=True) if rank == 0 else None

    history, best = [], -1.0
    for epoch in range(a.epochs):
        t0 = time.time()
        ddp.train()
        frozen_bn_eval(model, stages)
        seen, tot_loss, n = [], 0.0, 0
        dl = loader(train_urls, a.image_size, True, not a.no_augment, a.batch_size, a.workers,
                    a.shuffle_buffer, a.seed, epoch)
        with torch.distributed.algorithms.join.Join([ddp]):
            for b, (x, y, keys) in enumerate(dl):
                if a.max_batches and b >= a.max_batches:
                    break
                x, y = x.to(device), torch.as_tensor(y).to(device)
                opt.zero_grad()
                loss = loss_fn(ddp(x), y)
                loss.backward()
                opt.step()
                tot_loss += loss.item() * len(keys)
                n += len(keys)
                seen += list(keys)
        stats = torch.tensor([tot_loss, n], dtype=torch.float64, device=device)
        dist.all_reduce(stats)
        correct = total = 0
        if val_urls:
            ddp.eval()
            with torch.no_grad():
                for x, y, keys in loader(val_urls, a.image_size, False, False, a.batch_size,
                                         a.workers, 0, a.seed, epoch):
                    pred = model(x.to(device)).argmax(1).cpu()
                    correct += int((pred == torch.as_tensor(y)).sum())
                    total += len(keys)
        acc = torch.tensor([correct, total], dtype=torch.float64, device=device)
        dist.all_reduce(acc)
        val_acc = float(acc[0] / acc[1]) if acc[1] > 0 else float("nan")
        if a.log_keys:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, f"keys-train-rank{rank}-epoch{epoch}.txt"), "w") as f:
                f.write("".join(k + "\n" for k in seen))
        row = {"epoch": epoch + 1, "train_loss": float(stats[0] / max(stats[1], 1)),
               "train_samples": int(stats[1]), "val_accuracy": val_acc, "val_samples": int(acc[1]),
               "seconds": round(time.time() - t0, 3)}
        history.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
            if not math.isnan(val_acc) and val_acc > best or best < 0:
                best = val_acc if not math.isnan(val_acc) else best
                sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                save_file(sd, os.path.join(a.out, "best.safetensors"))
    if rank == 0:
        with open(os.path.join(a.out, "metrics.json"), "w") as f:
            json.dump({"classes": classes, "world_size": world, "backend": dist.get_backend(),
                       "train_samples": n_train, "val_samples": n_val, "epochs": history,
                       "best_val_accuracy": best, "unfreeze": sorted(stages),
                       "transforms": {"train": "RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize",
                                      "val": "Resize, CenterCrop, ToTensor, Normalize"}}, f, indent=1)
    dist.barrier()
    if own_group:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
