"The Python API's Trainer loses nothing a user owns: files it may not replace, hang-ups, stored values, bad data, a full disk."
import errno, math, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
import diffnb.data
from diffnb.data import bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.unet import UNet
from diffnb.training import Trainer, load_checkpoint, save_checkpoint

D = bundled_mnist()
DATA = TensorImages(D.images[:128], D.labels[:128], D.classes, 'small')
NET = dict(channels=(8, 16), attn_levels=(), n_classes=10)
KW = dict(batch_size=32, lr=3e-3, warmup=2, progress=False, device='cpu')

def make(data=DATA, **kw):
    torch.manual_seed(0)
    return Trainer(UNet(**NET), cosine_schedule(T=100), data, **{**KW, **kw})

# 1. the Python API never replaces another run's checkpoint without being told, nor a file that is not a checkpoint

def test_another_runs_checkpoint_is_not_replaced(tmp_path):
    make(ckpt_path=tmp_path/'run.pt').fit(steps=3)
    before = (tmp_path/'run.pt').read_bytes()
    second = make(ckpt_path=tmp_path/'run.pt')
    with pytest.raises(FileExistsError, match=r'holds the checkpoint of another run.*Trainer\.resume.*overwrite=True'):
        second.fit(steps=2)
    assert (tmp_path/'run.pt').read_bytes() == before and second.step == 0
    assert not (tmp_path/'run.pt.lock').exists()
    assert make(ckpt_path=tmp_path/'run.pt', overwrite=True).fit(steps=1).step == 1       # said explicitly: replaced
    assert load_checkpoint(tmp_path/'run.pt')['step'] == 1

def test_resuming_continues_the_same_file(tmp_path):
    make(ckpt_path=tmp_path/'run.pt').fit(steps=2)
    tr = Trainer.resume(tmp_path/'run.pt', DATA, progress=False).fit(steps=2)
    tr.fit(steps=1)                                                      # and again: its own file
    assert load_checkpoint(tmp_path/'run.pt')['step'] == 5
    other = make(ckpt_path=tmp_path/'other.pt').fit(steps=1)
    with pytest.raises(FileExistsError, match='another run'):            # resumed into another run's file
        Trainer.resume(tmp_path/'run.pt', DATA, progress=False, ckpt_path=tmp_path/'other.pt').fit(steps=1)
    assert load_checkpoint(tmp_path/'other.pt')['step'] == other.step == 1

@pytest.mark.parametrize('overwrite', [False, True])
def test_a_file_that_is_not_a_checkpoint_is_never_replaced(tmp_path, overwrite):
    notes = tmp_path/'notes.txt'
    notes.write_text('my notes')
    torch.save({'weights': torch.ones(3)}, tmp_path/'theirs.pt')          # a PyTorch file, not a diffnb checkpoint
    for target in (notes, tmp_path/'theirs.pt'):
        with pytest.raises(FileExistsError, match='not a diffnb checkpoint; it is never replaced'):
            make(ckpt_path=target, overwrite=overwrite).fit(steps=1)
    tr = make(overwrite=overwrite).fit(steps=1)
    with pytest.raises(FileExistsError, match='not a diffnb checkpoint'): tr.save(notes)
    (tmp_path/'folder').mkdir()
    with pytest.raises(FileExistsError, match='not a diffnb checkpoint'): make(ckpt_path=tmp_path/'folder', overwrite=overwrite).fit(steps=1)
    assert notes.read_text() == 'my notes' and torch.load(tmp_path/'theirs.pt')['weights'].sum() == 3

# 2. a hang-up saves like Ctrl-C and SIGTERM

HANGUP = textwrap.dedent("""
    import os, signal, sys, torch
    from diffnb.data import bundled_mnist, TensorImages
    from diffnb.schedules import cosine_schedule
    from diffnb.unet import UNet
    from diffnb.training import Trainer, TrainingInterrupted
    d = bundled_mnist()
    class HangsUp(torch.utils.data.Dataset):
        "Digits served one by one; the terminal closes while the 5th batch is read"
        shape, n_classes, name, reads = d.shape, d.n_classes, 'hangs-up', 0
        def __len__(self): return 256
        def __getitem__(self, i):
            HangsUp.reads += 1
            if HangsUp.reads == 4 * 32 + 1: os.kill(os.getpid(), signal.SIGHUP)
            return d[i]
    tr = Trainer(UNet(channels=(8, 16), attn_levels=(), n_classes=10), cosine_schedule(T=100), HangsUp(), batch_size=32,
                 device='cpu', progress=False, ckpt_path=sys.argv[1])
    try: tr.fit(steps=1000)
    except TrainingInterrupted as e: print(e); sys.exit(3)
""")

@pytest.mark.skipif(not hasattr(signal, 'SIGHUP'), reason='no SIGHUP on this platform')
def test_sighup_saves_the_finished_steps(tmp_path):
    r = subprocess.run([sys.executable, '-c', HANGUP, str(tmp_path/'run.pt')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-2000:])
    assert 'SIGHUP: training stopped after a finished step' in r.stdout
    assert load_checkpoint(tmp_path/'run.pt')['step'] == 5               # the step whose batch was being read finished too

# 6. values stored in a checkpoint are checked like typed ones

