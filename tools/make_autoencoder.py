"""Train the autoencoder that ships with diffnb and write it as a model folder (diffnb/assets/mnist-vae by default).

    OMP_NUM_THREADS=2 python tools/make_autoencoder.py                  # about eight minutes on two CPU cores

`VAE()` (4x8x8 latents) for 1,500 steps of batch 64 on the 4,000 training digits, kl_weight 1e-3, seed 0. The card
records the command, the time, and the scores on the held-out digits, which no model of diffnb trains on: PSNR of the
reconstructions, and chapter 9's FID, KID and class accuracy of the reconstructed control half against the reference
half (seeds 0-2), beside the real control half's own scores -- the floor no latent model can beat.
"""
import argparse, platform, sys, time
from pathlib import Path
import torch

def scores(vae, seeds=(0, 1, 2)):
    "PSNR of held-out reconstructions, and chapter 9's scores of reconstructed against real held-out digits"
    from diffnb.data import bundled_mnist
    from diffnb.evaluation import heldout_halves, evaluate, load_classifier
    from diffnb.latent import encode_images
    ho, clf = bundled_mnist('heldout'), load_classifier()
    with torch.no_grad():
        rec = vae.decode(encode_images(vae, ho.images)).clamp(-1, 1)
    mse = (rec - ho.images).pow(2).flatten(1).mean(1)
    out = dict(psnr_db=round(float((10 * torch.log10(4 / mse)).mean()), 2), mse_per_pixel=round(float(mse.mean()), 5))
    fids, ctrl_fids, accs = [], [], []
    for seed in seeds:
        ref, ctrl = heldout_halves(seed)
        with torch.no_grad(): r = vae.decode(encode_images(vae, ctrl.images)).clamp(-1, 1)
        e, c = evaluate(r, ref.images, ctrl.labels, clf), evaluate(ctrl.images, ref.images, ctrl.labels, clf)
        fids.append(e['fid']); ctrl_fids.append(c['fid']); accs.append(e['accuracy'])
    ms = lambda v: f'{torch.tensor(v).mean():.3f} ± {torch.tensor(v).std():.3f}'
    out.update(reconstruction_fid=ms(fids), control_fid=ms(ctrl_fids), reconstruction_accuracy=ms(accs),
               fid_seeds=[round(v, 4) for v in fids], control_fid_seeds=[round(v, 4) for v in ctrl_fids])
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=1500)
    p.add_argument('--kl-weight', type=float, default=1e-3)
    p.add_argument('--latent-channels', type=int, default=4)
    p.add_argument('--downsamplings', type=int, default=2)
    p.add_argument('--channels', type=int, nargs='+', default=[16, 32, 64])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(Path(__file__).resolve().parent.parent/'diffnb'/'assets'/'mnist-vae'))
    a = p.parse_args()
    from diffnb.data import bundled_mnist
    from diffnb.latent import VAE, train_autoencoder, latent_scale, save_autoencoder
    train = bundled_mnist('train')
    torch.manual_seed(a.seed)
    vae = VAE(latent_channels=a.latent_channels, downsamplings=a.downsamplings, channels=tuple(a.channels))
    t0 = time.monotonic()
    hist = train_autoencoder(vae, train, steps=a.steps, kl_weight=a.kl_weight, seed=a.seed)
    secs = time.monotonic() - t0
    scale = latent_scale(vae, train)
    sc = scores(vae)
    info = dict(command='OMP_NUM_THREADS=2 python tools/make_autoencoder.py ' + ' '.join(sys.argv[1:]), steps=a.steps, seconds=round(secs, 1),
                device=f'CPU ({platform.machine()}), {torch.get_num_threads()} threads', torch=torch.__version__, kl_weight=a.kl_weight,
                batch_size=64, lr=2e-3, seed=a.seed, data='bundled MNIST, training part (4,000 digits)',
                final_losses=dict(mse_per_pixel=round(hist[-1][1], 5), kl_per_element=round(hist[-1][2], 4)), scores=sc)
    save_autoencoder(vae, a.out, scale, info, overwrite=True)
    print(f'{a.out}: {secs:.0f} s, scale {scale:.4f}, {sc}')

if __name__ == '__main__': main()
