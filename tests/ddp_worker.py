"""Trains a small model for a few steps; run by test_distributed.py, under torchrun or as one plain process.

Each process saves its own weights to OUT/rank{R}.weights so the test can compare them."""
import sys
from pathlib import Path
import torch
from diffnb.data import bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.unet import UNet
from diffnb.training import Trainer, distributed_env

out = Path(sys.argv[1])
d = bundled_mnist()
data = TensorImages(d.images[:256], d.labels[:256], d.classes, 'small')
torch.manual_seed(0)
model = UNet(channels=(8, 16), attn_levels=(1,), heads=2, n_classes=10)
tr = Trainer(model, cosine_schedule(T=200), data, batch_size=32, lr=3e-3, warmup=2, device='cpu', progress=False,
             ckpt_path=out/'checkpoint.pt', ckpt_every=4)
losses, first_grads = [], None
for _ in range(6):                       # one step at a time, to record every step's loss
    tr.fit(steps=1)
    losses.append(tr.history[-1][1])
    if first_grads is None: first_grads = {n: p.grad.clone() for n, p in tr.model.named_parameters()}
rank = distributed_env()[0]
torch.save({'model': tr.model.state_dict(), 'ema': tr.ema.model.state_dict(), 'losses': losses, 'grads': first_grads, 'world': tr.world},
           out/f'rank{rank}.weights')
