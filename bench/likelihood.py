"""Bits per dimension of the held-out digits under the bundled model, an independent check of the integration, and
predictor-corrector sampling against DDIM and DPM-Solver++(2M) at equal model calls (chapter 9's protocol).

    OMP_NUM_THREADS=1 python bench/likelihood.py bpd   # about 6 CPU-minutes -> bench/results/likelihood.json
    OMP_NUM_THREADS=1 python bench/likelihood.py pc    # about 17 CPU-minutes -> bench/results/likelihood_pc.json

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
N_BPD, STEPS, SEED = 50, 64, 0           # held-out digits, Heun steps, seed of the dequantisation and the probes

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
    mine = {n: log_likelihood(model, s, xq, steps=n, generator=torch.Generator().manual_seed(2)) for n in (16, 32, 64)}
    t0 = time.time(); ref, nfev = independent(model, s, xq, z); secs = time.time() - t0
    to_bpd = lambda lp: (-lp / (784 * math.log(2)) - math.log2(BIN)).tolist()
    check = dict(images=3, scipy=dict(bpd=to_bpd(ref), nfev=int(nfev), seconds=round(secs, 1), method='RK45', rtol=1e-6, atol=1e-6),
                 heun={str(n): to_bpd(v) for n, v in mine.items()})
    print(json.dumps(check, indent=1))
    held_all = dict(bpd=r['bpd'], se=r['se'], n=r['n'], seconds=round(r['seconds'], 1), steps=STEPS, trace='hutchinson',
                    seed=SEED, model_calls_per_image=2 * STEPS, per_image=[round(v, 5) for v in r['per_image'].tolist()])
    note = (f"bits_per_dim of the bundled model (unconditional, y=None) on {N_BPD} held-out digits drawn at random (torch.randperm, seed {SEED}), uniform "
            f"dequantisation, Heun with {STEPS} steps in log sigma, one Rademacher probe per image; 'check' compares three "
            "images against scipy's RK45 at rtol 1e-6 in another variable with the same probe; one CPU thread, "
            f"torch {torch.__version__}; the machine ran other jobs")
    (OUT/'likelihood.json').write_text(json.dumps(dict(note=note, heldout=held_all, check=check), indent=1))

def pc_part(steps=20, n=500, seeds=(0, 1, 2)):
    model, s = load_pretrained()
    clf = load_classifier()
    rows = {}
    for name, kw in (('pc', {}), ('solver', dict(spacing='logsnr')), ('ddim', dict(spacing='logsnr'))):
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

if __name__ == '__main__':
    part = sys.argv[1] if len(sys.argv) > 1 else 'bpd'
    if part not in ('bpd', 'pc'): sys.exit('usage: python bench/likelihood.py [bpd|pc] [output folder]')
    bpd_part() if part == 'bpd' else pc_part()
