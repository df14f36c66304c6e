"""What the autoencoder's choices do: the KL weight and the latent shape, and the latent scale.

Part `variants` trains `VAE`s that differ in one choice from the shipped one (4x8x8 latents, kl_weight 1e-3) for the
same 600 steps of batch 64, seed 0 (the shipped autoencoder had 1,500), and scores each on the held-out digits: PSNR
of the reconstructions, chapter 9's FID of the reconstructed control half against the reference half (splits 0-2:
mean ± sd over the splits, one training seed), the standard deviation of the latents (so the scale), and the KL per
latent element.

Part `scale` trains the latent U-Net of `bench/latent.py` on the shipped autoencoder's latents with the latent scale
multiplied by 0.2, 1 and 5 -- latents with standard deviation 0.2, 1 and 5, the first and last as an unscaled
autoencoder could give them -- for the same number of steps (1,000 by default: about what `bench/latent.py`'s
latent U-Net makes in its budget), with the same seeds, sampler and scoring; only the scale changes.

    OMP_NUM_THREADS=1 python bench/autoencoder.py variants --out bench/results/autoencoder_variants.json
    for s in 0 1 2; do OMP_NUM_THREADS=1 python bench/autoencoder.py scale --seeds $s --out scale$s.json & done; wait
    python bench/autoencoder.py merge --merge scale0.json scale1.json scale2.json --out bench/results/autoencoder_scale.json
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

def scale(steps, seeds, factors):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from latent import run
    from diffnb.evaluation import load_classifier
    clf, rows = load_classifier(), []
    for seed in seeds:
        for k in factors:
            rows.append(run('latent-unet', seed, None, clf, scale_factor=k, steps=steps)); print(json.dumps(rows[-1]), flush=True)
    return dict(steps=steps, seeds=seeds, rows=rows)

def merge(files):
    "The rows of several result files of the scale part (one process per seed), checked to share their step count"
    ds = [json.loads(Path(f).read_text()) for f in files]
    if len({d['steps'] for d in ds}) != 1: raise SystemExit(f"the files have different step counts: {[d['steps'] for d in ds]}")
    rows = sorted((r for d in ds for r in d['rows']), key=lambda r: (r['scale_factor'], r['seed']))
    return dict(ds[0], seeds=sorted({r['seed'] for r in rows}), rows=rows)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('part', choices=('variants', 'scale', 'merge'))
    p.add_argument('--steps', type=int, default=None, help='training steps: of each autoencoder (variants, default 600) or latent U-Net (scale, default 1000)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--factors', type=float, nargs='+', default=[0.2, 1.0, 5.0], help='scale: multiples of the latent scale')
    p.add_argument('--merge', nargs='+', help='merge: result files of the scale part and of bench/latent.py')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    if a.part == 'merge':
        Path(a.out).write_text(json.dumps(merge(a.merge), indent=1)); return
    res = variants(a.steps or 600) if a.part == 'variants' else scale(a.steps or 1000, a.seeds, a.factors)
    res.update(threads=torch.get_num_threads(), torch=torch.__version__, machine=platform.processor() or platform.machine())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
