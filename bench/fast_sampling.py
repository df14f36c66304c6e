"""Few-step sampling with the distilled student against the teacher, side by side in one run: time and quality.

Timing: 100 class-conditional digits (labels drawn at random) with the student at 1, 2, 4 and 8 steps, and with the
teacher (the bundled model) by DPM-Solver++(2M) with 10 steps and by DDIM with 10 steps, on its default 'leading'
timesteps and on the solver's log-SNR timesteps. The cases run interleaved, round after round, after one warm-up
round; each is reported as the median over rounds and as a ratio to the teacher's solver.

Quality: the evaluation chapter's protocol (`evaluate_sampler`) for every case: 500 samples per seed with labels drawn at
random, FID and KID in the bundled classifier's features against the reference half of the held-out digits, and the
real control half scored the same way (the floor), over three seeds. Every sampler sees the same seeds (the same
held-out split, labels and starting noise per seed), so each one's difference from the teacher's solver is also
reported paired: the mean and the standard deviation over seeds of the per-seed differences.

    python bench/fast_sampling.py                          # two threads; writes bench/results/fast_sampling.json
    python bench/fast_sampling.py --rounds 9 --seeds 0 1 2 --threads 2
    python bench/fast_sampling.py --no-scores              # timing only
    python bench/fast_sampling.py --timing-from bench/results/fast_sampling.json   # scores only; keep that run's timing
    python bench/fast_sampling.py --candidate runs/cheap-student/model --candidate-name "narrow student"   # another student beside
"""
import argparse, json, platform, statistics, time
from pathlib import Path
import torch

