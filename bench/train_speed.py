"""Training throughput of the diffnb default U-Net against a diffusers UNet2DModel, measured side by side.

For each model, at batch 64 on 1x28x28 images: training images per second (forward, backward, AdamW step),
forward+backward FLOPs per image (counted by torch.utils.flop_counter), the GFLOP/s this achieves against a large
fp32 matrix product on the same machine, and peak memory (resident set on the CPU, allocated memory on a GPU).
Each model is measured in its own subprocess (for a clean memory peak), alternating A, B, A, B, ... and the
medians are compared, because these machines are noisy.

    python bench/train_speed.py            # 3 rounds
    python bench/train_speed.py --rounds 5 --device cuda
"""
import argparse, json, statistics, subprocess, sys, time

MODELS = ('diffnb', 'diffusers')

def build(name):
    import torch
    if name == 'diffnb':
        from diffnb.unet import UNet
        net = UNet(n_classes=10)
        return net, lambda x, t, y: net(x, t, y)
    from diffusers import UNet2DModel
    net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=2,
                      down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
                      up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'))
    return net, lambda x, t, y: net(x, t).sample

def measure(name, device, batch, seconds):
    "Run in a subprocess: print a JSON line with this model's figures"
    import torch, resource
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    net, f = build(name)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device); t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    def step():
        loss = (f(x, t, y) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    with FlopCounterMode(display=False) as fc:
        loss = (f(x, t, y) - x).pow(2).mean(); loss.backward()
    flops = fc.get_total_flops() / batch
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for _ in range(3): step()
    sync(); n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds: step(); n += 1
    sync(); ips = n * batch / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith('cuda') else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(model=name, params=sum(p.numel() for p in net.parameters()), images_per_s=ips,
                          fwd_bwd_gflop_per_image=flops / 1e9, achieved_gflops=ips * flops / 1e9, peak_mib=peak)))

def matmul_gflops(device, n=2048, seconds=3.0):
    import torch
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    a @ b; sync(); k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds: a @ b; k += 1
    sync()
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=3); p.add_argument('--seconds', type=float, default=20.0)
    p.add_argument('--batch', type=int, default=64); p.add_argument('--device', default='cpu')
    p.add_argument('--_one', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._one: return measure(a._one, a.device, a.batch, a.seconds)
    runs = {m: [] for m in MODELS}
    peak_gflops = []
    for r in range(a.rounds):
        peak_gflops.append(matmul_gflops(a.device))
        for m in (MODELS if r % 2 == 0 else MODELS[::-1]):
            out = subprocess.run([sys.executable, __file__, '--_one', m, '--device', a.device, '--batch', str(a.batch),
                                  '--seconds', str(a.seconds)], capture_output=True, text=True, check=True)
            runs[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f'round {r + 1}: {m:9s} {runs[m][-1]["images_per_s"]:7.1f} images/s', flush=True)
    med = lambda m, k: statistics.median(x[k] for x in runs[m])
    mm = statistics.median(peak_gflops)
    print(f'\nfp32 matrix product (2048 x 2048) on {a.device}: {mm:.0f} GFLOP/s (median of {a.rounds})')
    print('| model | parameters | images/s | fwd+bwd GFLOP/image | achieved GFLOP/s | of matmul peak | peak memory (MiB) |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for m in MODELS:
        print(f'| {m} | {runs[m][0]["params"] / 1e6:.2f} M | {med(m, "images_per_s"):.1f} | {med(m, "fwd_bwd_gflop_per_image"):.3f} | '
              f'{med(m, "achieved_gflops"):.1f} | {med(m, "achieved_gflops") / mm:.0%} | {med(m, "peak_mib"):.0f} |')
    ratios = [a_['images_per_s'] / b_['images_per_s'] for a_, b_ in zip(runs['diffnb'], runs['diffusers'])]
    print(f'\ndiffnb / diffusers training images/s, per round: {", ".join(f"{r:.2f}" for r in ratios)}; '
          f'median {statistics.median(ratios):.2f}x (target: at least 2x)')

if __name__ == '__main__': main()
