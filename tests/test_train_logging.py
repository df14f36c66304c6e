"A run's logs: loss.png, sample grids at intervals, TensorBoard event files -- and that they change nothing of the run."
import subprocess, sys
import pytest, torch
from PIL import Image
from conftest import run, bin_path
from diffnb.data import bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.training import Trainer, load_checkpoint
from diffnb.unet import UNet

SMALL = dict(channels=(8, 16), attn_levels=(), n_classes=10)
KW = dict(batch_size=32, lr=3e-3, warmup=5, progress=False, device='cpu')

@pytest.fixture(scope='module')
def data():
    d = bundled_mnist()
    return TensorImages(d.images[:256], d.labels[:256], d.classes, 'small')

def test_logs_appear_and_change_nothing(data, tmp_path):
    torch.manual_seed(0); plain = Trainer(UNet(**SMALL), cosine_schedule(T=100), data, **KW).fit(steps=30)
    torch.manual_seed(0)
    logged = Trainer(UNet(**SMALL), cosine_schedule(T=100), data, ckpt_path=tmp_path/'c.pt', log_dir=tmp_path,
                     sample_every=10, log='tensorboard', **KW).fit(steps=30)
    for k, v in plain.model.state_dict().items(): assert torch.equal(v, logged.model.state_dict()[k]), k
    assert torch.equal(plain.sample_grid(n=4, steps=2), logged.sample_grid(n=4, steps=2))
    grids = sorted(p.name for p in (tmp_path/'samples').iterdir())
    assert grids == ['step_000010.png', 'step_000020.png', 'step_000030.png']
    assert Image.open(tmp_path/'samples'/grids[0]).size == (2 * (8 * 29 + 1), 2 * (2 * 29 + 1))   # 16 digits, 8 a row, scale 2
    assert Image.open(tmp_path/'loss.png').format == 'PNG'
    assert not list(tmp_path.rglob('.*.tmp'))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path)); ea.Reload()
    assert {'loss', 'lr'} <= set(ea.Tags()['scalars']) and ea.Tags()['images'] == ['samples']
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in ea.Scalars('loss')] == [tuple(h) for h in logged.history]
    assert [e.step for e in ea.Images('samples')] == [10, 20, 30]

def test_no_log_dir_writes_nothing_more(data, tmp_path):
    Trainer(UNet(**SMALL), cosine_schedule(T=100), data, ckpt_path=tmp_path/'c.pt', sample_every=1, **KW).fit(steps=2)
    assert [p.name for p in tmp_path.iterdir()] == ['c.pt']

def test_bad_settings_are_refused(data, tmp_path):
    with pytest.raises(ValueError, match='sample_every must be an integer >= 0'): Trainer(UNet(**SMALL), cosine_schedule(T=100), data, sample_every=-1, **KW)
    with pytest.raises(ValueError, match="log must be None or 'tensorboard'"): Trainer(UNet(**SMALL), cosine_schedule(T=100), data, log='wandb', **KW)
    with pytest.raises(ValueError, match='needs a log_dir'): Trainer(UNet(**SMALL), cosine_schedule(T=100), data, log='tensorboard', **KW)

def test_without_tensorboard_it_refuses_before_any_step(tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None\n"          # as if it were not installed
            "from diffnb.training import Trainer\nfrom diffnb.unet import UNet\nfrom diffnb.data import bundled_mnist\n"
            "from diffnb.schedules import cosine_schedule\n"
            "try: Trainer(UNet(channels=(8, 16), attn_levels=()), cosine_schedule(T=10), bundled_mnist(), log='tensorboard', log_dir=sys.argv[1], device='cpu')\n"
            "except ImportError as e: print(e)\n"
            "from diffnb.cli import train_main\ntrain_main(['--log', 'tensorboard', '--out', sys.argv[1] + '/run'])\n")
    r = run([sys.executable, '-c', code, str(tmp_path)])
    assert r.stdout.startswith("log='tensorboard' needs the tensorboard package: pip install tensorboard"), r.stdout + r.stderr
    assert r.returncode == 2 and r.stderr.strip() == 'diffnb_train: error: --log tensorboard needs the tensorboard package: pip install tensorboard'
    assert list(tmp_path.iterdir()) == []

def test_the_cli_writes_the_logs(tmp_path):
    out = tmp_path/'run'
    r = run([bin_path('diffnb_train'), '--preset', 'tiny', '--steps', '4', '--batch-size', '16', '--samples', '0', '--sample-every', '2',
             '--log', 'tensorboard', '--no-progress', '--device', 'cpu', '--out', str(out)], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out/'samples').iterdir()) == ['step_000002.png', 'step_000004.png']
    assert (out/'loss.png').exists() and len(list(out.glob('events.out.tfevents.*'))) == 1
    r = run([bin_path('diffnb_train'), '--preset', 'tiny', '--steps', '2', '--log', 'none', '--sample-every', '1', '--out', str(tmp_path/'x')])
    assert r.returncode == 2 and '--sample-every does not apply to --log none' in r.stderr
