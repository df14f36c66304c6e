"""Bits per dimension of the held-out digits under the bundled model, an independent check of the integration,
predictor-corrector sampling against DDIM and DPM-Solver++(2M) at equal model calls (chapter 9's protocol), and
bits per dimension of chapter 9's three formulations at the same training budget.

    OMP_NUM_THREADS=1 python bench/likelihood.py bpd           # about 20 CPU-minutes -> bench/results/likelihood.json
    OMP_NUM_THREADS=1 python bench/likelihood.py pc            # about 25 CPU-minutes -> bench/results/likelihood_pc.json
    OMP_NUM_THREADS=1 python bench/likelihood.py formulations  # about 75 CPU-minutes -> bench/results/likelihood_formulations.json
    OMP_NUM_THREADS=1 python bench/likelihood.py common        # about 40 CPU-minutes -> bench/results/likelihood_common.json

Run from the repository root; each part prints its results and writes them as JSON."""
import json, math, sys, time
from pathlib import Path
import numpy as np
import torch
from diffnb.data import bundled_mnist
from diffnb.pretrained import load_pretrained
from diffnb.score import bits_per_dim, log_likelihood, BIN
from diffnb.sampling import sample
from diffnb.evaluation import evaluate_sampler, load_classifier, paired_difference

OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent/'results'
N_BPD, STEPS, SEED = 200, 64, 0          # held-out digits, Heun steps (extrapolated from 32), seed of the dequantisation and probes
N_FORM = 50                              # held-out digits per formulation model: the first 50 of the same draw

def independent(model, s, x, z):
    "log p(x) with scipy's RK45 (rtol 1e-6) in the sigma-view variable, the model's eps called directly, probe z fixed"
    from scipy.integrate import solve_ivp
    ab = s.alpha_bar64.numpy()
    log_sig = 0.5 * (np.log1p(-ab) - np.log(ab))                 # log sigma of every timestep, increasing
    B, D = x.shape[0], x[0].numel()
    shape = x.shape
    def rhs(tau, state):                                         # state: x in the sigma view, then the log-det integral
        sigma = math.exp(tau)
        t = float(np.interp(tau, log_sig, np.arange(len(ab))))
        xs = torch.tensor(state[:B * D], dtype=torch.float32).reshape(shape).requires_grad_(True)
        c = math.sqrt(1 + sigma ** 2)
        eps = model(xs / c, torch.full((B,), t))
        f = sigma * eps                                          # dx/dlog sigma = sigma * eps_hat
        div = (torch.autograd.grad(f, xs, z)[0] * z).flatten(1).sum(1)
        return np.concatenate([f.detach().flatten().double().numpy(), div.double().numpy()])
    t0, t1 = float(log_sig[0]), float(log_sig[-1])
    sol = solve_ivp(rhs, (t0, t1), np.concatenate([x.flatten().double().numpy(), np.zeros(B)]), method='RK45', rtol=1e-6, atol=1e-6)
    xe, ell = sol.y[:B * D, -1].reshape(B, D), sol.y[B * D:, -1]
    var = 1 + math.exp(2 * t1)
    prior = -0.5 * (xe ** 2).sum(1) / var - 0.5 * D * math.log(2 * math.pi * var)
    return torch.tensor(prior + ell), sol.nfev

