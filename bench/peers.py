"""diffnb against its peers, on the same machine in the same run, at the same wall-clock training budget.

Each system trains unconditionally on the bundled 5,000 digits for the same number of minutes (batch 64, AdamW,
the same EMA of the weights, decay 0.995 with warm-up), then draws the same number of samples with the same
number of model evaluations, and every set is scored by diffnb's evaluation (FID and KID in the feature space of
the bundled digit classifier, against the 4,500 training digits):

- diffnb: the default `UNet()`, cosine schedule, noise prediction with min-SNR-5 weighting, lr 2e-3 (its defaults);
  sampled with DDIM (50 steps) and with DPM-Solver++(2M) (10 and 20 steps, its default log-SNR spacing).
- diffusers: `UNet2DModel` in the configuration below with `DDPMScheduler()` (linear betas, noise prediction),
  lr 1e-3; sampled with `DDIMScheduler` (50 steps).
- denoising-diffusion-pytorch: `Unet(dim=32, dim_mults=(1, 2, 2), channels=1)` with `GaussianDiffusion` (its
  defaults: v-prediction, sigmoid schedule), lr 1e-3; sampled with its DDIM (50 steps).

    pip install -e ".[peers]"
    python bench/peers.py --minutes 10 --samples 500 --out bench/results/peers.json
"""
import argparse, json, sys, time
from pathlib import Path
import torch

def train_loop(name, step_fn, params, minutes, data, bs, lr, ema_target, seed=0):
    "Plain loop shared by the peers: AdamW, clipping, EMA; returns (steps, images/s)"
    from diffnb.training import EMA
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr)
    ema = EMA(ema_target, 0.995)
    steps, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < minutes * 60:
        idx = torch.randint(0, len(data), (bs,), generator=g)
        loss = step_fn(data[idx], g)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0)
        for grp in opt.param_groups: grp['lr'] = lr * min(1.0, (steps + 1) / 100)
        opt.step(); ema.update(ema_target); steps += 1
        if steps % 100 == 0: print(f'  {name}: step {steps}, loss {loss.item():.4f}, {time.monotonic() - t0:.0f} s', flush=True)
    secs = time.monotonic() - t0
    return ema.model.eval(), steps, steps * bs / secs

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, default=10.0, help='training budget of each system')
    p.add_argument('--samples', type=int, default=500, help='samples per sampler')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--out', default='bench/results/peers.json')
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from diffnb.data import bundled_mnist
    from diffnb.evaluation import split_bundled, load_classifier, evaluate
    from diffnb.unet import UNet, n_params
    from diffnb.schedules import cosine_schedule
    from diffnb.training import Trainer
    from diffnb.ddim import ddim_sample, dpm_solver_sample
    train_part, _ = split_bundled()
    X = train_part.images                     # the same 4,500 training digits for every system, in [-1, 1]
    clf, n, results = load_classifier(), a.samples, []
    def score(system, sampler, nfe, params, steps, ips, fn):
        t0 = time.monotonic(); x = fn(); secs = time.monotonic() - t0
        r = evaluate(x.clamp(-1, 1), X, classifier=clf)
        results.append(dict(system=system, params=params, train_steps=steps, train_images_per_s=round(ips, 1), sampler=sampler,
                            nfe=nfe, fid=round(r['fid'], 3), kid=round(r['kid'], 5), kid_sd=round(r['kid_sd'], 5),
                            sample_seconds=round(secs, 1)))
        print(json.dumps(results[-1]), flush=True)

    # diffnb, through its own Trainer (its defaults)
    torch.manual_seed(0)
    tr = Trainer(UNet(), cosine_schedule(), train_part, batch_size=a.batch_size, progress=False, device='cpu')
    t0 = time.monotonic(); tr.fit(time_budget=a.minutes * 60); ips = tr.step * a.batch_size / (time.monotonic() - t0)
    m, s = tr.ema.model.eval(), tr.s
    for sampler, nfe, fn in [('DDIM', 50, lambda: ddim_sample(m, s, (n, 1, 28, 28), steps=50, generator=torch.Generator().manual_seed(1))),
                             ('DPM-Solver++(2M)', 10, lambda: dpm_solver_sample(m, s, (n, 1, 28, 28), steps=10, generator=torch.Generator().manual_seed(1))),
                             ('DPM-Solver++(2M)', 20, lambda: dpm_solver_sample(m, s, (n, 1, 28, 28), steps=20, generator=torch.Generator().manual_seed(1)))]:
        score('diffnb', sampler, nfe, n_params(m), tr.step, ips, fn)

    # diffusers
    from diffusers import UNet2DModel, DDPMScheduler, DDIMScheduler
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=2,
                       down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
                       up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'))
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    def diffusers_step(x0, g):
        noise = torch.randn(x0.shape, generator=g); t = torch.randint(0, 1000, (len(x0),), generator=g)
        return torch.nn.functional.mse_loss(unet(ddpm.add_noise(x0, noise, t), t).sample, noise)
    ema_unet, steps, ips = train_loop('diffusers', diffusers_step, list(unet.parameters()), a.minutes, X, a.batch_size, 1e-3, unet)
    def diffusers_sample():
        sch = DDIMScheduler.from_config(ddpm.config); sch.set_timesteps(50)
        x = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            for t in sch.timesteps: x = sch.step(ema_unet(x, t).sample, t, x).prev_sample
        return x
    score('diffusers', 'DDIM', 50, n_params(unet), steps, ips, diffusers_sample)

    # denoising-diffusion-pytorch
    from denoising_diffusion_pytorch import Unet, GaussianDiffusion
    torch.manual_seed(0)
    net = Unet(dim=32, dim_mults=(1, 2, 2), channels=1)
    diff = GaussianDiffusion(net, image_size=28, timesteps=1000, sampling_timesteps=50)
    def ddp_step(x0, g):
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))   # it draws its own t and noise
        return diff((x0 + 1) / 2)                                            # it expects images in [0, 1]
    ema_diff, steps, ips = train_loop('denoising-diffusion-pytorch', ddp_step, list(diff.parameters()), a.minutes, X, a.batch_size, 1e-3, diff)
    def ddp_sample():
        torch.manual_seed(1)
        with torch.inference_mode(): return ema_diff.sample(batch_size=n) * 2 - 1
    score('denoising-diffusion-pytorch', 'DDIM', 50, n_params(net), steps, ips, ddp_sample)

    ref = evaluate(_heldout(), X, classifier=clf)
    out = dict(minutes=a.minutes, samples=n, batch_size=a.batch_size, threads=torch.get_num_threads(), torch=torch.__version__,
               real_heldout_fid=round(ref['fid'], 3), results=results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print('\n| system | parameters | training steps (images/s) | sampler | model calls | FID | KID x 1000 | sampling time |')
    print('|---|---:|---:|---|---:|---:|---:|---:|')
    for r in results:
        print(f"| {r['system']} | {r['params'] / 1e6:.2f} M | {r['train_steps']} ({r['train_images_per_s']:.0f}) | {r['sampler']} | {r['nfe']} | "
              f"{r['fid']:.2f} | {1000 * r['kid']:.2f} ± {1000 * r['kid_sd']:.2f} | {r['sample_seconds']:.0f} s |")
    print(f"| real held-out digits | | | | | {ref['fid']:.2f} | | |")

def _heldout():
    from diffnb.evaluation import split_bundled
    return split_bundled()[1].images

if __name__ == '__main__': main()
