"""Flow matching, MeanFlow and consistency training, each trained from scratch for the same CPU time, at one to ten network calls.

Three rows change one thing, the training objective: flow matching (chapter 12: `FlowUNet`, `FlowMatching()`),
MeanFlow (chapter 13b: `MeanFlowUNet`, `MeanFlow()`) and improved consistency training (chapter 13c: the U-Net inside
`ConsistencyPrecond`, `ConsistencyTraining()` with its curriculum planned for CONSISTENCY_STEPS steps), each the
default U-Net of the digits (MeanFlow's has one more small embedding, for t - r), class-conditional with 10% label
dropout, batch 64, AdamW at lr 1e-3 with 100 warm-up steps, EMA 0.995 -- and the budget, in CPU seconds of the
training process (`time.process_time`, one thread: what the run costs whatever else the machine does). A MeanFlow
step costs about twice a flow-matching step (its Jacobian-vector product), a consistency step about 1.4 times (a
second forward pass, without gradient), so they make fewer steps. Each model then draws 500 class-conditional
samples per call count -- flow matching with Euler's method and MeanFlow with its jumps, both on an even time grid;
the consistency model with its multistep sampler on Karras levels -- scored by chapter 9's protocol
(`evaluate_sampler` with the run's seed: FID and KID against the reference half of the held-out digits, class
accuracy by the bundled classifier).

    OMP_NUM_THREADS=1 python bench/meanflow.py --cpu-seconds 240 --seeds 0 1 --out a.json &     # one process per core
    OMP_NUM_THREADS=1 python bench/meanflow.py --cpu-seconds 240 --seeds 2 --out b.json
    python bench/meanflow.py --merge a.json b.json --out bench/results/meanflow_2min.json

240 CPU seconds on one thread is two minutes of two cores. `--rows consistency` runs one row, and `--merge` adds its
file to an earlier one.
"""
import argparse, json, platform, time
from pathlib import Path
import torch

ROWS = {'flow': ('flow-euler', (1, 2, 4, 10)), 'meanflow': ('meanflow', (1, 2, 4)), 'consistency': ('consistency', (1, 2, 4))}
GRID = {'flow-euler': dict(t_min=0.0), 'meanflow': {}, 'consistency': {}}   # flow and MeanFlow on the even grid 1, 1 - 1/n, ..., 0
CONSISTENCY_STEPS = 400     # the curriculum's K: about the steps 240 CPU-seconds buy (a step: two forward passes, one backward)

def build(row, seed):
    from diffnb.flow import FlowUNet, FlowMatching
    from diffnb.meanflow import MeanFlowUNet, MeanFlow
    torch.manual_seed(seed)
    if row == 'consistency':
        from diffnb.unet import UNet
        from diffnb.edm import data_rms
        from diffnb.data import bundled_mnist
        from diffnb.consistency import ConsistencyPrecond, ConsistencyTraining
        return ConsistencyPrecond(UNet(n_classes=10), sigma_data=data_rms(bundled_mnist('train'))), ConsistencyTraining(total_steps=CONSISTENCY_STEPS)
    return (FlowUNet(n_classes=10), FlowMatching()) if row == 'flow' else (MeanFlowUNet(n_classes=10), MeanFlow())

def run(row, seed, cpu_seconds, clf):
    "Train a row's model for `cpu_seconds` of CPU time, then sample and score it at each of its call counts"
    from diffnb.data import bundled_mnist
    from diffnb.training import Trainer
    from diffnb.sampling import sample
    from diffnb.evaluation import evaluate_sampler
    model, form = build(row, seed)
    tr = Trainer(model, form, bundled_mnist('train'), batch_size=64, lr=1e-3, warmup=100, seed=seed, progress=False, device='cpu')
    c0, w0 = time.process_time(), time.monotonic()
    while time.process_time() - c0 < cpu_seconds: tr.fit(steps=10)
    secs, wall = time.process_time() - c0, time.monotonic() - w0
    m, s = tr.ema.model.eval(), tr.s
    sampler, calls = ROWS[row]
    out = dict(row=row, seed=seed, params=sum(p.numel() for p in m.parameters()), cpu_seconds=round(secs, 1), wall_seconds=round(wall, 1),
               train_steps=tr.step, cpu_seconds_per_step=round(secs / tr.step, 4), final_loss=tr.history[-1][1], scores=[])
    for n in calls:
        def make(k):
            g = torch.Generator().manual_seed(k)
            y = torch.randint(0, 10, (500,), generator=g)
            return sample(m, s, (500, 1, 28, 28), sampler=sampler, steps=n, y=y, generator=g, **GRID[sampler]), y
        r = evaluate_sampler(make, (seed,), clf)['runs'][0]
        out['scores'].append(dict(sampler=sampler, calls=n, fid=r['samples']['fid'], kid=r['samples']['kid'], kid_se=r['samples']['kid_se'],
                                  accuracy=r['samples']['accuracy'], control_fid=r['control']['fid']))
    return out

def summarise(rows):
    from statistics import mean, stdev
    sd = lambda v: stdev(v) if len(v) > 1 else float('nan')
    print('| row | sampler, calls | steps | FID | KID x 1000 | accuracy |')
    for name, (sampler, calls) in ROWS.items():
        rs = [r for r in rows if r['row'] == name]
        for n in calls:
            sc = [next(q for q in r['scores'] if q['calls'] == n) for r in rs]
            if not sc: continue
            f = lambda k, m=1: f"{mean(m * q[k] for q in sc):.2f} ± {sd([m * q[k] for q in sc]):.2f}"
            print(f"| {name} | {sampler}, {n} | {mean(r['train_steps'] for r in rs):.0f} | {f('fid')} | {f('kid', 1000)} | {f('accuracy', 100)}% |")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cpu-seconds', type=float, default=240.0, help='training budget of each run, in CPU seconds of the process')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    p.add_argument('--merge', nargs='+', help='merge the rows of these result files into --out')
    p.add_argument('--out', default='bench/results/meanflow.json')
    p.add_argument('--note', help='with --merge: a line recording how the merged files were made')
    a = p.parse_args()
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        if len({q['cpu_seconds'] for q in parts}) != 1: raise SystemExit('the files have different CPU budgets')
        rows = sorted((r for q in parts for r in q['rows']), key=lambda r: (list(ROWS).index(r['row']), r['seed']))
        if a.note: parts[0] = dict(parts[0], note=a.note)
        Path(a.out).write_text(json.dumps(dict(parts[0], seeds=sorted({r['seed'] for r in rows}), rows=rows), indent=1)); summarise(rows); return
    from diffnb.evaluation import load_classifier
    clf, rows = load_classifier(), []
    for seed in a.seeds:
        for row in a.rows:
            rows.append(run(row, seed, a.cpu_seconds, clf)); print(json.dumps(rows[-1]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(cpu_seconds=a.cpu_seconds, seeds=a.seeds, threads=torch.get_num_threads(), torch=torch.__version__,
                                           machine=platform.processor() or platform.machine(), rows=rows), indent=1))
    summarise(rows)

if __name__ == '__main__': main()
