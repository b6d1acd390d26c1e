#!/usr/bin/env python3
"""Convert DenseNet-121 checkpoints into the safetensors file `prep train --weights` reads.

  convert-weights.py CHECKPOINT OUT.safetensors [--format auto|arnoweng|reproduce-chexnet|torchvision]
  convert-weights.py --self-test [DIR]

Understands:
  arnoweng      arnoweng/CheXNet model.pth.tar: {'state_dict': ...} saved from DataParallel, names
                'module.densenet121.features.denseblock1.denselayer1.norm.1.weight' (old torchvision
                names norm.1/conv.1/norm.2/conv.2) and the head 'module.densenet121.classifier.0.*'
                (Linear inside Sequential(Linear, Sigmoid)).
  reproduce-chexnet
                jrzech/reproduce-chexnet results/checkpoint: a pickled dict whose 'model' is the
                whole torchvision model (classifier = Sequential(Linear, Sigmoid)); needs torchvision
                to unpickle.
  torchvision   torchvision's densenet121 ImageNet weights (densenet121-a639ec97.pth), which also
                use the old norm.1/conv.1 names, or any state dict with torchvision names.
Output: torchvision state_dict names (features.conv0.weight, ..., classifier.weight/bias), f32,
without num_batches_tracked. Nothing is downloaded: give it the file you fetched yourself.

Needs: torch torchvision safetensors (pip).
"""
import argparse
import os
import re
import sys
import tempfile

import torch
from safetensors.torch import save_file, load_file

OLD_LAYER = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def rename(key):
    """One checkpoint key -> its torchvision name, or None to drop it."""
    for prefix in ("module.", "densenet121.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    m = OLD_LAYER.match(key)
    if m:
        key = m.group(1) + m.group(2)  # norm.1.weight -> norm1.weight
    if key.startswith("classifier.0."):
        key = "classifier." + key[len("classifier.0."):]
    if key.endswith("num_batches_tracked"):
        return None
    return key


def extract_state_dict(obj, fmt):
    """The raw state dict inside whatever the checkpoint pickled."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        if fmt in ("auto", "reproduce-chexnet") and isinstance(obj.get("model"), torch.nn.Module):
            return obj["model"].state_dict()
        if fmt in ("auto", "arnoweng") and isinstance(obj.get("state_dict"), dict):
            return obj["state_dict"]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit(f"unrecognised checkpoint layout (top-level type {type(obj).__name__}; keys "
                     f"{list(obj)[:8] if isinstance(obj, dict) else '-'}); try --format")


def convert_state_dict(sd):
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        name = rename(k)
        if name is None:
            continue
        if name in out:
            raise SystemExit(f"two checkpoint tensors map to {name}")
        out[name] = v.detach().to(torch.float32).contiguous().clone()
    if "features.conv0.weight" not in out or "classifier.weight" not in out:
        raise SystemExit("not a DenseNet checkpoint: no features.conv0.weight / classifier.weight after renaming "
                         f"(first names: {sorted(out)[:5]})")
    return out


def convert(src, dst, fmt="auto"):
    obj = torch.load(src, map_location="cpu", weights_only=False)
    sd = convert_state_dict(extract_state_dict(obj, fmt))
    save_file(sd, dst, metadata={"source": os.path.basename(src), "converted_by": "prep scripts/convert-weights.py"})
    print(f"{dst}: {len(sd)} tensors, classifier {tuple(sd['classifier.weight'].shape)}")
    return sd


def self_test(d):
    """Forge each checkpoint layout from a small torchvision DenseNet and check the round trip."""
    import torchvision
    torch.manual_seed(0)
    ref = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                                      num_classes=14)
    expected = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}

    def old_names(sd, prefix, sequential_head):
        out = {}
        for k, v in sd.items():
            k2 = re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k)
            if sequential_head:
                k2 = k2.replace("classifier.", "classifier.0.")
            out[prefix + k2] = v
        return out

    # arnoweng: DataParallel(CheXNet) whose .densenet121 is the torchvision model.
    arno = {"epoch": 1, "state_dict": old_names(ref.state_dict(), "module.densenet121.", True)}
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in arno["state_dict"]
    assert "module.densenet121.classifier.0.weight" in arno["state_dict"]
    torch.save(arno, os.path.join(d, "model.pth.tar"))
    # reproduce-chexnet: the whole model pickled, classifier = Sequential(Linear, Sigmoid).
    rep = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                                      num_classes=14)
    rep.classifier = torch.nn.Sequential(torch.nn.Linear(rep.classifier.in_features, 14), torch.nn.Sigmoid())
    rep_sd = old_names(ref.state_dict(), "", True)
    rep.load_state_dict({re.sub(r"(denselayer\d+\.(?:norm|conv))\.([12])\.", r"\1\2.", k): v
                         for k, v in rep_sd.items()})
    torch.save({"model": rep, "best_loss": 0.1, "epoch": 3}, os.path.join(d, "checkpoint"))
    # torchvision's ImageNet file: a plain state dict with the old names.
    torch.save(old_names(ref.state_dict(), "", False), os.path.join(d, "densenet121-old.pth"))

    for src in ("model.pth.tar", "checkpoint", "densenet121-old.pth"):
        out = os.path.join(d, src + ".safetensors")
        convert(os.path.join(d, src), out)
        got = load_file(out)
        assert set(got) == set(expected), (src, sorted(set(got) ^ set(expected))[:5])
        for k, v in expected.items():
            assert torch.equal(got[k], v.float()), (src, k)
    print("self-test passed: arnoweng, reproduce-chexnet and torchvision layouts convert to torchvision names")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--format", default="auto", choices=["auto", "arnoweng", "reproduce-chexnet", "torchvision"])
    ap.add_argument("--self-test", action="store_true", help="forge each layout, convert, compare (writes to DIR=src or a temp dir)")
    a = ap.parse_args()
    if a.self_test:
        if a.src:
            os.makedirs(a.src, exist_ok=True)
            self_test(a.src)
        else:
            with tempfile.TemporaryDirectory() as d:
                self_test(d)
        return
    if not a.src or not a.dst:
        ap.error("give CHECKPOINT and OUT.safetensors (or --self-test)")
    if not a.dst.endswith(".safetensors"):
        ap.error("the output must end in .safetensors")
    convert(a.src, a.dst, a.format)


if __name__ == "__main__":
    sys.exit(main())
