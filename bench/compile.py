"""torch.compile against eager for training and sampling, measured side by side: compile time, steps/s, break-even.

Training: two `Trainer`s of the default class-conditional U-Net on the bundled digits (batch 64, the command line's
defaults), one with `compile=True`. The compiled one's first step compiles (forward and backward); its time minus an
eager step is the compile cost. Then rounds alternate eager, compiled, eager, ... of `--steps` steps each and the
medians of the seconds per step are compared. Sampling: the bundled model with DDIM at batch 64, `sample(...)` with
and without `compile=True`, the same way (the first compiled call compiles the inference graph).
Break-even: after how many steps the compile time is paid back, compile seconds / (eager - compiled seconds a step);
"never" when compiled steps are not faster.

    python bench/compile.py                       # 2 threads, 6 rounds of 10 steps
    python bench/compile.py --threads 1 --rounds 5 --device cuda
"""
import argparse, json, platform, statistics, time
from datetime import date
from pathlib import Path

def timed(f):
    t0 = time.perf_counter(); f(); return time.perf_counter() - t0

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=2); p.add_argument('--rounds', type=int, default=6)
    p.add_argument('--steps', type=int, default=10); p.add_argument('--batch', type=int, default=64)
    p.add_argument('--device', default='cpu'); p.add_argument('--out', default='bench/results/compile.json')
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from diffnb.data import bundled_mnist
    from diffnb.unet import UNet
    from diffnb.schedules import cosine_schedule
    from diffnb.training import Trainer
    from diffnb.sampling import sample
    from diffnb.pretrained import load_pretrained
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    data = bundled_mnist('train')
    def trainer(compile):
        torch.manual_seed(0)
        return Trainer(UNet(n_classes=10), cosine_schedule(), data, batch_size=a.batch, progress=False, device=dev, compile=compile)
    eager, comp = trainer(False), trainer(True)
    first_eager = timed(lambda: (eager.fit(steps=1), sync()))
    first_comp = timed(lambda: (comp.fit(steps=1), sync()))
    assert comp.net.compiled is not None, 'compiling failed: nothing to measure'
    train = {'eager': [], 'compiled': []}
    for r in range(a.rounds):
        for name, tr in (('eager', eager), ('compiled', comp)):
            train[name].append(timed(lambda: (tr.fit(steps=a.steps), sync())) / a.steps)
    model, s = load_pretrained(device=dev)
    shape, y = (a.batch, 1, 28, 28), torch.arange(a.batch, device=dev) % 10
    def draw(compile, steps):
        return sample(model, s, shape, sampler='ddim', steps=steps, y=y, compile=compile, generator=torch.Generator().manual_seed(0))
    first_sample_eager = timed(lambda: (draw(False, 1), sync()))
    first_sample_comp = timed(lambda: (draw(True, 1), sync()))
    samp = {'eager': [], 'compiled': []}
    for r in range(a.rounds):
        for name in samp: samp[name].append(timed(lambda: (draw(name == 'compiled', a.steps), sync())) / a.steps)
    same = (draw(True, 5) - draw(False, 5)).abs().max().item()

    def summary(times, first_eager, first_comp):
        e, c = statistics.median(times['eager']), statistics.median(times['compiled'])
        cost = max(first_comp - first_eager, 0.0)
        return dict(compile_seconds=round(cost, 1), eager_steps_per_s=round(1 / e, 3), compiled_steps_per_s=round(1 / c, 3),
                    speedup=round(e / c, 3), break_even_steps=round(cost / (e - c)) if c < e else 'never',
                    seconds_per_step={k: [round(v, 4) for v in vs] for k, vs in times.items()})
    res = dict(command='python bench/compile.py ' + ' '.join(f'--{k} {v}' for k, v in vars(a).items() if k != 'out'),
               date=str(date.today()), machine=dict(cpu=platform.machine(), torch=torch.__version__, threads=a.threads, device=str(dev)),
               batch=a.batch, rounds=a.rounds, steps_per_round=a.steps,
               training=summary(train, first_eager, first_comp),
               sampling=dict(summary(samp, first_sample_eager, first_sample_comp), sampler='ddim', max_abs_difference_to_eager=same))
    for what in ('training', 'sampling'):
        r = res[what]
        print(f"{what}: compile {r['compile_seconds']} s; eager {r['eager_steps_per_s']} steps/s, compiled {r['compiled_steps_per_s']} steps/s "
              f"(x{r['speedup']}); break-even after {r['break_even_steps']} steps")
    print(f'samples, compiled against eager: largest difference {same:.2e}')
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')

if __name__ == '__main__': main()
