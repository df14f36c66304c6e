"""The samplers' own cost per step, against a bare forward pass of the same model and batch, measured side by side.

A sampler makes one model call per step; everything else it does (turning the output into noise and clean-image
estimates, clipping, the update, fresh noise) is overhead, which should stay under 5% of the model call. For the
bundled model at batch 64, each round times: a bare model forward (inference mode), then DDPM, DDIM (eta 0 and 1)
and DPM-Solver++(2M), each for a fixed number of steps; the medians over rounds are compared.

    python bench/sampler_overhead.py
    python bench/sampler_overhead.py --device cuda --batch 256
"""
import argparse, statistics, time
import torch

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=64); p.add_argument('--steps', type=int, default=50)
    p.add_argument('--rounds', type=int, default=5); p.add_argument('--device', default='cpu')
    a = p.parse_args()
    from diffnb.pretrained import load_pretrained
    from diffnb.ddpm import ddpm_sample
    from diffnb.ddim import ddim_sample, dpm_solver_sample
    from diffnb.schedules import cosine_schedule
    dev = torch.device(a.device)
    model, s = load_pretrained(device=dev)
    B, k = a.batch, a.steps
    shape, y = (B, 1, 28, 28), torch.arange(B, device=dev) % 10
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    s_ddpm = cosine_schedule(T=k)            # DDPM takes all T steps: a T=k schedule gives k steps
    def bare():
        x = torch.randn(shape, device=dev)
        with torch.inference_mode():
            for t in range(k): model(x, torch.full((B,), t, device=dev), y)
    cases = {'bare forward': bare,
             'DDPM': lambda: ddpm_sample(model, s_ddpm, shape, y=y),
             'DDIM eta=0': lambda: ddim_sample(model, s, shape, steps=k, y=y),
             'DDIM eta=1': lambda: ddim_sample(model, s, shape, steps=k, eta=1.0, y=y),
             'DPM-Solver++(2M)': lambda: dpm_solver_sample(model, s, shape, steps=k, y=y)}
    times = {c: [] for c in cases}
    for f in cases.values(): f()                # warm-up
    for r in range(a.rounds):
        for c, f in cases.items():
            sync(); t0 = time.perf_counter(); f(); sync()
            times[c].append((time.perf_counter() - t0) / k * 1000)
    base = statistics.median(times['bare forward'])
    print(f'batch {B}, {k} steps, {a.rounds} rounds, device {dev}, torch threads {torch.get_num_threads()}')
    print('| | ms per step (median) | overhead against the bare forward |')
    print('|---|---:|---:|')
    for c in cases:
        m = statistics.median(times[c])
        print(f'| {c} | {m:.2f} | {"" if c == "bare forward" else f"{(m - base) / base:+.1%}"} |')

if __name__ == '__main__': main()
