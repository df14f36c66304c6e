"""Pixel or latent, U-Net or DiT: four flow-matching models of the bundled digits trained for the same CPU time.

The rows change one thing at a time: the space (pixels 1x28x28, or the bundled autoencoder's scaled latents 4x8x8)
and the network (chapter 3's U-Net or chapter 12c's DiT). The networks have about the same parameters in both spaces:
the pixel U-Net is the default `UNet` (16, 32, 64 channels), the latent one has two levels of 32 and 64 channels
(the latent is already 8x8); the DiT is the default width 128 and depth 6 with patches of 4 pixels, or of 2x2 latent
cells. Everything else is the same: flow matching (chapter 12), class-conditional with 10% label dropout, batch 64,
AdamW at lr 1e-3 with 100 warm-up steps, EMA 0.995, gradient clipping at 1 -- and the budget, in CPU seconds of the
training process (`time.process_time`, one thread: what the run costs whatever else the machine does). The latent
rows use the autoencoder that ships with diffnb (`load_autoencoder()`), whose training is paid once and reported
separately (its card). Every model then draws 500 class-conditional samples with Euler, 20 steps, scored by chapter
9's protocol (`evaluate_sampler` with the model's seed: FID and KID against the reference half of the held-out
digits, class accuracy by the bundled classifier); the decoder's reconstructions of the control half give the floor
a latent model cannot beat.

    OMP_NUM_THREADS=1 python bench/latent.py --cpu-seconds 240 --seeds 0 --out a.json &     # one process per core
    OMP_NUM_THREADS=1 python bench/latent.py --cpu-seconds 240 --seeds 1 2 --out b.json
    python bench/latent.py --merge a.json b.json --out bench/results/latent_2min.json

240 CPU seconds on one thread is two minutes of two cores; `--cpu-seconds 1200` is the ten-minute budget
(bench/results/latent_10min.json: seeds 0 and 1 in one process each, then seed 2's pixel rows in the first and its
latent rows in the second).
"""
import argparse, json, platform, time
from pathlib import Path
import torch

ROWS = ('pixel-unet', 'pixel-dit', 'latent-unet', 'latent-dit')

def build(row, seed, scale_factor=1.0):
    "The model of a row, freshly initialised with `seed` (a latent row's scale multiplied by `scale_factor`)"
    from diffnb.dit import build_backbone
    from diffnb.latent import LatentDiffusion, load_autoencoder
    torch.manual_seed(seed)
    space, bb = row.split('-')
    if space == 'pixel':
        return build_backbone(bb, in_channels=1, img_size=28, n_classes=10, prediction='flow')
    vae, scale = load_autoencoder()
    C, h, _ = vae.latent_shape
    kw = dict(channels=(32, 64), attn_levels=(1,)) if bb == 'unet' else dict(patch=2)
    torch.manual_seed(seed)
    return LatentDiffusion(build_backbone(bb, in_channels=C, img_size=h, n_classes=10, prediction='flow', **kw), vae, scale * scale_factor)

def gflops(model, shape):
    "GFLOPs of one forward pass per image (the network alone; for a latent model also its decoder, paid once per sample)"
    from torch.utils.flop_counter import FlopCounterMode
    x, t, y = torch.randn(4, *shape), torch.rand(4), torch.randint(0, 10, (4,))
    with FlopCounterMode(display=False) as fc, torch.no_grad(): model(x, t, y)
    net = fc.get_total_flops() / 4 / 1e9
    if not hasattr(model, 'decode'): return net, 0.0
    with FlopCounterMode(display=False) as fc, torch.no_grad(): model.decode(x)
    return net, fc.get_total_flops() / 4 / 1e9

