"""A cheaper four-call student: a narrower U-Net taught by the shipped 8-step student, as the shipped 4-step one was.

The shipped students (`mnist-fast`) are progressive distillation's rounds 8, 4, 2, 1 of the bundled teacher, each
student a copy of the teacher's U-Net (channels 16, 32, 64). This script repeats the round that made the 4-step
student -- `ProgressiveDistillation` with the shipped 8-step student as the teacher, on the training digits, batch 64,
EMA 0.995 -- with a narrower U-Net as the student (default channels 8, 16, 32: about a quarter of the arithmetic per
call, no dropout, GroupNorm in 4 groups). It cannot start from its teacher's weights, so it starts from scratch and
trains longer: 3,000 steps at learning rate 1e-3 with 100 warm-up steps, against the shipped round's 1,000 at 3e-4
(50 warm-up steps) from the teacher's weights. A stopped run (Ctrl-C saves it) continues from runs/.../round4.pt.
The result is a model folder; `bench/fast_sampling.py --candidate FOLDER` times and scores it beside the shipped
student and the teacher in one run.

    OMP_NUM_THREADS=1 python bench/cheap_student.py --out runs/cheap-student          # about 30 min of one thread
    python bench/fast_sampling.py --candidate runs/cheap-student/model --candidate-name "narrow student"
"""
import argparse, json, os, time
from pathlib import Path
import torch

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--channels', type=int, nargs='+', default=[8, 16, 32], help="the student U-Net's channels per level")
    p.add_argument('--groups', type=int, default=4, help='GroupNorm groups (must divide every width)')
    p.add_argument('--steps', type=int, default=3000, help='optimiser steps')
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='runs/cheap-student')
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    from diffnb.pretrained import load_pretrained
    from diffnb.data import bundled_mnist
    from diffnb.unet import UNet
    from diffnb.training import Trainer
    from diffnb.distill import ProgressiveDistillation, DistilledStudents
    from diffnb.hub import save_pretrained
    bank, s = load_pretrained('mnist-fast')
    teacher = bank.for_steps(8)
    wide = bank.for_steps(4).config
    net = UNet(**{**wide, 'channels': tuple(a.channels), 'groups': a.groups, 'dropout': 0.0})
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    ckpt = out/'round4.pt'
    if ckpt.exists():                            # a stopped run goes on from its last checkpoint (or stops at --steps)
        tr = Trainer.resume(ckpt, bundled_mnist('train'), progress=False)
        tr.formulation._attach(teacher)
    else:
        f = ProgressiveDistillation(teacher, s, 4, s.t_max)
        tr = Trainer(net, f, bundled_mnist('train'), batch_size=64, lr=a.lr, warmup=100, ema_decay=0.995, seed=a.seed,
                     ckpt_path=ckpt, ckpt_every=500, progress=False)
    if tr.step > a.steps: raise SystemExit(f'{ckpt} is at step {tr.step}, past --steps {a.steps}')
    t0 = time.process_time()
    tr.fit(steps=a.steps - tr.step)
    cpu = time.process_time() - t0
    student = DistilledStudents(dict(tr.ema.model.config), steps=(4,))
    student.for_steps(4).load_state_dict(tr.ema.model.state_dict())
    info = dict(command='python bench/cheap_student.py ' + ' '.join(f'--{k} {" ".join(map(str, v)) if isinstance(v, list) else v}'
                                                                     for k, v in vars(a).items()),
                teacher="the shipped 8-step student (mnist-fast)", optimiser_steps=tr.step, wall_minutes=round(tr.elapsed / 60, 1),
                cpu_minutes_this_process=round(cpu / 60, 1),
                params=sum(p.numel() for p in net.parameters()), threads=torch.get_num_threads())
    save_pretrained(student.eval(), s, out/'model', data=bundled_mnist('train'), info=info, dtype=torch.float16, overwrite=True)
    (out/'summary.json').write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))

if __name__ == '__main__':
    main()
