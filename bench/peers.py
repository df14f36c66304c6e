"""diffnb against its peers, on the same machine in the same run, at the same wall-clock training budget.

Each system trains unconditionally on the 4,000 digits of `bundled_mnist('train')` for the same number of minutes
(batch 64, AdamW, gradient clipping at 1, the same EMA of the weights, decay 0.995 with warm-up), then draws
500 samples per seed with the same number of model evaluations, and every set is scored by chapter 9's protocol
(`evaluate_sampler`, seeds 0, 1, 2: FID and KID in the feature space of the bundled digit classifier against the
reference half of the held-out digits, which no model has seen; the control half is the real-data floor):

- diffnb: the default `UNet()`, cosine schedule, noise prediction with min-SNR-5 weighting, lr 2e-3 (its defaults);
  sampled with DDIM (50 steps) and with DPM-Solver++(2M) (10 and 20 steps, its default log-SNR spacing).
- diffusers: `UNet2DModel` in the configuration below with `DDPMScheduler()` (linear betas, noise prediction),
  lr 1e-3; sampled with `DDIMScheduler` (50 steps).
- denoising-diffusion-pytorch: `Unet(dim=32, dim_mults=(1, 2, 2), channels=1)` with `GaussianDiffusion` (its
  defaults: v-prediction, sigmoid schedule), lr 1e-3; sampled with its DDIM (50 steps).
- diffnb-linear (only when asked for with `--systems`): diffnb's default `UNet()` trained with diffusers'
  configuration above -- linear schedule, unweighted noise prediction, lr 1e-3 -- through diffnb's `Trainer`, and
  sampled with diffnb's DDIM (50 steps, 'leading' timesteps as diffusers'): it tells a network from an objective.

    pip install -e ".[peers]"
    python bench/peers.py --minutes 10 --out bench/results/peers.json

Scores are mean and standard deviation over the seeds; `per_seed` keeps each seed's values (with KID's jackknife
error) so that two systems can be compared seed by seed (`diffnb.evaluation.paired_difference`). A peer that has
not learned in the budget says nothing about its library's samples. `--steps N` trains each system
for N optimiser steps instead (on any machine; `--device cuda` for a GPU), which separates what a system learns per
step from how many steps its network affords in the time:

    python bench/peers.py --steps 2171 --device cuda --out bench/results/peers_steps.json

(The committed `peers_steps.json` ran one process per system, `--systems diffnb` and so on, side by side on one GPU.)
"""
import argparse, json, time
from pathlib import Path
import torch

