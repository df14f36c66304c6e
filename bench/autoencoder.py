"""What the autoencoder's choices do: the KL weight and the latent shape, and the latent scale.

Part `variants` trains `VAE`s that differ in one choice from the shipped one (4x8x8 latents, kl_weight 1e-3) for the
same 600 steps of batch 64, seed 0 (the shipped autoencoder had 1,500), and scores each on the held-out digits: PSNR
of the reconstructions, chapter 9's FID of the reconstructed control half against the reference half (splits 0-2:
mean ± sd over the splits, one training seed), the standard deviation of the latents (so the scale), and the KL per
latent element.

Part `scale` trains the latent U-Net of `bench/latent.py` on the shipped autoencoder's latents for the same CPU
budget with the latent scale multiplied by 0.2, 1 and 5 -- latents with standard deviation 0.2, 1 and 5, as an
unscaled autoencoder could give -- and scores its samples the same way (two seeds).

    OMP_NUM_THREADS=1 python bench/autoencoder.py variants --out bench/results/autoencoder_variants.json
    OMP_NUM_THREADS=1 python bench/autoencoder.py scale --cpu-seconds 120 --seeds 0 1 --out bench/results/autoencoder_scale.json
"""
import argparse, json, platform, sys, time
from pathlib import Path
import torch

VARIANTS = {'shipped choices: 4x8x8, kl 1e-3': dict(kl_weight=1e-3),
            'kl 1e-4': dict(kl_weight=1e-4), 'kl 1e-2': dict(kl_weight=1e-2),
            '2x14x14 (one halving)': dict(kl_weight=1e-3, latent_channels=2, downsamplings=1, channels=(16, 32)),
            '1x8x8 (a quarter of the numbers)': dict(kl_weight=1e-3, latent_channels=1)}

def variants(steps):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent/'tools'))
    from make_autoencoder import scores
    from diffnb.data import bundled_mnist
    from diffnb.latent import VAE, train_autoencoder, latent_scale, encode_images
    train, rows = bundled_mnist('train'), []
    for name, kw in VARIANTS.items():
        kl_weight = kw.pop('kl_weight')
        torch.manual_seed(0); vae = VAE(**kw)
        c0 = time.process_time()
        hist = train_autoencoder(vae, train, steps=steps, kl_weight=kl_weight, seed=0)
        secs = time.process_time() - c0
        scale = latent_scale(vae, train)
        rows.append(dict(name=name, kl_weight=kl_weight, **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                         latent_shape=list(vae.latent_shape), latent_numbers=int(torch.tensor(vae.latent_shape).prod()),
                         params=sum(p.numel() for p in vae.parameters()), cpu_seconds=round(secs, 1), latent_std=round(1 / scale, 4),
                         kl_per_element=round(hist[-1][2], 4), **scores(vae)))
        print(json.dumps(rows[-1]), flush=True)
    return dict(steps=steps, rows=rows)

def scale(cpu_seconds, seeds):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from latent import run
    from diffnb.evaluation import load_classifier
    clf, rows = load_classifier(), []
    for seed in seeds:
        for k in (0.2, 1.0, 5.0):
            rows.append(run('latent-unet', seed, cpu_seconds, clf, scale_factor=k)); print(json.dumps(rows[-1]), flush=True)
    return dict(cpu_seconds=cpu_seconds, seeds=seeds, rows=rows)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('variants', 'scale'))
    p.add_argument('--steps', type=int, default=600)
    p.add_argument('--cpu-seconds', type=float, default=120.0)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--out', required=True)
    a = p.parse_args()
    res = variants(a.steps) if a.part == 'variants' else scale(a.cpu_seconds, a.seeds)
    res.update(threads=torch.get_num_threads(), torch=torch.__version__, machine=platform.processor() or platform.machine())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
