"""Reflow the bundled teacher on its own ODE, then distil it exactly as the shipped student was distilled.

Chapter 13c's table found reflow (Liu et al.) the best route to few-call digits from chapter 12's flow model, ahead of
both distillations. This script asks whether the same holds for the bundled noise-prediction teacher, the teacher of
`mnist-fast`, changing one thing in the shipped student's recipe: the teacher it distils.

1. `pairs`: PAIRS (noise z, sample x) pairs from the bundled teacher -- DPM-Solver++(2M) with 10 steps started at
   x_T = z (the sampler and steps chapter 9 scores it with), labels balanced.
2. `reflow`: REFLOW_STEPS steps of the teacher's own loss (noise prediction, min-SNR weighting) on those pairs, starting
   from its weights: the noise of each training example is its sample's partner, so the model learns the ODE's coupling
   instead of a random one (batch 64, AdamW 2e-4, 100 warm-up steps, EMA 0.995, label dropout 0.1: chapter 13c's reflow).
   In the teacher's variables x_t / sqrt(alpha_bar) and sigma = sqrt(1 - alpha_bar) / sqrt(alpha_bar), every pair's path
   is a straight line, which DDIM follows exactly: reflow straightens the ODE that DDIM and the distillation integrate.
3. `distill`: the reflowed model through `diffnb_distill` with its defaults, which are the shipped student's recipe
   (rounds 8, 4, 2, 1 of 1,000 steps, batch 64, AdamW 3e-4, 50 warm-up steps, EMA 0.995) on the training digits.
4. `score`: `bench/fast_sampling.py` with the reflowed student as the candidate (the shipped student, the teacher and
   the candidate timed side by side and scored by chapter 9's protocol on the same seeds); and this script scores the
   reflowed model itself (DDIM at 4 and 8 steps evenly spaced in log-SNR, the solver at 4 and 10) beside the teacher the same way.

    python bench/reflow_student.py pairs                        # two threads (4.8 min on the machine of the results)
    python bench/reflow_student.py reflow                       # 11.5 min
    OMP_NUM_THREADS=2 python bench/reflow_student.py distill    # 41.3 min (the shipped student: 61 min on one thread)
    python bench/reflow_student.py score                        # writes bench/results/reflow_student.json
    python bench/fast_sampling.py --candidate runs/reflow-student/distill/student.pt --candidate-name "reflowed student" \\
        --out bench/results/fast_sampling_reflow.json

The same pairs and reflow, but each pair's sample made with 20 solver steps instead of 10 (the same noise, labels and
training draws; the pairs took 27 min wall on two threads at low priority beside another job), scored the same way:

    python bench/reflow_student.py pairs --runs runs/reflow-student-20 --solver-steps 20
    python bench/reflow_student.py reflow --runs runs/reflow-student-20
    python bench/reflow_student.py score --runs runs/reflow-student-20 --out bench/results/reflow_student_20.json

Each stage's CPU seconds (user + system, all threads) and wall-clock seconds are recorded in runs/reflow-student/cost.json,
and copied into the scores' file.
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
PAIRS, REFLOW_STEPS, SOLVER_STEPS = 12000, 2000, 10

def _cost(runs:Path, stage:str, **info):
    "Record a stage's cost in runs/cost.json"
    f = runs/'cost.json'
    d = json.loads(f.read_text()) if f.exists() else {}
    d[stage] = info
    f.write_text(json.dumps(d, indent=1))

def _cpu()->float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def pairs(runs:Path)->Path:
    "The teacher's (noise, sample) pairs, labels balanced; kept and reused"
    dest = runs/'pairs.pt'
    if dest.exists(): return dest
    from diffnb.pretrained import load_pretrained
    from diffnb.sampling import sample
    teacher, s = load_pretrained()
    g = torch.Generator().manual_seed(1234)
    y = torch.arange(PAIRS) % 10
    y = y[torch.randperm(PAIRS, generator=g)]
    zs, xs, c0, w0 = [], [], _cpu(), time.time()
    with torch.inference_mode():
        for k in range(0, PAIRS, 500):
            z = torch.randn((min(500, PAIRS - k), 1, 28, 28), generator=g)
            x = sample(teacher, s, tuple(z.shape), sampler='solver', steps=SOLVER_STEPS, y=y[k:k + 500], x_T=z)
            zs.append(z); xs.append(x.clamp(-1, 1))
            print(f'pairs {k + len(z)}/{PAIRS}', flush=True)
    torch.save(dict(z=torch.cat(zs), x=torch.cat(xs), y=y), dest)
    _cost(runs, 'pairs', cpu_seconds=round(_cpu() - c0, 1), wall_seconds=round(time.time() - w0, 1), threads=torch.get_num_threads(),
          teacher_calls=SOLVER_STEPS * PAIRS, pairs=PAIRS, sampler=f'DPM-Solver++(2M), {SOLVER_STEPS} steps')
    return dest

def reflow(runs:Path)->Path:
    "REFLOW_STEPS steps of the teacher's own loss on its pairs, from its weights"
    dest = runs/'reflow.pt'
    if dest.exists(): return dest
    from one_step import train_on_pairs
    from diffnb.pretrained import load_pretrained
    from diffnb.training import Trainer
    from diffnb.data import TensorImages
    p = torch.load(pairs(runs))
    teacher, s = load_pretrained()
    data = TensorImages(p['x'], p['y'], name='reflow pairs of the bundled MNIST model')
    tr = Trainer(teacher.train(), s, data, batch_size=64, lr=2e-4, warmup=100, ema_decay=0.995, seed=0,
                 ckpt_path=runs/'reflow_run.pt', progress=False)
    c0, w0 = _cpu(), time.time()
    train_on_pairs(tr, p, REFLOW_STEPS)
    tr.elapsed = time.time() - w0
    tr.save()
    _cost(runs, 'reflow', cpu_seconds=round(_cpu() - c0, 1), wall_seconds=round(time.time() - w0, 1), threads=torch.get_num_threads(),
          steps=REFLOW_STEPS, batch=64)
    os.replace(runs/'reflow_run.pt', dest)
    return dest

def distill(runs:Path)->int:
    "The shipped student's recipe (diffnb_distill's defaults) with the reflowed teacher"
    cmd = ['diffnb_distill', str(reflow(runs)), '--data', 'bundled:train', '--out', str(runs/'distill'), '--resume', '--no-progress']
    before, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    rc = subprocess.call(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _cost(runs, 'distill', command=' '.join(cmd), threads=int(os.environ.get('OMP_NUM_THREADS', '0')) or None, rc=rc,
          cpu_seconds=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1), wall_seconds=round(time.time() - w0, 1))
    return rc

def score(runs:Path, seeds, dest:Path)->dict:
    "The reflowed model beside the teacher with the same samplers, by chapter 9's protocol (the same seeds, labels and noise)"
    from diffnb.evaluation import evaluate_sampler, load_classifier, paired_difference
    from diffnb.pretrained import load_pretrained
    from diffnb.training import load_model
    from diffnb.sampling import sample
    clf = load_classifier()
    teacher, s = load_pretrained()
    reflowed, s_r = load_model(runs/'reflow.pt')
    cases = {}
    for who, m, sch in (('teacher', teacher, s), ('reflowed teacher', reflowed, s_r)):
        for n in (4, 8):
            cases[f'{who}, DDIM (log-SNR), {n}'] = lambda B, y, g, m=m, sch=sch, n=n: sample(m, sch, (B, 1, 28, 28), sampler='ddim', steps=n,
                                                                                       spacing='logsnr', y=y, generator=g)
        for n in (4, 10):
            cases[f'{who}, DPM-Solver++(2M), {n}'] = lambda B, y, g, m=m, sch=sch, n=n: sample(m, sch, (B, 1, 28, 28), sampler='solver', steps=n,
                                                                                         y=y, generator=g)
    def make(f):                                     # as bench/fast_sampling.py: labels from the seed's generator, then the noise
        def m(seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 10, (500,), generator=g)
            with torch.inference_mode(): return f(500, y, g), y
        return m
    rows, control = {}, None
    for name, f in cases.items():
        r = evaluate_sampler(make(f), tuple(seeds), clf)
        rows[name] = {**{k: r['samples'][k] for k in ('fid', 'kid', 'accuracy')},
                      'per_seed': {k: [run['samples'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}}
        control = {k: r['control'][k] for k in ('fid', 'kid', 'accuracy')}
        print(f"{name}: FID {r['samples']['fid'][0]:.2f} ± {r['samples']['fid'][1]:.2f}, accuracy {r['samples']['accuracy'][0]:.1%}", flush=True)
    for name, r in rows.items():                     # paired: the reflowed model against the teacher with the same sampler
        if name.startswith('reflowed'):
            r['fid_minus_teacher'] = list(paired_difference(r['per_seed']['fid'], rows[name.replace('reflowed teacher', 'teacher')]['per_seed']['fid']))
    out = dict(rows=rows, control=control, seeds=list(seeds), cost=json.loads((runs/'cost.json').read_text()),
               pairs=PAIRS, reflow_steps=REFLOW_STEPS, machine=platform.processor() or platform.machine(), torch=torch.__version__,
               date=time.strftime('%Y-%m-%d'))
    dest.write_text(json.dumps(out, indent=1))
    print('| sampler | FID | FID - teacher (paired) | accuracy |\n|---|---:|---:|---:|')
    for name, r in rows.items():
        d = r.get('fid_minus_teacher')
        print(f"| {name} | {r['fid'][0]:.2f} ± {r['fid'][1]:.2f} | {f'{d[0]:+.2f} ± {d[1]:.2f}' if d else ''} | {r['accuracy'][0]:.1%} |")
    print(f'wrote {dest}')
    return out

def main():
    global SOLVER_STEPS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('pairs', 'reflow', 'distill', 'score'))
    p.add_argument('--runs', default=str(ROOT/'runs/reflow-student'), help='where the runs are kept')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--threads', type=int, default=2, help='torch threads of this process (distill: set OMP_NUM_THREADS)')
    p.add_argument('--solver-steps', type=int, default=SOLVER_STEPS, help="pairs: the teacher's solver steps per pair")
    p.add_argument('--out', default=str(ROOT/'bench/results/reflow_student.json'), help='score: where the scores go')
    a = p.parse_args()
    SOLVER_STEPS = a.solver_steps
    runs = Path(a.runs); runs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    if a.part == 'pairs': print(pairs(runs))
    elif a.part == 'reflow': print(reflow(runs))
    elif a.part == 'distill': sys.exit(distill(runs))
    else: score(runs, a.seeds, Path(a.out))

if __name__ == '__main__':
    main()
