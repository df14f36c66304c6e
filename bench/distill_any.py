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
    python bench/distill_any.py train edm --rounds 8,4,2,1    # one round more: the first teacher takes 16 calls
    python bench/distill_any.py score edm --rounds 8,4,2,1    # writes bench/results/distill_any_edm_r8.json

With `--rounds` other than 4,2,1 the run lives in runs/distill-any/KIND-rN (N its first round) and the score keeps
only what differs -- the teacher on the grid of the first round's teacher and the students -- for pairing with the
rows of the 4,2,1 run, which saw the same seeds.
"""
import argparse, json, platform, subprocess, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {'flow': ROOT/'nbs/results/12_flow_digits.pt', 'edm': ROOT/'nbs/results/11_edm_digits.pt'}
ROUNDS, STEPS = '4,2,1', 500

def command(kind:str, out:Path, rounds:str=ROUNDS)->list:
    "The distillation, as a user runs it"
    return ['diffnb_distill', str(TEACHERS[kind]), '--rounds', rounds, '--steps', str(STEPS), '--out', str(out), '--resume',
            '--no-progress']

def rows(kind:str, out:Path, rounds:str=ROUNDS)->dict:
    "name -> fn(generator, labels): every way of sampling that is scored"
    from diffnb.training import load_model
    from diffnb.sampling import sample
    from diffnb.distill import schedule_teacher, distilled_sample
    teacher, s_t = load_model(TEACHERS[kind])
    view, s = schedule_teacher(teacher, s_t)
    student, s_st = load_model(out/'student.pt')
    shape = (500, 1, 28, 28)
    own = ('Euler', 50, 'flow-euler', 50) if kind == 'flow' else ('Heun', 35, 'heun', 18)
    counts = [int(n) for n in rounds.split(',')]
    if rounds != ROUNDS:                     # only what differs from the 4,2,1 run
        fns = {f'teacher on the student grid, {2 * counts[0]}': lambda g, y: distilled_sample(view, s, shape, steps=2 * counts[0],
                                                                                             method='progressive', y=y, generator=g)}
        for n in counts:
            fns[f'student, {n}'] = lambda g, y, n=n: sample(student, s_st, shape, steps=n, y=y, generator=g)
        return fns
    fns = {f'teacher, {own[0]}, {own[1]} calls': lambda g, y: sample(teacher, s_t, shape, sampler=own[2], steps=own[3], y=y, generator=g)}
    fns['teacher, Euler, 8 calls'] = lambda g, y: sample(teacher, s_t, shape, sampler='flow-euler' if kind == 'flow' else 'euler', steps=8,
                                                         y=y, generator=g)
    for n in (32, 8, 4, 2, 1):
        fns[f'teacher on the student grid, {n}'] = lambda g, y, n=n: distilled_sample(view, s, shape, steps=n, method='progressive',
                                                                                       y=y, generator=g)
    for n in (4, 2, 1):
        fns[f'student, {n}'] = lambda g, y, n=n: sample(student, s_st, shape, steps=n, y=y, generator=g)
    return fns

def score(kind:str, out:Path, seeds, rounds:str=ROUNDS)->dict:
    from diffnb.evaluation import evaluate_sampler, load_classifier, paired_difference
    clf, result = load_classifier(), {}
    def conditional(fn):
        def make(seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 10, (500,), generator=g)
            with torch.inference_mode(): return fn(g, y), y
        return make
    for name, fn in rows(kind, out, rounds).items():
        r = evaluate_sampler(conditional(fn), seeds, clf)
        result[name] = {**{k: r['samples'][k] for k in ('fid', 'kid', 'accuracy')},
                        'per_seed': {k: [run['samples'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}}
        control = {k: r['control'][k] for k in ('fid', 'kid', 'accuracy')}
        print(f"{name}: FID {r['samples']['fid'][0]:.2f} ± {r['samples']['fid'][1]:.2f}, accuracy {r['samples']['accuracy'][0]:.1%}", flush=True)
    counts = [int(n) for n in rounds.split(',')]
    base = {} if rounds == ROUNDS else json.loads((ROOT/f'bench/results/distill_any_{kind}.json').read_text())['rows']
    first = f'teacher on the student grid, {2 * counts[0]}'
    for n in counts:                        # paired with the first round's teacher, the teacher at the same calls, the 4,2,1 run's student
        mine, grid = result[f'student, {n}'], f'teacher on the student grid, {n}'
        refs = {first: result[first], grid: result.get(grid) or base.get(grid)}
        if f'student, {n}' in base: refs[f'student, {n} (rounds {ROUNDS})'] = base[f'student, {n}']
        mine['paired_fid'] = {r: list(paired_difference(mine['per_seed']['fid'], o['per_seed']['fid'])) for r, o in refs.items() if o}
    summary = json.loads((out/'summary.json').read_text())
    return dict(teacher=str(TEACHERS[kind].relative_to(ROOT)), command=' '.join(command(kind, run_dir(Path('runs/distill-any'), kind, rounds), rounds)),
                rounds=rounds,
                training_minutes=summary['training_minutes'], rows=result, control=control, seeds=list(seeds),
                machine=platform.processor() or platform.machine(), torch=torch.__version__)

def run_dir(runs:Path, kind:str, rounds:str)->Path:
    "Where a run lives: runs/KIND for the 4,2,1 rounds, runs/KIND-rN for rounds starting at N"
    return runs/(kind if rounds == ROUNDS else f"{kind}-r{rounds.split(',')[0]}")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('train', 'score'))
    p.add_argument('kind', choices=sorted(TEACHERS))
    p.add_argument('--runs', default=str(ROOT/'runs/distill-any'), help='where the runs are kept')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--rounds', default=ROUNDS, help='the rounds of the distillation')
    a = p.parse_args()
    out = run_dir(Path(a.runs), a.kind, a.rounds)
    if a.part == 'train':
        env = dict(__import__('os').environ, OMP_NUM_THREADS=str(a.threads))
        sys.exit(subprocess.call(command(a.kind, out, a.rounds), env=env))
    torch.set_num_threads(a.threads)
    res = score(a.kind, out, a.seeds, a.rounds)
    dest = ROOT/f"bench/results/distill_any_{a.kind}{'' if a.rounds == ROUNDS else '_r' + a.rounds.split(',')[0]}.json"
    dest.write_text(json.dumps(res, indent=1))
    print(f'wrote {dest}')

if __name__ == '__main__':
    main()
