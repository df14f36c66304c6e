"""Rebuild `diffnb/assets/mnist-fast/`, the distilled student that ships as `load_pretrained('mnist-fast')`.

Chapter 13 distils the bundled model (`'bundled:mnist'`) by progressive distillation: four rounds of 1,000 optimiser
steps each (8, 4, 2 and 1 student steps), batch 64, AdamW at learning rate 3e-4 with 50 warm-up steps, EMA 0.995,
on the training part of the bundled digits. This command runs those rounds -- or picks up the checkpoints of a run
that already made them, such as the chapter's full run (`FULL_RUN = True` writes them to `nbs/runs/distill-pd/`) --
and writes the four students into the package as a model folder (float16 safetensors weights, config.json and a model
card; chapter 4d), with the command and the training time in its record and chapter 13's scores on its card. About an hour of one CPU core when the rounds have to be trained; seconds when they exist.

    python tools/make_fast_model.py                                  # train into runs/distill-pd, then write the asset
    python tools/make_fast_model.py --run nbs/runs/distill-pd        # the chapter's full run: reuse its rounds
    python tools/make_fast_model.py --run nbs/runs/distill-pd --dest /tmp/mnist-fast   # leave the package alone
    python tools/make_fast_model.py --steps-per-round 2 --run /tmp/pd --dest /tmp/st   # a smoke test of this command

Only a maintainer runs this: it replaces a file every user of `load_pretrained('mnist-fast')` gets. Check the new
student afterwards with `python -m pytest tests/test_distill.py` and `python bench/fast_sampling.py`.
"""
import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, STEPS_PER_ROUND = (8, 4, 2, 1), 1000
SETTINGS = dict(batch_size=64, lr=3e-4, warmup=50, ema_decay=0.995)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--run', default='runs/distill-pd', help='folder of the rounds\' checkpoints, round{n}.pt (made if missing)')
    p.add_argument('--dest', default=str(ROOT/'diffnb'/'assets'/'mnist-fast'), help='the model folder to write')
    p.add_argument('--threads', type=int, default=1, help='torch threads for training')
    p.add_argument('--steps-per-round', type=int, default=STEPS_PER_ROUND, help='optimiser steps per round (fewer: a smoke test only)')
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from diffnb.data import bundled_mnist
    from diffnb.training import load_checkpoint
    from diffnb.pretrained import load_pretrained, pretrained_info
    from diffnb.distill import progressive_distill, export_student, ProgressiveDistillation
    train, (_, s) = bundled_mnist('train'), load_pretrained()
    torch.manual_seed(0)
    students = progressive_distill('bundled:mnist', None, train, rounds=ROUNDS, steps_per_round=a.steps_per_round, out=a.run,
                                   progress=False, **SETTINGS)
    minutes = sum(load_checkpoint(Path(a.run)/f'round{n}.pt')['elapsed'] for n in ROUNDS) / 60
    command = (f"progressive_distill('bundled:mnist', None, bundled_mnist('train'), rounds=(8, 4, 2, 1), "
               f"steps_per_round={a.steps_per_round}, out='runs/distill-pd', batch_size=64, lr=3e-4, warmup=50, ema_decay=0.995)")
    import sys, tempfile
    sys.path.insert(0, str(ROOT/'tools'))
    from bundle_models import DATA, fast_scores
    from diffnb.hub import export_pretrained
    tmp = Path(tempfile.mkdtemp())/'student.pt'
    export_student(students, ProgressiveDistillation('bundled:mnist', s, 1), tmp, train,
                          info=dict(command=command, data=train.name, teacher=pretrained_info()['data']['name'],
                                    optimiser_steps=len(ROUNDS) * a.steps_per_round, minutes=round(minutes, 1),
                                    device=f'CPU, {a.threads} thread' + ('s' if a.threads > 1 else '')))
    scores = fast_scores() if a.steps_per_round == STEPS_PER_ROUND else {}   # chapter 13 scored the full recipe only
    dest = export_pretrained(tmp, Path(a.dest), info={**DATA, 'scores': scores}, dtype=torch.float16, overwrite=True,
                             name='bundled:mnist-fast')
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(f'{dest}: {size / 1e6:.1f} MB, rounds trained in {minutes:.0f} min')

if __name__ == '__main__': main()
