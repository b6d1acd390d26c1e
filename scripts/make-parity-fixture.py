#!/usr/bin/env python3
"""Parity fixtures for prep's DenseNet, computed by PyTorch + torchvision.

  make-parity-fixture.py tests/fixtures            # the small committed fixture (reduced DenseNet)
  make-parity-fixture.py --full /tmp/dir           # full densenet121 at 224x224 (not committed)

Writes OUT/NAME-weights.safetensors (a torchvision state_dict, num_batches_tracked included, as
torchvision saves it) and OUT/NAME-expected.safetensors holding:
  input          the input batch (N, 3, H, W), f32
  labels         class indices (N,), i64
  logits_eval    model.eval() logits on the input
  loss_step0     cross-entropy in the training configuration below, before the step
  loss_step1     cross-entropy in eval mode after one Adam step
  logits_step1   eval-mode logits after that step
Training configuration (the paper's): everything frozen but features.denseblock4 and the
classifier; frozen modules in eval mode, denseblock4 in train mode; Adam(lr 1e-3, betas 0.9/0.999,
weight_decay 1e-4); one step. The metadata records versions and the architecture.

Needs: torch==2.11.0 torchvision==0.26.0 safetensors (pip).
"""
import argparse
import os

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file


def perturb(model, gen):
    """Non-trivial BatchNorm parameters and statistics, so eval mode is really exercised."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        model.classifier.bias.copy_(0.1 * torch.randn(model.classifier.bias.shape, generator=gen))


def build(args):
    torch.manual_seed(args.seed)
    if args.full:
        model = torchvision.models.densenet121(weights=None)
        name, size, batch, classes = "densenet121", 224, 2, 1000
        spec = "densenet121"
    else:
        model = torchvision.models.DenseNet(
            growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, num_classes=2
        )
        name, size, batch, classes = "densenet-tiny", 40, 4, 2
        spec = "densenet:8,2-2-2-2,16,2"
    gen = torch.Generator().manual_seed(args.seed + 1)
    perturb(model, gen)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.arange(batch) % classes
    return model, name, spec, x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--full", action="store_true", help="full densenet121 at 224x224")
    ap.add_argument("--seed", type=int, default=20200)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model, name, spec, x, y = build(args)
    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(args.out, f"{name}-weights.safetensors"),
              metadata={"arch": spec, "torch": torch.__version__, "torchvision": torchvision.__version__})

    model.eval()
    with torch.no_grad():
        logits_eval = model(x)

    # The paper's fine-tuning set-up, done right: frozen BatchNorm in eval mode, weight decay on.
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith("features.denseblock4.") or n.startswith("classifier.")
    model.eval()
    model.features.denseblock4.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                           lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4)
    opt.zero_grad()
    loss0 = F.cross_entropy(model(x), y)
    loss0.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        logits1 = model(x)
        loss1 = F.cross_entropy(logits1, y)

    expected = {
        "input": x.contiguous(),
        "labels": y.to(torch.int64),
        "logits_eval": logits_eval.contiguous(),
        "loss_step0": loss0.detach().reshape(1),
        "loss_step1": loss1.reshape(1),
        "logits_step1": logits1.contiguous(),
    }
    save_file(expected, os.path.join(args.out, f"{name}-expected.safetensors"),
              metadata={"arch": spec, "torch": torch.__version__, "torchvision": torchvision.__version__})
    print(f"{name}: loss before {loss0.item():.6f}, after one Adam step {loss1.item():.6f}")


if __name__ == "__main__":
    main()
