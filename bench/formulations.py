"""Three ways to train the same network on the bundled digits, side by side at the same CPU budget.

Chapter 4's noise prediction (cosine schedule, min-SNR-5), chapter 11's EDM (preconditioning, log-normal noise
levels) and chapter 12's flow matching (straight paths, velocity target) each train the default `UNet`
(class-conditional, 10% label dropout) with the same `Trainer` on `bundled_mnist('train')`: batch 64, AdamW with
100 warm-up steps, gradient clipping at 1, EMA 0.995 -- for the same wall-clock budget on the same machine, one
after another, interleaved by seed (the seed sets the initial weights and every random draw of training). Every
trained model then draws 500 class-conditional samples (labels at random) scored by chapter 9's protocol
(`evaluate_sampler` with the model's seed: FID and KID against the reference half of the held-out digits, class
accuracy by the bundled classifier), with

- the same sampler for all three: DPM-Solver++(2M), 20 steps on log-SNR timesteps (20 model calls), through each
  formulation's `discretize` -- so the rows differ in training only;
- each formulation's own sampler at about the same number of model calls: chapter 4's with DDIM (20 steps on its
  default 'leading' timesteps), EDM with Heun (10 steps, 19 calls), flow matching with Euler (20 steps).

The background level is the median pixel of a sample, averaged over samples (real digits: -1, black); the
report also gives the control half's scores (real digits: the floor). Every row is one seed, with KID's jackknife
error (`kid_se`), so that formulations trained on the same seeds can be compared seed by seed
(`diffnb.evaluation.paired_difference`); the summary prints mean ± standard deviation over seeds. With `--minutes` the budget is wall-clock,
for an otherwise idle machine. With `--steps` it is a number of optimiser steps: the three share the network, so a
step costs the same in each (each row records its training images/s; `--throughput` measures it alone), and a step
budget is the same CPU budget for all, whatever else the machine is doing. The committed results use steps: 430
and 2,150 steps of batch 64 are two and ten minutes at the 229 images/s of `bench/train_speed.py` on two idle cores.
A step budget also makes the result independent of the device: `--device cuda` runs the same steps on a GPU (in
float32, TF32 off), and the committed tables were made so, one process per seed, the rows merged into one file.
The runs on one CPU thread that they reproduce are kept beside them (`*_cpu.json`: 2 minutes, three seeds;
10 minutes, seed 0):

    python bench/formulations.py --steps 430 --seeds 0 --device cuda --out seed0.json    # and seeds 1, 2
    python bench/formulations.py --steps 2150 --seeds 0 --device cuda --out seed0.json   # and seeds 1, 2
    OMP_NUM_THREADS=1 python bench/formulations.py --steps 430 --seeds 0 1 2 --out bench/results/formulations_2min_cpu.json
    OMP_NUM_THREADS=1 python bench/formulations.py --steps 2150 --seeds 0 --out bench/results/formulations_10min_cpu.json

On one CPU thread a 2,150-step run took 17 to 22 minutes; on one H200 shared by six runs, 81 to 113 seconds.
"""
import argparse, json, platform, time
from pathlib import Path
import torch

def build(name, seed, train, lr):
    "(model, formulation, trainer keyword arguments) of a named variant"
    from diffnb.unet import UNet
    from diffnb.schedules import cosine_schedule
    from diffnb.training import NoisePrediction
    torch.manual_seed(seed)
    if name == 'ddpm': return UNet(n_classes=10), NoisePrediction(cosine_schedule(), 'eps', 5.0), {}
    if name == 'edm':
        from diffnb.edm import EDMPrecond, EDM, data_rms
        return EDMPrecond(UNet(n_classes=10), sigma_data=data_rms(train)), EDM(), {}
    if name == 'flow':
        from diffnb.flow import FlowUNet, FlowMatching
        return FlowUNet(n_classes=10), FlowMatching(), {}
    raise ValueError(name)