def train_loop(name, step_fn, params, minutes, data, bs, lr, ema_target, seed=0, max_steps=None):
    "Plain loop shared by the peers: AdamW, clipping, EMA; returns (EMA model, steps, images/s, mean loss of the last 100 steps)"
    from diffnb.training import EMA
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr)
    ema = EMA(ema_target, 0.995)
    steps, t0, last = 0, time.monotonic(), []
    while steps < max_steps if max_steps else time.monotonic() - t0 < minutes * 60:
        idx = torch.randint(0, len(data), (bs,), generator=g)
        loss = step_fn(data[idx], g)
        last = (last + [loss.item()])[-100:]
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0)
        for grp in opt.param_groups: grp['lr'] = lr * min(1.0, (steps + 1) / 100)
        opt.step(); ema.update(ema_target); steps += 1
        if steps % 100 == 0: print(f'  {name}: step {steps}, loss {loss.item():.4f}, {time.monotonic() - t0:.0f} s', flush=True)
    if data.is_cuda: torch.cuda.synchronize()
    secs = time.monotonic() - t0
    return ema.model.eval(), steps, steps * bs / secs, sum(last) / max(1, len(last))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, default=10.0, help='training budget of each system')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='one held-out split and one set of 500 samples per seed')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=None, help='train each system for this many optimiser steps instead of --minutes')
    p.add_argument('--systems', nargs='+', default=list(SYSTEMS), choices=[*SYSTEMS, 'diffnb-linear'])
    p.add_argument('--device', default='cpu', help="where to train and sample ('cuda' for a GPU, with --steps)")
    p.add_argument('--out', default='bench/results/peers.json')
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == 'cuda': torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # full float32, as on a CPU
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from diffnb.data import bundled_mnist
    from diffnb.evaluation import load_classifier, evaluate_sampler
    from diffnb.schedules import cosine_schedule
    train_part = bundled_mnist('train')
    X = train_part.images.to(dev)             # the same 4,000 training digits for every system, in [-1, 1]
    clf, n, results = load_classifier().to(dev), 500, []
    def score(system, sampler, nfe, params, steps, ips, loss, fn):
        def make(seed):
            t0 = time.monotonic(); x = fn(seed); make.secs = time.monotonic() - t0
            return x, None
        r = evaluate_sampler(make, tuple(a.seeds), clf)
        results.append(dict(system=system, params=params, train_steps=steps, train_images_per_s=round(ips, 1), final_loss=round(loss, 4),
                            sampler=sampler, nfe=nfe, fid=[round(v, 3) for v in r['samples']['fid']], kid=[round(v, 5) for v in r['samples']['kid']],
                            control_fid=[round(v, 3) for v in r['control']['fid']], control_kid=[round(v, 5) for v in r['control']['kid']],
                            per_seed=[dict(seed=q['seed'], fid=round(q['samples']['fid'], 3), kid=round(q['samples']['kid'], 5),
                                           kid_se=round(q['samples']['kid_se'], 5), control_fid=round(q['control']['fid'], 3),
                                           control_kid=round(q['control']['kid'], 5)) for q in r['runs']],
                            sample_seconds=round(make.secs, 1)))
        print(json.dumps(results[-1]), flush=True)

    if 'diffnb' in a.systems:          # diffnb, through its own Trainer (its defaults)
        diffnb_rows('diffnb', cosine_schedule(), a, train_part, n, score, dev)
    if 'diffnb-linear' in a.systems:   # diffnb's network, diffusers' objective
        from diffnb.schedules import linear_schedule
        from diffnb.training import NoisePrediction
        diffnb_rows('diffnb-linear', NoisePrediction(linear_schedule(), 'eps', None), a, train_part, n, score, dev, ('DDIM',), lr=1e-3)
    if 'diffusers' in a.systems: diffusers_rows(a, X, n, score, dev)
    if 'denoising-diffusion-pytorch' in a.systems: ddp_rows(a, X, n, score, dev)

    out = dict(minutes=None if a.steps else a.minutes, steps=a.steps, device=str(dev), samples=n, seeds=a.seeds, batch_size=a.batch_size,
               threads=torch.get_num_threads(), torch=torch.__version__, results=results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print('\n| system | parameters | training steps (images/s) | final loss | sampler | model calls | FID | KID x 1000 | sampling time |')
    print('|---|---:|---:|---:|---|---:|---:|---:|---:|')
    for r in results:
        print(f"| {r['system']} | {r['params'] / 1e6:.2f} M | {r['train_steps']} ({r['train_images_per_s']:.0f}) | {r['final_loss']:.3f} | {r['sampler']} | {r['nfe']} | "
              f"{r['fid'][0]:.2f} ± {r['fid'][1]:.2f} | {1000 * r['kid'][0]:.1f} ± {1000 * r['kid'][1]:.1f} | {r['sample_seconds']:.0f} s |")
    c = results[0]
    print(f"| real control digits | | | | | | {c['control_fid'][0]:.2f} ± {c['control_fid'][1]:.2f} | {1000 * c['control_kid'][0]:.1f} ± {1000 * c['control_kid'][1]:.1f} | |")

def diffnb_rows(system, s, a, data, n, score, dev, samplers=('DDIM', 'DDIM, log-SNR timesteps', 'DPM-Solver++(2M)'), **kw):
    "Train diffnb's default `UNet` through its `Trainer` on the schedule or formulation `s`, then score it with each of `samplers`"
    from diffnb.unet import UNet, n_params
    from diffnb.training import Trainer
    from diffnb.ddim import ddim_sample, dpm_solver_sample
    torch.manual_seed(0)
    tr = Trainer(UNet(), s, data, batch_size=a.batch_size, progress=False, device=dev, **kw)
    t0 = time.monotonic(); tr.fit(steps=a.steps) if a.steps else tr.fit(time_budget=a.minutes * 60)
    ips = tr.step * a.batch_size / (time.monotonic() - t0)
    m, s = tr.ema.model.eval(), tr.s
    loss = sum(l for _, l in tr.history[-4:]) / len(tr.history[-4:])
    seed = lambda k: torch.Generator().manual_seed(k)
    runs = {'DDIM': [(50, lambda k: ddim_sample(m, s, (n, 1, 28, 28), steps=50, generator=seed(k)))],
            'DDIM, log-SNR timesteps': [(10, lambda k: ddim_sample(m, s, (n, 1, 28, 28), steps=10, spacing='logsnr', generator=seed(k)))],
            'DPM-Solver++(2M)': [(k_, lambda k, k_=k_: dpm_solver_sample(m, s, (n, 1, 28, 28), steps=k_, generator=seed(k))) for k_ in (10, 20)]}
    for sampler in samplers:
        for nfe, fn in runs[sampler]: score(system, sampler, nfe, n_params(m), tr.step, ips, loss, fn)

def diffusers_rows(a, X, n, score, dev):
    "Train diffusers' UNet2DModel with DDPMScheduler and score it with DDIMScheduler"
    from diffnb.unet import n_params
    from diffusers import UNet2DModel, DDPMScheduler, DDIMScheduler
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=2,
                       down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
                       up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D')).to(dev)
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    def diffusers_step(x0, g):
        noise = torch.randn(x0.shape, generator=g).to(dev); t = torch.randint(0, 1000, (len(x0),), generator=g).to(dev)
        return torch.nn.functional.mse_loss(unet(ddpm.add_noise(x0, noise, t), t).sample, noise)
    ema_unet, steps, ips, loss = train_loop('diffusers', diffusers_step, list(unet.parameters()), a.minutes, X, a.batch_size, 1e-3, unet, max_steps=a.steps)
    def diffusers_sample(k):
        sch = DDIMScheduler.from_config(ddpm.config); sch.set_timesteps(50)
        x = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(k)).to(dev)
        with torch.inference_mode():
            for t in sch.timesteps: x = sch.step(ema_unet(x, t).sample, t, x).prev_sample
        return x
    score('diffusers', 'DDIM', 50, n_params(unet), steps, ips, loss, diffusers_sample)

def ddp_rows(a, X, n, score, dev):
    "Train denoising-diffusion-pytorch's Unet with its GaussianDiffusion and score it with its DDIM"
    from diffnb.unet import n_params
    from denoising_diffusion_pytorch import Unet, GaussianDiffusion
    torch.manual_seed(0)
    net = Unet(dim=32, dim_mults=(1, 2, 2), channels=1)
    diff = GaussianDiffusion(net, image_size=28, timesteps=1000, sampling_timesteps=50).to(dev)
    def ddp_step(x0, g):
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))   # it draws its own t and noise
        return diff((x0 + 1) / 2)                                            # it expects images in [0, 1]
    ema_diff, steps, ips, loss = train_loop('denoising-diffusion-pytorch', ddp_step, list(diff.parameters()), a.minutes, X, a.batch_size, 1e-3, diff, max_steps=a.steps)
    def ddp_sample(k):
        torch.manual_seed(k)
        with torch.inference_mode(): return ema_diff.sample(batch_size=n) * 2 - 1
    score('denoising-diffusion-pytorch', 'DDIM', 50, n_params(net), steps, ips, loss, ddp_sample)

SYSTEMS = ('diffnb', 'diffusers', 'denoising-diffusion-pytorch')

if __name__ == '__main__': main()
