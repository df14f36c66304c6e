"""What a run's logs cost: training steps/s without logs and with loss.png, sample grids and TensorBoard, side by side.

Three `Trainer`s of the default class-conditional U-Net on the bundled digits (batch 64): no `log_dir`; `log_dir` with
the default grid interval (500 steps, so within a round only the loss curve and nothing else); and `log_dir` with
TensorBoard and a grid every `--every` steps (25 by default: twenty times the default rate, so that the grids' cost
shows). Short rounds of `--steps` steps alternate the three, so that a slow minute of a shared machine hits all
three alike; the medians of seconds per step are compared. Each round ends with `fit` returning, which writes
loss.png, as a checkpoint would -- far more often than a real run does.

    python bench/train_logging.py            # 1 thread, 10 rounds of 10 steps
"""
import argparse, json, platform, statistics, tempfile, time
from datetime import date
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=1); p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--steps', type=int, default=10); p.add_argument('--every', type=int, default=25)
    p.add_argument('--out', default='bench/results/train_logging.json')
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from diffnb.data import bundled_mnist
    from diffnb.unet import UNet
    from diffnb.schedules import cosine_schedule
    from diffnb.training import Trainer
    data, tmp = bundled_mnist('train'), Path(tempfile.mkdtemp())
    def trainer(**kw):
        torch.manual_seed(0)
        return Trainer(UNet(n_classes=10), cosine_schedule(), data, progress=False, device='cpu', **kw)
    runs = {'no logs': trainer(),
            'loss.png, grids every 500 steps (the default)': trainer(log_dir=tmp/'default'),
            f'loss.png, TensorBoard, grids every {a.every} steps': trainer(log_dir=tmp/'all', log='tensorboard', sample_every=a.every)}
    for tr in runs.values(): tr.fit(steps=2)                                  # warm-up
    times = {k: [] for k in runs}
    for r in range(a.rounds):
        for k, tr in runs.items():
            t0 = time.perf_counter(); tr.fit(steps=a.steps); times[k].append((time.perf_counter() - t0) / a.steps)
    tr = runs['no logs']
    grid = statistics.median([(lambda t0: (tr.sample_grid(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3)])
    base = statistics.median(times['no logs'])
    default = runs['loss.png, grids every 500 steps (the default)']
    def plot():
        default._plotted = None; t0 = time.perf_counter(); default._plot_loss(); return time.perf_counter() - t0
    png = statistics.median([plot() for _ in range(5)])
    in_loop = statistics.median(times['loss.png, grids every 500 steps (the default)']) - png / a.steps
    res = dict(command='python bench/train_logging.py ' + ' '.join(f'--{k} {v}' for k, v in vars(a).items() if k != 'out'),
               date=str(date.today()), machine=dict(cpu=platform.machine(), torch=torch.__version__, threads=a.threads),
               batch=64, rounds=a.rounds, steps_per_round=a.steps,
               steps_per_s={k: round(1 / statistics.median(v), 3) for k, v in times.items()},
               slowdown_against_no_logs={k: round(statistics.median(v) / base - 1, 4) for k, v in times.items() if k != 'no logs'},
               seconds_per_grid=round(grid, 3), grid_cost_per_500_steps=round(grid / (500 * base), 4),
               seconds_per_loss_png=round(png, 3), loss_png_cost_per_1000_steps=round(png / (1000 * base), 5),
               default_slowdown_without_the_loss_png_of_each_round=round(in_loop / base - 1, 4),
               seconds_per_step={k: [round(x, 4) for x in v] for k, v in times.items()})
    print(f"batch 64, {a.rounds} rounds of {a.steps} steps, {a.threads} threads")
    for k, v in res['steps_per_s'].items():
        print(f"| {k} | {v:.2f} steps/s | {'' if k == 'no logs' else format(res['slowdown_against_no_logs'][k], '+.1%')} |")
    print(f"one sample grid: {grid:.2f} s, {res['grid_cost_per_500_steps']:.2%} of 500 steps without logs")
    print(f"one loss.png: {png:.2f} s, {res['loss_png_cost_per_1000_steps']:.3%} of 1000 steps (the checkpoint interval); "
          f"the default's rounds less that: {res['default_slowdown_without_the_loss_png_of_each_round']:+.1%} against no logs")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')

if __name__ == '__main__': main()