def cases(teacher, s, student, s_student, candidate=None, name='candidate student'):
    "name -> fn(batch, labels, generator): every way of sampling that is compared"
    from diffnb.sampling import sample
    out = {f'student, {n} step{"s" if n > 1 else ""}': (lambda B, y, g, n=n: sample(student, s_student, (B, 1, 28, 28), steps=n, y=y, generator=g))
           for n in (1, 2, 4, 8)}
    if candidate is not None:                                    # another student, at each number of steps it has
        m, s_c = candidate
        out.update({f'{name}, {n} step{"s" if n > 1 else ""}': (lambda B, y, g, n=n: sample(m, s_c, (B, 1, 28, 28), steps=n, y=y, generator=g))
                    for n in getattr(m, 'steps', (4,))})
    out['teacher, DPM-Solver++(2M), 10 steps'] = lambda B, y, g: sample(teacher, s, (B, 1, 28, 28), sampler='solver', steps=10, y=y, generator=g)
    out['teacher, DDIM, 10 steps (leading)'] = lambda B, y, g: sample(teacher, s, (B, 1, 28, 28), sampler='ddim', steps=10, y=y, generator=g)
    out['teacher, DDIM, 10 steps (log-SNR)'] = lambda B, y, g: sample(teacher, s, (B, 1, 28, 28), sampler='ddim', steps=10, spacing='logsnr', y=y, generator=g)
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=100, help='digits per timed call')
    p.add_argument('--rounds', type=int, default=7, help='timed rounds (after one warm-up round)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds of the quality protocol')
    p.add_argument('--threads', type=int, default=2, help='torch threads (the two CPU cores of the reference machine)')
    p.add_argument('--no-scores', action='store_true', help='time only')
    p.add_argument('--timing-from', help='keep the timing of this earlier result file (a busy machine times badly); score only')
    p.add_argument('--candidate', help='another student (model folder or file) timed and scored beside the shipped one')
    p.add_argument('--candidate-name', default='candidate student', help="its rows' name (must contain 'student')")
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'fast_sampling.json'))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from diffnb.pretrained import load_pretrained, pretrained_info
    teacher, s = load_pretrained()
    student, s_student = load_pretrained('mnist-fast')
    if a.candidate and 'student' not in a.candidate_name: p.error("--candidate-name must contain 'student'")
    from diffnb.training import load_model
    fns = cases(teacher, s, student, s_student, load_model(a.candidate) if a.candidate else None, a.candidate_name)
    solver = 'teacher, DPM-Solver++(2M), 10 steps'

    y = torch.randint(0, 10, (a.batch,), generator=torch.Generator().manual_seed(0))
    times = {c: [] for c in fns}
    if a.timing_from:
        old = json.loads(Path(a.timing_from).read_text())
        if set(old['timing']) != set(fns): raise SystemExit(f'{a.timing_from} times other samplers: {sorted(old["timing"])}')
        times = {c: old['timing'][c]['all_s'] for c in fns}
        a.batch, a.rounds, a.threads = old['batch'], old['rounds'], old['machine']['threads']
    for r in range(0 if a.timing_from else a.rounds + 1):           # round 0 warms up
        for c, f in fns.items():
            g = torch.Generator().manual_seed(r)
            t0 = time.perf_counter(); f(a.batch, y, g); dt = time.perf_counter() - t0
            if r: times[c].append(dt)
    timing = {c: dict(median_s=statistics.median(v), all_s=v, ratio_to_solver=statistics.median(v) / statistics.median(times[solver]))
              for c, v in times.items()}
    print(f'{a.batch} class-conditional digits, {a.rounds} rounds, torch threads {torch.get_num_threads()}')
    print('| sampler | network calls | seconds (median) | against the teacher\'s solver |')
    print('|---|---:|---:|---:|')
    calls = lambda c: int(c.split(', ')[-1].split()[0]) if 'student' in c else 10
    for c, v in timing.items(): print(f"| {c} | {calls(c)} | {v['median_s']:.3f} | {v['ratio_to_solver']:.2f}x |")

    scores = control = None
    if not a.no_scores:
        from diffnb.evaluation import evaluate_sampler, load_classifier
        clf = load_classifier()
        def make(f):
            def m(seed):
                g = torch.Generator().manual_seed(seed)
                yy = torch.randint(0, 10, (500,), generator=g)
                return f(500, yy, g), yy
            return m
        scores = {}
        for c, f in fns.items():
            r = evaluate_sampler(make(f), tuple(a.seeds), clf)
            scores[c] = {k: r['samples'][k] for k in ('fid', 'kid', 'accuracy')}
            scores[c]['per_seed'] = {k: [run['samples'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}
            control = {k: r['control'][k] for k in ('fid', 'kid', 'accuracy')}
            control['per_seed'] = {k: [run['control'][k] for run in r['runs']] for k in ('fid', 'kid', 'accuracy')}
            print(f"{c}: FID {scores[c]['fid'][0]:.2f} ± {scores[c]['fid'][1]:.2f}, KID x 1000 {1000 * scores[c]['kid'][0]:.2f} ± {1000 * scores[c]['kid'][1]:.2f}, "
                  f"accuracy {scores[c]['accuracy'][0]:.1%}", flush=True)
        for c in fns:                                   # paired: the same seeds, per-seed differences from the solver
            d = torch.tensor(scores[c]['per_seed']['fid'], dtype=torch.float64) - torch.tensor(scores[solver]['per_seed']['fid'], dtype=torch.float64)
            scores[c]['fid_minus_solver'] = [float(d.mean()), float(d.std()) if len(d) > 1 else float('nan')]
        print(f"real control half: FID {control['fid'][0]:.2f} ± {control['fid'][1]:.2f}, KID x 1000 {1000 * control['kid'][0]:.2f} ± {1000 * control['kid'][1]:.2f}")
        print('± is the standard deviation over seeds; FID - solver is the paired per-seed difference')
        print('| sampler | network calls | FID | FID - solver | KID x 1000 | class accuracy | time, 100 digits | against the solver |')
        print('|---|---:|---:|---:|---:|---:|---:|---:|')
        for c in fns:
            f_, d_, k_, acc = scores[c]['fid'], scores[c]['fid_minus_solver'], scores[c]['kid'], scores[c]['accuracy']
            print(f"| {c} | {calls(c)} | {f_[0]:.2f} ± {f_[1]:.2f} | {d_[0]:+.2f} ± {d_[1]:.2f} | {1000 * k_[0]:.1f} ± {1000 * k_[1]:.1f} "
                  f"| {acc[0]:.1%} | {timing[c]['median_s']:.2f} s | {timing[c]['ratio_to_solver']:.2f}x |")
        print(f"| real held-out digits (control half) | | {control['fid'][0]:.2f} ± {control['fid'][1]:.2f} | | "
              f"{1000 * control['kid'][0]:.1f} ± {1000 * control['kid'][1]:.1f} | {control['accuracy'][0]:.1%} | | |")

    result = dict(command='python bench/fast_sampling.py ' + ' '.join(f'--{k.replace("_", "-")} {v}' for k, v in
                                                                        dict(batch=a.batch, rounds=a.rounds, threads=a.threads).items())
                          + ' --seeds ' + ' '.join(map(str, a.seeds)) + (' --no-scores' if a.no_scores else '')
                          + (f' --timing-from {a.timing_from}' if a.timing_from else '')
                          + (f' --candidate {a.candidate} --candidate-name "{a.candidate_name}"' if a.candidate else ''),
                  date=time.strftime('%Y-%m-%d'), machine=dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__,
                                                               threads=a.threads),
                  timing_from=dict((k, old[k]) for k in ('command', 'date')) if a.timing_from else None,
                  teacher=pretrained_info().get('data', {}).get('name'), student=getattr(s_student, 'method', None),
                  batch=a.batch, rounds=a.rounds, seeds=a.seeds, calls={c: calls(c) for c in fns}, timing=timing, scores=scores, control=control)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f'written to {a.out}')

if __name__ == '__main__': main()