OWN = {'ddpm': ('ddim', 20), 'edm': ('heun', 10), 'flow': ('flow-euler', 20)}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, default=2.0, help='training budget of each run (wall-clock)')
    p.add_argument('--steps', type=int, default=None, help='or: a budget in optimiser steps (for a busy machine; see the docstring)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--formulations', nargs='+', default=['ddpm', 'edm', 'flow'])
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--throughput', action='store_true', help='only measure training images/s of each formulation (3 alternating rounds of 20 s)')
    p.add_argument('--device', default='cpu', help="where to train and sample ('cuda' for a GPU: with --steps the budget is the same)")
    p.add_argument('--out', default='bench/results/formulations.json')
    a = p.parse_args()
    if a.device.startswith('cuda'): torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # full float32, as on a CPU
    from diffnb.data import bundled_mnist
    from diffnb.training import Trainer
    from diffnb.sampling import sample
    from diffnb.evaluation import evaluate_sampler, load_classifier
    train, clf, rows = bundled_mnist('train'), load_classifier().to(a.device), []
    if a.throughput:
        speeds = {name: [] for name in a.formulations}
        for rnd in range(3):
            for name in (a.formulations if rnd % 2 == 0 else a.formulations[::-1]):
                model, f, kw = build(name, 0, train, a.lr)
                tr = Trainer(model, f, train, batch_size=64, lr=a.lr, progress=False, device='cpu', **kw)
                tr.fit(steps=5)                                   # warm up
                t0 = time.monotonic(); n0 = tr.step; tr.fit(time_budget=20); speeds[name].append((tr.step - n0) * 64 / (time.monotonic() - t0))
        for name, v in speeds.items(): print(f'{name}: {sorted(v)[1]:.1f} images/s (rounds: {", ".join(f"{x:.1f}" for x in v)})')
        return
    for seed in a.seeds:
        for name in a.formulations:
            model, f, kw = build(name, seed, train, a.lr)
            tr = Trainer(model, f, train, batch_size=64, lr=a.lr, seed=seed, progress=False, device=a.device, **kw)
            t0 = time.monotonic()
            tr.fit(steps=a.steps) if a.steps else tr.fit(time_budget=a.minutes * 60)
            secs = time.monotonic() - t0
            m, s = tr.ema.model.eval(), tr.s
            for label, (sampler, steps) in [('same sampler: DPM-Solver++(2M), 20 steps', ('solver', 20)), ('own sampler', OWN[name])]:
                def make(k, sampler=sampler, steps=steps):
                    g = torch.Generator().manual_seed(k)
                    y = torch.randint(0, 10, (500,), generator=g)
                    t1 = time.monotonic()
                    x = sample(m, s, (500, 1, 28, 28), sampler=sampler, steps=steps, y=y, generator=g)
                    make.secs = time.monotonic() - t1
                    make.background = float(x.flatten(1).median(1).values.mean())
                    return x, y
                r = evaluate_sampler(make, (seed,), clf)
                run = r['runs'][0]
                rows.append(dict(formulation=name, seed=seed, device=str(tr.device), minutes=None if a.steps else a.minutes, budget_steps=a.steps, train_steps=tr.step, train_seconds=round(secs, 1),
                                 images_per_s=round(tr.step * 64 / secs, 1), final_loss=tr.history[-1][1] if tr.history else None,
                                 sampler=sampler, steps=steps, sample_seconds=round(make.secs, 1), background=round(make.background, 4),
                                 fid=run['samples']['fid'], kid=run['samples']['kid'], kid_se=run['samples']['kid_se'],
                                 accuracy=run['samples']['accuracy'], control_fid=run['control']['fid'], control_kid=run['control']['kid'],
                                 control_kid_se=run['control']['kid_se'], control_accuracy=run['control']['accuracy']))
                print(json.dumps(rows[-1]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(minutes=None if a.steps else a.minutes, steps=a.steps, seeds=a.seeds, lr=a.lr, threads=torch.get_num_threads(),
                                           torch=torch.__version__, machine=platform.processor() or platform.machine(), rows=rows), indent=1))
    summarise(rows)

def summarise(rows):
    "Print mean and standard deviation over seeds for each formulation and sampler"
    from collections import defaultdict
    groups = defaultdict(list)
    for r in rows: groups[r['formulation'], r['sampler'], r['steps']].append(r)
    print('| formulation | sampler | steps | train steps | FID | KID x 1000 | accuracy | background | control FID |')
    for (f, smp, k), rs in groups.items():
        ms = lambda key, scale=1: f"{torch.tensor([scale * r[key] for r in rs]).mean():.2f} ± {torch.tensor([scale * r[key] for r in rs]).std():.2f}"
        print(f"| {f} | {smp} | {k} | {sum(r['train_steps'] for r in rs) / len(rs):.0f} | {ms('fid')} | {ms('kid', 1000)} | {ms('accuracy', 100)}% | {ms('background')} | {ms('control_fid')} |")

if __name__ == '__main__': main()
