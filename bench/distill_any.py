"""Progressive distillation of a flow-matching and an EDM teacher (chapter 13's "Any teacher"), scored like chapter 13.

The teachers are the models chapters 11 and 12 trained on the training part of the bundled digits
(`nbs/results/11_edm_digits.pt`, `nbs/results/12_flow_digits.pt`). Each is distilled with the command a user runs,
`diffnb_distill TEACHER --rounds 4,2,1 --steps 500` (batch 64, learning rate 3e-4, EMA 0.995, seed 0, one CPU
thread), into students for 4, 2 and 1 network calls. Then every row is scored by chapter 9's protocol
(`evaluate_sampler`: 500 class-conditional samples per seed, labels drawn at random, FID and KID in the bundled
classifier's features against the reference half of the held-out digits, three seeds; the same seeds, labels and
starting noise for every row):

- the teacher with its own sampler at its default number of calls (flow: Euler, 50; EDM: Heun, 18 steps, 35 calls);
- the teacher with its own Euler method at 8 calls (flow: diffusers' grid; EDM: Karras sigmas);
- the teacher on the students' grid at 32, 8, 4, 2 and 1 calls: DDIM on its `ScheduleView`, which is its own Euler
  method at the grid's times (8 calls is what the first round's students learned from);
- the students at 4, 2 and 1 calls.

    python bench/distill_any.py train flow      # about 30 min of one CPU thread; runs/distill-any/flow
    python bench/distill_any.py train edm
    python bench/distill_any.py score flow      # writes bench/results/distill_any_flow.json
    python bench/distill_any.py score edm
"""
import argparse, json, platform, subprocess, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {'flow': ROOT/'nbs/results/12_flow_digits.pt', 'edm': ROOT/'nbs/results/11_edm_digits.pt'}
ROUNDS, STEPS = '4,2,1', 500

def command(kind:str, out:Path)->list:
    "The distillation, as a user runs it"
    return ['diffnb_distill', str(TEACHERS[kind]), '--rounds', ROUNDS, '--steps', str(STEPS), '--out', str(out), '--resume',
            '--no-progress']

def rows(kind:str, out:Path)->dict:
    "name -> fn(generator, labels): every way of sampling that is scored"
    from diffnb.training import load_model
    from diffnb.sampling import sample
    from diffnb.distill import schedule_teacher, distilled_sample
    teacher, s_t = load_model(TEACHERS[kind])
    view, s = schedule_teacher(teacher, s_t)
    student, s_st = load_model(out/'student.pt')
    shape = (500, 1, 28, 28)
    own = ('Euler', 50, 'flow-euler', 50) if kind == 'flow' else ('Heun', 35, 'heun', 18)
    fns = {f'teacher, {own[0]}, {own[1]} calls': lambda g, y: sample(teacher, s_t, shape, sampler=own[2], steps=own[3], y=y, generator=g)}
    fns['teacher, Euler, 8 calls'] = lambda g, y: sample(teacher, s_t, shape, sampler='flow-euler' if kind == 'flow' else 'euler', steps=8,
                                                         y=y, generator=g)
    for n in (32, 8, 4, 2, 1):
        fns[f'teacher on the student grid, {n}'] = lambda g, y, n=n: distilled_sample(view, s, shape, steps=n, method='progressive',
                                                                                       y=y, generator=g)
    for n in (4, 2, 1):
        fns[f'student, {n}'] = lambda g, y, n=n: sample(student, s_st, shape, steps=n, y=y, generator=g)
    return fns

def score(kind:str, out:Path, seeds)->dict:
    from diffnb.evaluation import evaluate_sampler, load_classifier, paired_difference
    clf, result = load_classifier(), {}
    def conditional(fn):
        def make(seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 10, (500,), generator=g)
            with torch.inference_mode(): return fn(g, y), y
        return make
    for name, fn in rows(kind, out).items():
        r = evaluate_sampler(conditional(fn), seeds, clf)
        result[name] = {**{k: r['samples'][k] for k in ('fid', 'kid', 'accuracy')},
                        'per_seed': {k: [run['samples'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}}
        control = {k: r['control'][k] for k in ('fid', 'kid', 'accuracy')}
        print(f"{name}: FID {r['samples']['fid'][0]:.2f} ± {r['samples']['fid'][1]:.2f}, accuracy {r['samples']['accuracy'][0]:.1%}", flush=True)
    best = f'teacher on the student grid, 8'
    for n in (4, 2, 1):
        for ref in (best, f'teacher on the student grid, {n}'):
            m, sd = paired_difference(result[f'student, {n}']['per_seed']['fid'], result[ref]['per_seed']['fid'])
            result[f'student, {n}'].setdefault('paired_fid', {})[ref] = [m, sd]
    summary = json.loads((out/'summary.json').read_text())
    return dict(teacher=str(TEACHERS[kind].relative_to(ROOT)), command=' '.join(command(kind, Path(f'runs/distill-any/{kind}'))),
                training_minutes=summary['training_minutes'], rows=result, control=control, seeds=list(seeds),
                machine=platform.processor() or platform.machine(), torch=torch.__version__)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('train', 'score'))
    p.add_argument('kind', choices=sorted(TEACHERS))
    p.add_argument('--runs', default=str(ROOT/'runs/distill-any'), help='where the runs are kept')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    out = Path(a.runs)/a.kind
    if a.part == 'train':
        env = dict(__import__('os').environ, OMP_NUM_THREADS=str(a.threads))
        sys.exit(subprocess.call(command(a.kind, out), env=env))
    torch.set_num_threads(a.threads)
    res = score(a.kind, out, a.seeds)
    dest = ROOT/f'bench/results/distill_any_{a.kind}.json'
    dest.write_text(json.dumps(res, indent=1))
    print(f'wrote {dest}')

if __name__ == '__main__':
    main()