@pytest.mark.parametrize('change, field', [(dict(step=-100), 'step'), (dict(step='7'), 'step'), (dict(step=True), 'step'),
                                           (dict(elapsed=float('nan')), 'elapsed'),
                                           (dict(hparams={'grad_clip': -1.0}), 'grad_clip'), (dict(hparams={'lr': -0.1}), 'lr'),
                                           (dict(hparams={'warmup': -5}), 'warmup'), (dict(hparams={'batch_size': '32'}), 'batch_size'),
                                           (dict(hparams={'ema_decay': 1.5}), 'ema_decay'), (dict(ema={'decay': 2.0}), 'ema decay')])
def test_stored_values_are_checked_at_resume(tmp_path, change, field):
    make(ckpt_path=tmp_path/'run.pt').fit(steps=2)
    ck = load_checkpoint(tmp_path/'run.pt')
    for k in ('hparams', 'ema'):
        if k in change: change = {**change, k: {**ck[k], **change[k]}}
    save_checkpoint({**ck, **change}, tmp_path/'edited.pt')
    with pytest.raises(ValueError, match=rf'edited\.pt cannot be resumed: its stored {field} must be'):
        Trainer.resume(tmp_path/'edited.pt', DATA, progress=False)

# 7. a gradient clip that is negative, NaN or not a number is refused at construction

@pytest.mark.parametrize('bad', [-1, -1e-9, float('nan'), float('-inf'), '1'])
def test_bad_grad_clip_is_refused(bad):
    with pytest.raises(ValueError, match='grad_clip must be a finite number >= 0'): make(grad_clip=bad)

def test_other_bad_hyperparameters_are_refused():
    for k, v in [('lr', float('nan')), ('warmup', -1), ('weight_decay', -1.0), ('ema_decay', 1.0), ('seed', -1),
                 ('label_dropout', 1.5), ('min_snr_gamma', 0.0), ('ckpt_every', -1)]:
        with pytest.raises(ValueError, match=f'{k} must be'): make(**{k: v})
    assert make(grad_clip=None).fit(steps=1).step == 1 and make(grad_clip=0).fit(steps=1).step == 1   # no clipping

# 8. data the model cannot be trained on is refused with a message, not trained on

class Served(torch.utils.data.Dataset):
    "Images served one by one (the trainer reads them through a DataLoader)"
    def __init__(self, images, labels): self.images_, self.labels_, self.shape, self.n_classes, self.name = images, labels, (1, 28, 28), 10, 's'
    def __len__(self): return len(self.images_)
    def __getitem__(self, i): return self.images_[i], int(self.labels_[i])

def test_images_in_0_255_are_refused():
    x = (DATA.images + 1) * 127.5
    with pytest.raises(ValueError, match=r'must lie in \[-1, 1\], got values from 0 to 255.*x / 127\.5 - 1'):
        make(TensorImages(x, DATA.labels, DATA.classes))
    tr = make(Served(x, DATA.labels))
    with pytest.raises(ValueError, match=r'must lie in \[-1, 1\]'): tr.fit(steps=1)
    assert tr.step == 0
    with pytest.raises(ValueError, match='must be floating point'): make(Served(x.to(torch.uint8), DATA.labels)).fit(steps=1)

def test_the_null_label_is_refused():
    y = DATA.labels.clone(); y[5] = 10
    with pytest.raises(ValueError, match=r'class indices in \[0, 10\), got 10: 10 is the null class'):
        make(TensorImages(DATA.images, y, [str(i) for i in range(10)]))
    with pytest.raises(ValueError, match='10 is the null class'): make(Served(DATA.images, y)).fit(steps=4)
    y[5] = -1
    with pytest.raises(ValueError, match='got -1'): make(Served(DATA.images, y)).fit(steps=4)

def test_float64_images_train():
    tr = make(TensorImages(DATA.images.double(), DATA.labels, DATA.classes)).fit(steps=2)
    ref = make().fit(steps=2)
    assert tr.step == 2 and math.isclose(tr.history[-1][1], ref.history[-1][1], rel_tol=1e-4)

class GoesBad(Served):
    "Serves pixels in [0, 255] after the first 64 reads, as a pipeline whose scaling broke mid-run might"
    reads = 0
    def __getitem__(self, i):
        GoesBad.reads += 1
        x, y = super().__getitem__(i)
        return (x if GoesBad.reads <= 64 else (x + 1) * 127.5), y

def test_bad_batch_mid_run_saves_the_finished_steps(tmp_path):
    GoesBad.reads = 0
    tr = make(GoesBad(DATA.images, DATA.labels), ckpt_path=tmp_path/'run.pt')
    with pytest.raises(ValueError, match=r'must lie in \[-1, 1\].*the batch of step 2.*step 2 is saved in'): tr.fit(steps=100)
    assert tr.step == 2 and load_checkpoint(tmp_path/'run.pt')['step'] == 2

# a full disk at the first save: the error says so

class FullDisk:
    "A file opened for writing on a disk with 2,000 bytes left"
    def __init__(self, path, mode): self.f, self.n = open(path, mode), 0
    def write(self, b):
        self.n += len(b)
        if self.n > 2000: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(b)
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()

def test_full_disk_at_the_first_save_says_no_space(tmp_path, monkeypatch):
    tr = make(ckpt_path=tmp_path/'run.pt')
    monkeypatch.setattr(diffnb.data, 'open', FullDisk, raising=False)
    with pytest.raises(OSError, match='No space left on device') as e: tr.fit(steps=2)
    assert e.value.errno == errno.ENOSPC and 'run.pt' in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []               # no checkpoint, no temporary file, no lock
