"""Cost of the default UNet and DiT on 1x28x28 digits, and adaLN-Zero against a plain init of the modulation layers.

Writes one JSON file (default bench/results/dit.json, which chapter 12c loads) with
- `cost`: for `UNet(n_classes=10)`, `DiT(n_classes=10)` and two other DiT sizes: parameters, GFLOPs per image of a
  forward pass and of a training step (forward + backward, counted by torch.utils.flop_counter.FlopCounterMode:
  matrix products and convolutions, 2 FLOPs per multiply-add), and training images per second (batch 64, AdamW,
  one thread), the median of `--rounds` rounds taken in turn (A, B, C, A, B, C, ...) because the machine is shared;
- `curves`: the loss history of the default DiT trained as a flow (FlowMatching) with `Trainer` on the bundled
  training digits, `--steps` steps of batch 64, the same seed, once with adaLN-Zero and once with a plain init.

    OMP_NUM_THREADS=1 python bench/dit.py                 # about twelve minutes on one core
    OMP_NUM_THREADS=1 python bench/dit.py --steps 50 --rounds 1 --out runs/dit.json   # a quick look
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path
import torch

def networks():
    from diffnb.unet import UNet
    from diffnb.dit import DiT
    return {'UNet() (default)': lambda: UNet(n_classes=10),
            'DiT() (default: patch 4, width 128, depth 6)': lambda: DiT(n_classes=10),
            'DiT(patch=4, width=192, depth=6)': lambda: DiT(n_classes=10, width=192, heads=6),
            'DiT(patch=2, width=128, depth=6)': lambda: DiT(n_classes=10, patch=2)}

def flops(net, batch=8):
    "GFLOPs per image: (forward, forward + backward)"
    from torch.utils.flop_counter import FlopCounterMode
    x, t, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad(): net(x, t, y)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc: (net(x, t, y) - x).pow(2).mean().backward()
    net.zero_grad(set_to_none=True)
    return fwd / batch / 1e9, fc.get_total_flops() / batch / 1e9

def throughput(net, batch, steps=8):
    "Training images per second: forward, backward and an AdamW step, after two warm-up steps"
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 1000, (batch,), generator=g), torch.randint(0, 10, (batch,), generator=g)
    def step():
        opt.zero_grad(set_to_none=True); (net(x, t, y) - x).pow(2).mean().backward(); opt.step()
    for _ in range(2): step()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    return batch * steps / (time.perf_counter() - t0)

def cost(rounds, batch):
    builders, rows = networks(), []
    nets = {name: b() for name, b in builders.items()}
    speeds = {name: [] for name in nets}
    for _ in range(rounds):
        for name, net in nets.items(): speeds[name].append(throughput(net, batch))
    for name, net in nets.items():
        fwd, train = flops(net)
        tokens = (28 // net.patch) ** 2 if hasattr(net, 'patch') else None
        rows.append(dict(name=name, params=sum(p.numel() for p in net.parameters()), tokens=tokens, gflop_fwd=fwd,
                         gflop_train=train, img_per_s=statistics.median(speeds[name]), img_per_s_all=speeds[name]))
        print(f"{name}: {rows[-1]['params']:,} params, {fwd:.3f} / {train:.3f} GFLOP, {rows[-1]['img_per_s']:.0f} img/s", flush=True)
    return rows

def curve(adaln_zero, steps, lr):
    from diffnb.data import bundled_mnist
    from diffnb.dit import DiT
    from diffnb.flow import FlowMatching
    from diffnb.training import Trainer
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tr = Trainer(DiT(n_classes=10, prediction='flow', adaln_zero=adaln_zero), FlowMatching(), bundled_mnist('train'),
                 lr=lr, warmup=50, seed=0, progress=False, device='cpu').fit(steps=steps)
    print(f'adaln_zero={adaln_zero}: loss {tr.history[0][1]:.3f} -> {tr.history[-1][1]:.3f} in {time.perf_counter() - t0:.0f} s', flush=True)
    return dict(adaln_zero=adaln_zero, history=[list(map(float, h[:2])) for h in tr.history], seconds=time.perf_counter() - t0)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'dit.json'))
    p.add_argument('--steps', type=int, default=300, help='training steps of each loss curve')
    p.add_argument('--rounds', type=int, default=3, help='rounds of the throughput measurement')
    p.add_argument('--lr', type=float, default=1e-3)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = dict(machine=f'{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} thread, '
                       f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}',
               batch=64, rounds=a.rounds, steps=a.steps, lr=a.lr, cost=cost(a.rounds, 64))
    out['curves'] = [curve(z, a.steps, a.lr) for z in (True, False)]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print('wrote', a.out)

if __name__ == '__main__': main()