def bpd_part():
    model, s = load_pretrained()
    held = bundled_mnist('heldout')
    pick = torch.randperm(len(held.images), generator=torch.Generator().manual_seed(SEED))[:N_BPD]   # a random subset
    x = held.images[pick]
    torch.set_grad_enabled(True)
    r = bits_per_dim(model, s, x, steps=STEPS, generator=torch.Generator().manual_seed(SEED), progress=True)
    print(f"bits/dim {r['bpd']:.4f} +- {r['se']:.4f} (standard error over {r['n']} images), {r['seconds']:.0f} s")
    # the independent check: 3 images, the same dequantised input and the same probe, two solvers
    g = torch.Generator().manual_seed(1)
    xq = x[:3] + BIN * (torch.rand(x[:3].shape, generator=g) - 0.5)
    z = torch.randn(xq.shape, generator=torch.Generator().manual_seed(2)).sign()
    mine = {n: log_likelihood(model, s, xq, steps=n, generator=torch.Generator().manual_seed(2)) for n in (16, 32, 64, 128)}
    extra = {n: log_likelihood(model, s, xq, steps=n, generator=torch.Generator().manual_seed(2), extrapolate=True) for n in (32, 64)}
    t0 = time.time(); ref, nfev = independent(model, s, xq, z); secs = time.time() - t0
    to_bpd = lambda lp: (-lp / (784 * math.log(2)) - math.log2(BIN)).tolist()
    check = dict(images=3, scipy=dict(bpd=to_bpd(ref), nfev=int(nfev), seconds=round(secs, 1), method='RK45', rtol=1e-6, atol=1e-6),
                 heun={str(n): to_bpd(v) for n, v in mine.items()}, extrapolated={str(n): to_bpd(v) for n, v in extra.items()})
    print(json.dumps(check, indent=1))
    held_all = dict(bpd=r['bpd'], se=r['se'], n=r['n'], seconds=round(r['seconds'], 1), steps=STEPS, extrapolate=True, trace='hutchinson',
                    seed=SEED, model_calls_per_image=2 * STEPS + 2 * (STEPS // 2), per_image=[round(v, 5) for v in r['per_image'].tolist()])
    note = (f"bits_per_dim of the bundled model (unconditional, y=None) on {N_BPD} held-out digits drawn at random (torch.randperm, seed {SEED}), uniform "
            f"dequantisation, Heun with {STEPS} steps in log sigma extrapolated from {STEPS // 2} (Richardson), one Rademacher probe per "
            "image; 'check' compares three images against scipy's RK45 at rtol 1e-6 in another variable with the same probe: "
            f"Heun with 16 to 128 steps, and extrapolated from half the steps; one CPU thread, torch {torch.__version__}; "
            "another benchmark ran on the machine's second core")
    (OUT/'likelihood.json').write_text(json.dumps(dict(note=note, heldout=held_all, check=check), indent=1))

def pc_part(steps=20, n=500, seeds=(0, 1, 2)):
    model, s = load_pretrained()
    clf = load_classifier()
    done = OUT/'likelihood_pc.json'
    rows = json.loads(done.read_text()).get('rows', {}) if done.exists() else {}      # a stopped run goes on where it was
    for name, kw in (('pc', {}), ('solver', dict(spacing='logsnr')), ('ddim', dict(spacing='logsnr'))):
        if name in rows and len(rows[name]) == len(seeds): continue
        secs = []
        def make(seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 10, (n,), generator=g)
            t0 = time.time()
            x = sample(model, s, (n, 1, 28, 28), sampler=name, steps=steps, y=y, generator=g, **kw)
            secs.append(time.time() - t0)
            return x, y
        r = evaluate_sampler(make, seeds, clf)
        rows[name] = [dict(seed=q['seed'], seconds=round(t, 1), fid=q['samples']['fid'], kid=q['samples']['kid'],
                           accuracy=q['samples']['accuracy'], control_fid=q['control']['fid']) for q, t in zip(r['runs'], secs)]
        print(name, [round(q['fid'], 3) for q in rows[name]], flush=True)
        (OUT/'likelihood_pc.json').write_text(json.dumps(dict(partial=True, steps=steps, rows=rows), indent=1))
    fid = {k: {q['seed']: q['fid'] for q in v} for k, v in rows.items()}
    diffs = {f'pc - {k}': paired_difference(fid['pc'], fid[k]) for k in ('ddim', 'solver')}
    print(diffs)
    note = (f"{n} class-conditional samples of the bundled model per seed (labels drawn at random from the seed's generator), "
            f"{steps} model calls each, log-SNR spacing, scored by evaluate_sampler with the shipped classifier; "
            "paired: per-seed FID difference, (mean, standard deviation over seeds); one CPU thread; the machine ran other jobs")
    (OUT/'likelihood_pc.json').write_text(json.dumps(dict(note=note, steps=steps, rows=rows, paired_fid=diffs), indent=1))

def formulations_part(seeds=(0, 1, 2)):
    """Chapter 9's three formulations at its two-minute budget (430 steps of batch 64, one thread), trained anew exactly
    as bench/formulations.py trains them, each scored by chapter 9's protocol with the common sampler (DPM-Solver++(2M),
    20 log-SNR steps, 500 class-conditional samples, the run's seed) and by bits/dim on the first N_FORM digits of
    the bundled model's draw, with the same dequantisation and probes"""
    import importlib.util
    from diffnb.training import Trainer
    spec = importlib.util.spec_from_file_location('formulations', Path(__file__).parent/'formulations.py')
    F = importlib.util.module_from_spec(spec); spec.loader.exec_module(F)
    ref = json.loads((Path(__file__).parent/'results'/'formulations_2min_cpu.json').read_text())
    train, held, clf = bundled_mnist('train'), bundled_mnist('heldout'), load_classifier()
    x = held.images[torch.randperm(len(held.images), generator=torch.Generator().manual_seed(SEED))[:N_FORM]]
    out = OUT/'likelihood_formulations.json'
    rows = json.loads(out.read_text())['rows'] if out.exists() else []       # a stopped run goes on where it was
    for seed in seeds:
        for name in ('ddpm', 'edm', 'flow'):
            if any(r['formulation'] == name and r['seed'] == seed for r in rows): continue
            model, f, kw = F.build(name, seed, train, ref['lr'])
            tr = Trainer(model, f, train, batch_size=64, lr=ref['lr'], seed=seed, progress=False, device='cpu', **kw)
            t0 = time.time(); tr.fit(steps=ref['steps']); train_secs = time.time() - t0
            m, s = tr.ema.model.eval(), tr.s
            def make(k):
                g = torch.Generator().manual_seed(k)
                y = torch.randint(0, 10, (500,), generator=g)
                return sample(m, s, (500, 1, 28, 28), sampler='solver', steps=20, y=y, generator=g), y
            q = evaluate_sampler(make, (seed,), clf)['runs'][0]
            torch.set_grad_enabled(True)
            r = bits_per_dim(m, s, x, steps=STEPS, generator=torch.Generator().manual_seed(SEED))
            earlier = next(q for q in ref['rows'] if q['formulation'] == name and q['seed'] == seed and q['sampler'] == 'solver')
            rows.append(dict(formulation=name, seed=seed, train_steps=tr.step, train_seconds=round(train_secs, 1),
                             final_loss=tr.history[-1][1], fid=q['samples']['fid'], kid=q['samples']['kid'],
                             accuracy=q['samples']['accuracy'], control_fid=q['control']['fid'],
                             earlier=dict(final_loss=earlier['final_loss'], fid=earlier['fid'], accuracy=earlier['accuracy']),
                             bpd=r['bpd'], se=r['se'], n=r['n'], seconds=round(r['seconds'], 1),
                             per_image=[round(v, 5) for v in r['per_image'].tolist()]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != 'per_image'}), flush=True)
            out.write_text(json.dumps(dict(partial=True, rows=rows), indent=1))
    note = (f"the three formulations of bench/formulations.py at {ref['steps']} steps (chapter 9's two-minute budget), "
            f"retrained on one CPU thread (torch {torch.__version__}); fid, kid, accuracy: chapter 9's protocol with "
            "DPM-Solver++(2M), 20 log-SNR steps, 500 class-conditional samples from the run's seed; 'earlier': the same "
            "recipe's run in bench/results/formulations_2min_cpu.json, for comparison (another machine: the final losses "
            f"differ by up to 2%, the FIDs by up to 6%); bits_per_dim (unconditional, y=None) on the first {N_FORM} digits of the "
            f"bundled model's draw in likelihood.json, same dequantisation and probes (seed {SEED}), Heun with {STEPS} steps "
            f"extrapolated from {STEPS // 2}")
    out.write_text(json.dumps(dict(note=note, budget_steps=ref['steps'], steps=STEPS, extrapolate=True,
                                   seeds=sorted({r['seed'] for r in rows}), rows=rows), indent=1))

def common_part(seeds=(0, 1, 2)):
    """The EDM and flow models of the formulations part, trained again (the same recipe, seed and thread count give the
    same weights: each run's final loss must equal the recorded one), with bits/dim at the noise-prediction models'
    data end -- the cosine schedule's smallest level -- instead of their own smaller one: every model's density is
    then that of x0 + sigma eps at the same sigma, and the rows differ in the model only"""
    import importlib.util
    from diffnb.training import Trainer
    from diffnb.schedules import cosine_schedule
    from diffnb.edm import schedule_sigmas
    spec = importlib.util.spec_from_file_location('formulations', Path(__file__).parent/'formulations.py')
    F = importlib.util.module_from_spec(spec); spec.loader.exec_module(F)
    ref = json.loads((Path(__file__).parent/'results'/'formulations_2min_cpu.json').read_text())
    form = json.loads((OUT/'likelihood_formulations.json').read_text())['rows']
    sigma = schedule_sigmas(cosine_schedule())[0].item()
    train, held = bundled_mnist('train'), bundled_mnist('heldout')
    x = held.images[torch.randperm(len(held.images), generator=torch.Generator().manual_seed(SEED))[:N_FORM]]
    out = OUT/'likelihood_common.json'
    rows = json.loads(out.read_text())['rows'] if out.exists() else []
    for seed in seeds:
        for name in ('edm', 'flow'):
            if any(r['formulation'] == name and r['seed'] == seed for r in rows): continue
            before = next(r for r in form if r['formulation'] == name and r['seed'] == seed)
            model, f, kw = F.build(name, seed, train, ref['lr'])
            tr = Trainer(model, f, train, batch_size=64, lr=ref['lr'], seed=seed, progress=False, device='cpu', **kw)
            tr.fit(steps=ref['steps'])
            torch.set_grad_enabled(True)
            r = bits_per_dim(tr.ema.model.eval(), tr.s, x, steps=STEPS, generator=torch.Generator().manual_seed(SEED), sigma_min=sigma)
            rows.append(dict(formulation=name, seed=seed, final_loss=tr.history[-1][1], same_model=tr.history[-1][1] == before['final_loss'],
                             sigma_min=sigma, bpd=r['bpd'], se=r['se'], n=r['n'], seconds=round(r['seconds'], 1),
                             per_image=[round(v, 5) for v in r['per_image'].tolist()]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != 'per_image'}), flush=True)
            out.write_text(json.dumps(dict(partial=True, rows=rows), indent=1))
    note = (f"bits_per_dim of the EDM and flow models of likelihood_formulations.json at sigma_min = {sigma:.6g}, the cosine "
            "schedule's smallest level (the noise-prediction models' own data end), retrained with the same recipe and seed "
            "(same_model: the final loss equals the recorded one exactly); same digits, dequantisation and probes")
    out.write_text(json.dumps(dict(note=note, sigma_min=sigma, rows=rows), indent=1))

if __name__ == '__main__':
    part = sys.argv[1] if len(sys.argv) > 1 else 'bpd'
    parts = dict(bpd=bpd_part, pc=pc_part, formulations=formulations_part, common=common_part)
    if part not in parts: sys.exit('usage: python bench/likelihood.py [bpd|pc|formulations|common] [output folder] [seeds]')
    if part in ('formulations', 'common') and len(sys.argv) > 3: parts[part](tuple(int(a) for a in sys.argv[3:]))
    else: parts[part]()
