"""Every few-step method of chapters 13-13c on the digits, in one table: FID, KID, accuracy at 1, 2 and 4 calls, and cost.

The distillations share one teacher, chapter 12's flow model (`nbs/results/12_flow_digits.pt`, trained on the training
digits). This script runs the distillations, each timed by its CPU seconds on one thread:

- **progressive distillation**, `bench/distill_any.py`'s run again (`diffnb_distill TEACHER --rounds 4,2,1 --steps
  500`), for its CPU time on the machine that times the others;
- **consistency distillation**, with the command a user runs (`diffnb_distill TEACHER --method consistency --steps
  1500`: as many optimiser steps as the progressive run's three rounds of 500);
- **reflow + distillation** (Liu et al.): 6,000 (noise, sample) pairs from the teacher (Euler, 50 steps, labels
  balanced), 1,500 more steps of the teacher's own flow loss on those pairs (batch 64, AdamW 2e-4, 100 warm-up steps,
  EMA 0.995), then the reflowed model distilled like the teacher (`diffnb_distill REFLOWED --rounds 4,2,1 --steps 500 --data
  bundled:train`: the teacher's training digits).

`score` scores them by chapter 9's protocol (500 class-conditional samples per seed against the reference half of the
held-out digits, seeds 0, 1, 2; the same seeds, labels and starting noise as `bench/distill_any.py`), and `table`
gathers every row -- these, and the models trained from scratch in 240 CPU-seconds of
`bench/results/meanflow_2min.json` (MeanFlow, consistency training, flow matching) -- into
`bench/results/one_step.json`, with each row's training cost (network passes and CPU-minutes; for the distilled rows
the teacher's own training comes on top) and its paired FID difference to the best row at each number of calls. One CPU thread per process:

    OMP_NUM_THREADS=1 python bench/one_step.py train progressive    # bench/distill_any.py's run again, timed here
    OMP_NUM_THREADS=1 python bench/one_step.py train consistency
    OMP_NUM_THREADS=1 python bench/one_step.py train reflow         # pairs, reflow, then the distillation
    OMP_NUM_THREADS=1 python bench/one_step.py score                # writes bench/results/one_step_scores.json
    python bench/one_step.py table                                  # writes bench/results/one_step.json

(The teacher's own reference row, Euler with 50 calls, and the real control digits come from
`bench/results/distill_any_flow.json`, scored on the same seeds.)
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT/'nbs/results/12_flow_digits.pt'
PAIRS, REFLOW_STEPS, STEPS, CD_STEPS = 6000, 1500, 500, 1500
RESULTS = ROOT/'bench/results'

def distill_command(teacher:Path, out:Path, *extra)->list:
    "A distillation, as a user runs it"
    return ['diffnb_distill', str(teacher), *extra, '--out', str(out), '--resume', '--no-progress']

def make_pairs(runs:Path)->Path:
    "The teacher's (noise, sample) pairs, labels balanced; kept in runs/ and reused"
    dest = runs/'reflow_pairs.pt'
    if dest.exists(): return dest
    from diffnb.training import load_model
    from diffnb.flow import reflow_pairs
    teacher, _ = load_model(TEACHER)
    g = torch.Generator().manual_seed(1234)
    y = torch.arange(PAIRS) % 10
    y = y[torch.randperm(PAIRS, generator=g)]
    zs, xs, t0 = [], [], time.process_time()
    with torch.inference_mode():
        for k in range(0, PAIRS, 500):
            z, x = reflow_pairs(teacher, (min(500, PAIRS - k), 1, 28, 28), steps=50, y=y[k:k + 500], generator=g)
            zs.append(z); xs.append(x.clamp(-1, 1))
            print(f'pairs {k + len(z)}/{PAIRS}', flush=True)
    torch.save(dict(z=torch.cat(zs), x=torch.cat(xs), y=y, cpu_seconds=time.process_time() - t0, teacher_calls=50 * PAIRS), dest)
    return dest

def train_on_pairs(tr, pairs:dict, steps:int, batch:int=64, seed:int=0):
    "`steps` optimiser steps of a Trainer's own loss on fixed (noise z, sample x, label y) pairs: the loss's noise is each sample's partner"
    g, n = torch.Generator().manual_seed(seed), len(pairs['x'])
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        times = tr.formulation.draw_times(batch, g)
        drop = torch.rand(batch, generator=g) < tr.hparams['label_dropout']
        y = torch.where(drop, tr.n_classes, pairs['y'][idx])
        loss = tr._forward_backward(pairs['x'][idx], y, times, pairs['z'][idx])
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.hparams['grad_clip'])
        for group in tr.opt.param_groups: group['lr'] = tr.hparams['lr'] * min(1.0, (step + 1) / tr.hparams['warmup'])
        tr.opt.step(); tr.ema.update(tr.model); tr.step += 1
        if step % 250 == 0: print(f'reflow step {step}: loss {loss.item():.4f}', flush=True)

def reflow(runs:Path)->Path:
    "1,500 steps of the teacher's flow loss on its own pairs: the loss's noise is each sample's partner"
    dest = runs/'reflow.pt'
    if dest.exists(): return dest
    from diffnb.training import load_model, Trainer
    from diffnb.data import TensorImages
    from diffnb.flow import FlowMatching
    pairs = torch.load(make_pairs(runs))
    model, _ = load_model(TEACHER)
    data = TensorImages(pairs['x'], pairs['y'], name='reflow pairs of nbs/results/12_flow_digits.pt')
    tr = Trainer(model.train(), FlowMatching(), data, batch_size=64, lr=2e-4, warmup=100, ema_decay=0.995, seed=0,
                 ckpt_path=runs/'reflow_run.pt', progress=False)
    t0 = time.process_time()
    train_on_pairs(tr, pairs, REFLOW_STEPS)
    tr.elapsed = time.process_time() - t0
    tr.save()
    (runs/'reflow.json').write_text(json.dumps(dict(steps=REFLOW_STEPS, cpu_seconds=tr.elapsed, pairs_cpu_seconds=pairs['cpu_seconds'],
                                                    pairs_teacher_calls=pairs['teacher_calls']), indent=1))
    os.replace(runs/'reflow_run.pt', dest)
    return dest

def _distill(cmd:list, env:dict, dest:Path)->int:
    "Run a distillation command; record its CPU time (the child's user + system seconds) in dest"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = subprocess.call(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    dest.write_text(json.dumps(dict(command=' '.join(cmd), cpu_seconds=round(after.ru_utime + after.ru_stime
                                                                             - before.ru_utime - before.ru_stime, 1)), indent=1))
    return rc

def train(kind:str, runs:Path)->int:
    runs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    if kind == 'progressive':                # bench/distill_any.py's run, again, for its CPU time on this machine
        return _distill(distill_command(TEACHER, runs/'pd', '--rounds', '4,2,1', '--steps', str(STEPS)), env, runs/'pd_cpu.json')
    if kind == 'consistency':
        return _distill(distill_command(TEACHER, runs/'cd', '--method', 'consistency', '--steps', str(CD_STEPS)), env, runs/'cd_cpu.json')
    torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    return _distill(distill_command(reflow(runs), runs/'reflow-distill', '--rounds', '4,2,1', '--steps', str(STEPS), '--data', 'bundled:train'),
                    env, runs/'reflow_distill_cpu.json')

def rows(runs:Path)->dict:
    "name -> fn(generator, labels): the rows this script scores, for the runs that have finished"
    from diffnb.training import load_model
    from diffnb.sampling import sample
    shape, fns = (500, 1, 28, 28), {}
    def student(name, path):
        if not path.exists(): return
        m, s = load_model(path)
        for n in (1, 2, 4): fns[f'{name}, {n}'] = lambda g, y, n=n: sample(m, s, shape, steps=n, y=y, generator=g)
    student('progressive distillation', runs/'pd'/'student.pt')
    student('consistency distillation', runs/'cd'/'student.pt')
    student('reflow + distillation', runs/'reflow-distill'/'student.pt')
    if (runs/'reflow.pt').exists():
        reflowed, s_r = load_model(runs/'reflow.pt')
        for n in (1, 2, 4):
            fns[f'reflow, Euler, {n}'] = lambda g, y, n=n: sample(reflowed, s_r, shape, sampler='flow-euler', steps=n, t_min=0, y=y, generator=g)
    return fns

def score(runs:Path, seeds, dest:Path)->dict:
    "Score every finished run not yet in dest (kept there: a later call adds the rows of runs finished since)"
    from diffnb.evaluation import evaluate_sampler, load_classifier
    clf = load_classifier()
    done = json.loads(dest.read_text()) if dest.exists() else {}
    if done and done.get('seeds') != list(seeds): raise SystemExit(f'{dest} was scored on seeds {done["seeds"]}, not {list(seeds)}')
    result = done.get('rows', {})
    def conditional(fn):                     # as bench/distill_any.py: labels from the seed's generator, then the noise
        def make(seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 10, (500,), generator=g)
            with torch.inference_mode(): return fn(g, y), y
        return make
    for name, fn in rows(runs).items():
        if name in result: continue
        r = evaluate_sampler(conditional(fn), seeds, clf)
        result[name] = {**{k: r['samples'][k] for k in ('fid', 'kid', 'accuracy')},
                        'per_seed': {k: [run['samples'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}}
        print(f"{name}: FID {r['samples']['fid'][0]:.2f} ± {r['samples']['fid'][1]:.2f}, accuracy {r['samples']['accuracy'][0]:.1%}", flush=True)
    out = dict(rows=result, seeds=list(seeds), runs={k: json.loads(p.read_text()) for k, p in
               [('reflow', runs/'reflow.json'), ('progressive', runs/'pd_cpu.json'), ('consistency', runs/'cd_cpu.json'),
                ('reflow_distill', runs/'reflow_distill_cpu.json')] if p.exists()},
               machine=platform.processor() or platform.machine(), torch=torch.__version__)
    dest.write_text(json.dumps(out, indent=1))
    return out

def table(results:Path=RESULTS)->dict:
    "Every row on one footing: the same seeds, protocol and reference digits; cost beside each"
    from diffnb.evaluation import paired_difference
    import statistics as st
    sc = json.loads((results/'one_step_scores.json').read_text())
    pd_old = json.loads((RESULTS/'distill_any_flow.json').read_text())
    mf = json.loads((RESULTS/'meanflow_2min.json').read_text())
    runs, B = sc['runs'], 64
    ck = torch.load(TEACHER, map_location='cpu', weights_only=False)['info']
    t_evals = ck['steps'] * B                                                      # the teacher's own training
    t_min = ck['seconds'] / 60
    def agg(per_seed):
        out = {k: [st.mean(v), st.stdev(v)] for k, v in per_seed.items()}
        return dict(out, per_seed=per_seed)
    rows = []
    def add(method, calls, r, evals, cpu_min, teacher_cost):
        rows.append(dict(method=method, calls=calls, **agg(r['per_seed']),
                         train_evals=evals, cpu_minutes=cpu_min, teacher=teacher_cost))
    pd_steps = 3 * STEPS
    for n in (1, 2, 4):
        add('progressive distillation', n, sc['rows'][f'progressive distillation, {n}'], pd_steps * B * 3,
            runs['progressive']['cpu_seconds'] / 60, True)
        add('consistency distillation', n, sc['rows'][f'consistency distillation, {n}'], CD_STEPS * B * 3,
            runs['consistency']['cpu_seconds'] / 60, True)
        rf = runs['reflow']
        add('reflow (Euler)', n, sc['rows'][f'reflow, Euler, {n}'], rf['pairs_teacher_calls'] + REFLOW_STEPS * B,
            (rf['pairs_cpu_seconds'] + rf['cpu_seconds']) / 60, True)
        add('reflow + distillation', n, sc['rows'][f'reflow + distillation, {n}'],
            rf['pairs_teacher_calls'] + REFLOW_STEPS * B + pd_steps * B * 3,
            (rf['pairs_cpu_seconds'] + rf['cpu_seconds'] + runs['reflow_distill']['cpu_seconds']) / 60, True)
        for kind, method, passes in (('meanflow', 'MeanFlow', 1), ('consistency', 'consistency training', 2), ('flow', 'flow matching (Euler)', 1)):
            runs_k = [r for r in mf['rows'] if r['row'] == kind]
            per = {k: [next(x[k] for x in r['scores'] if x['calls'] == n) for r in runs_k]
                   for k in ('fid', 'kid', 'accuracy')}
            add(f'{method}, from scratch', n, dict(per_seed=per), round(st.mean(r['train_steps'] for r in runs_k) * B * passes),
                st.mean(r['cpu_seconds'] for r in runs_k) / 60, False)
    best = {n: min((r for r in rows if r['calls'] == n), key=lambda r: r['fid'][0]) for n in (1, 2, 4)}
    for r in rows:
        b = best[r['calls']]
        r['best_row'] = b['method']
        r['fid_minus_best'] = list(paired_difference(r['per_seed']['fid'], b['per_seed']['fid']))
    out = dict(note=('FID, KID (x 1) and accuracy: mean and standard deviation over seeds 0, 1, 2 (chapter 9 protocol). '
                     'train_evals: network passes per image summed over training (a backward pass not counted; a JVP pass counted '
                     'as one; the reflow pairs as 50 teacher calls each); cpu_minutes: the method\'s own CPU time on one thread, '
                     'without the teacher\'s training (teacher: true) -- the teacher cost t_evals and t_minutes more.'),
               teacher=dict(file=str(TEACHER.relative_to(ROOT)), evals=t_evals, wall_minutes=round(t_min, 1),
                            **{f'euler_{n}': {k: pd_old['rows'][f'teacher, Euler, {n} calls'][k] for k in ('fid', 'kid', 'accuracy', 'per_seed')}
                               for n in (50, 8)}),
               control=pd_old['control'], rows=rows, seeds=sc['seeds'], machine=sc['machine'], torch=sc['torch'])
    (results/'one_step.json').write_text(json.dumps(out, indent=1))
    print('| method | calls | FID | FID - best (paired) | KID x 1000 | accuracy | training passes | CPU-min (own) |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for n in (1, 2, 4):
        for r in sorted((r for r in rows if r['calls'] == n), key=lambda r: r['fid'][0]):
            print(f"| {r['method']} | {n} | {r['fid'][0]:.2f} ± {r['fid'][1]:.2f} | {r['fid_minus_best'][0]:+.2f} ± {r['fid_minus_best'][1]:.2f} "
                  f"| {1000 * r['kid'][0]:.1f} ± {1000 * r['kid'][1]:.1f} | {r['accuracy'][0]:.1%} | {r['train_evals']:,} "
                  f"| {r['cpu_minutes']:.1f}{' + teacher' if r['teacher'] else ''} |")
    print(f"wrote {results/'one_step.json'}")
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('train', 'score', 'table'))
    p.add_argument('kind', nargs='?', choices=('progressive', 'consistency', 'reflow'), help='train: which run')
    p.add_argument('--runs', default=str(ROOT/'runs/one-step'), help='where the runs are kept')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--results', default=str(RESULTS), help='where score and table write (and table reads the scores)')
    a = p.parse_args()
    runs, results = Path(a.runs), Path(a.results)
    if a.part == 'train':
        if a.kind is None: p.error('train needs a kind: consistency or reflow')
        sys.exit(train(a.kind, runs))
    if a.part == 'score':
        torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
        score(runs, a.seeds, results/'one_step_scores.json')
        return print(f"wrote {results/'one_step_scores.json'}")
    table(results)

if __name__ == '__main__':
    main()