def run(row, seed, cpu_seconds, clf, scale_factor=1.0, steps=None):
    "Train a row's model for `cpu_seconds` of CPU time (or exactly `steps` steps), sample and score it"
    from diffnb.data import bundled_mnist
    from diffnb.flow import FlowMatching
    from diffnb.training import Trainer
    from diffnb.sampling import sample
    from diffnb.evaluation import evaluate_sampler
    from diffnb.latent import latent_dataset
    model = build(row, seed, scale_factor)
    data = bundled_mnist('train')
    c0 = time.process_time()
    if hasattr(model, 'decode'): data = latent_dataset(model, data)
    encode_seconds = time.process_time() - c0
    tr = Trainer(model, FlowMatching(), data, batch_size=64, lr=1e-3, warmup=100, seed=seed, progress=False, device='cpu')
    c0, w0 = time.process_time(), time.monotonic()
    if steps: tr.fit(steps=steps)
    while not steps and time.process_time() - c0 < cpu_seconds: tr.fit(steps=10)
    secs, wall = time.process_time() - c0, time.monotonic() - w0
    m, s = tr.ema.model.eval(), tr.s
    def make(k):
        g = torch.Generator().manual_seed(k)
        y = torch.randint(0, 10, (500,), generator=g)
        c1 = time.process_time()
        x = sample(m, s, (500, *data.shape), sampler='flow-euler', steps=20, y=y, generator=g)
        make.secs = time.process_time() - c1
        return x, y
    r = evaluate_sampler(make, (seed,), clf)['runs'][0]
    net, dec = gflops(m, data.shape)
    return dict(row=row, seed=seed, scale_factor=scale_factor, params=sum(p.numel() for n, p in m.named_parameters() if not n.startswith('autoencoder.')),
                gflop_net=round(net, 4), gflop_decode=round(dec, 4), cpu_seconds=round(secs, 1), wall_seconds=round(wall, 1),
                encode_cpu_seconds=round(encode_seconds, 1), train_steps=tr.step, train_img_per_cpu_s=round(tr.step * 64 / secs, 1),
                final_loss=tr.history[-1][1] if tr.history else None, sample_img_per_cpu_s=round(500 / make.secs, 1),
                fid=r['samples']['fid'], kid=r['samples']['kid'], kid_se=r['samples']['kid_se'], accuracy=r['samples']['accuracy'],
                control_fid=r['control']['fid'], control_accuracy=r['control']['accuracy'])

def floor(seeds, clf):
    "The autoencoder's reconstructions of the control half, scored like samples: what a latent model can at best reach"
    from diffnb.evaluation import heldout_halves, evaluate
    from diffnb.latent import load_autoencoder, encode_images
    vae, _ = load_autoencoder()
    out = []
    for seed in seeds:
        ref, ctrl = heldout_halves(seed)
        with torch.no_grad(): rec = vae.decode(encode_images(vae, ctrl.images)).clamp(-1, 1)
        e = evaluate(rec, ref.images, ctrl.labels, clf)
        out.append(dict(seed=seed, fid=e['fid'], kid=e['kid'], accuracy=e['accuracy']))
    return out

def summarise(rows, floors):
    from statistics import mean, stdev
    sd = lambda v: stdev(v) if len(v) > 1 else float('nan')
    print('| row | params | GFLOP/img (net; decode) | train img per CPU s | steps | FID | KID x 1000 | accuracy | control FID |')
    for name in ROWS:
        rs = [r for r in rows if r['row'] == name]
        if not rs: continue
        f = lambda k, sc=1: f"{mean(sc * r[k] for r in rs):.2f} ± {sd([sc * r[k] for r in rs]):.2f}"
        print(f"| {name} | {rs[0]['params']:,} | {rs[0]['gflop_net']:.3f}; {rs[0]['gflop_decode']:.3f} | {mean(r['train_img_per_cpu_s'] for r in rs):.0f} | "
              f"{mean(r['train_steps'] for r in rs):.0f} | {f('fid')} | {f('kid', 1000)} | {f('accuracy', 100)}% | {f('control_fid')} |")
    if floors: print('autoencoder floor (reconstructions of the control half): FID', ', '.join(f"{r['fid']:.2f}" for r in floors))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cpu-seconds', type=float, default=240.0, help='training budget of each run, in CPU seconds of the process')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--rows', nargs='+', default=list(ROWS), choices=ROWS)
    p.add_argument('--merge', nargs='+', help='merge the rows of these result files into --out')
    p.add_argument('--out', default='bench/results/latent.json')
    p.add_argument('--note', help='with --merge: a line recording how the merged files were made')
    a = p.parse_args()
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        rows = sorted((r for q in parts for r in q['rows']), key=lambda r: (ROWS.index(r['row']), r['seed']))
        floors = sorted({r['seed']: r for q in parts for r in q['floor']}.values(), key=lambda r: r['seed'])
        out = dict(parts[0], seeds=sorted({r['seed'] for r in rows}), rows=rows, floor=floors)
        if a.note: out['note'] = a.note
        Path(a.out).write_text(json.dumps(out, indent=1)); summarise(rows, floors); return
    from diffnb.evaluation import load_classifier
    clf, rows = load_classifier(), []
    for seed in a.seeds:
        for row in a.rows:
            rows.append(run(row, seed, a.cpu_seconds, clf)); print(json.dumps(rows[-1]), flush=True)
    floors = floor(a.seeds, clf)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(cpu_seconds=a.cpu_seconds, seeds=a.seeds, threads=torch.get_num_threads(), torch=torch.__version__,
                                           machine=platform.processor() or platform.machine(), rows=rows, floor=floors), indent=1))
    summarise(rows, floors)

if __name__ == '__main__': main()
