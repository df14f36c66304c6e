"Training: exact resumption, atomic checkpoints, the NaN guard, clear errors for bad files."
import os, pytest, torch
from pathlib import Path
from diffnb.data import bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.unet import UNet
from diffnb import training
from diffnb.training import Trainer, load_checkpoint, save_checkpoint, load_model, CheckpointError, diffusion_loss

D = bundled_mnist()
DATA = TensorImages(D.images[:192], D.labels[:192], D.classes, 'small')
NET = dict(channels=(8, 16), attn_levels=(1,), heads=2, n_classes=10, dropout=0.1)   # dropout: the RNG state matters too
KW = dict(batch_size=32, lr=3e-3, warmup=3, progress=False, device='cpu')

def make(**kw):
    torch.manual_seed(0)
    return Trainer(UNet(**NET), cosine_schedule(T=200), DATA, **{**KW, **kw})

def test_resume_equals_straight_run(tmp_path):
    straight = make().fit(steps=11)             # 6 steps per epoch: crosses an epoch boundary
    a = make(ckpt_path=tmp_path/'c.pt').fit(steps=4)
    b = Trainer.resume(tmp_path/'c.pt', DATA, progress=False).fit(steps=7)
    assert b.step == 11
    for k, v in straight.model.state_dict().items(): assert torch.equal(v, b.model.state_dict()[k]), k
    for k, v in straight.ema.model.state_dict().items(): assert torch.equal(v, b.ema.model.state_dict()[k]), k
    assert straight.opt.state_dict()['state'][0]['step'] == b.opt.state_dict()['state'][0]['step']

def test_loss_goes_down():
    tr = make(lr=5e-3).fit(steps=40)
    assert tr.history[-1][1] < 0.7 * tr.history[0][1]

def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    tr = make(ckpt_path=tmp_path/'c.pt').fit(steps=2)
    real_save = torch.save
    def broken(obj, f, *a, **k):
        f.write(b'half a checkpoint'); raise OSError('disk full')
    monkeypatch.setattr(training.torch, 'save', broken)
    with pytest.raises(OSError, match='disk full'): tr.save()
    monkeypatch.setattr(training.torch, 'save', real_save)
    assert load_checkpoint(tmp_path/'c.pt')['step'] == 2
    assert [p.name for p in tmp_path.iterdir()] == ['c.pt']          # no temporary file left behind

def test_nan_stops_before_the_update(tmp_path):
    data = TensorImages(DATA.images.clone(), DATA.labels, DATA.classes)
    torch.manual_seed(0)
    tr = Trainer(UNet(**NET), cosine_schedule(T=200), data, ckpt_path=tmp_path/'c.pt', ckpt_every=3, **KW).fit(steps=3)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    data.images[:] = float('inf')
    with pytest.raises(FloatingPointError, match=r'training stopped at step 3: the loss is (nan|inf).*step 3\) is kept'):
        tr.fit(steps=5)
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())
    assert load_checkpoint(tmp_path/'c.pt')['step'] == 3

def test_bad_checkpoint_files(tmp_path):
    tr = make(ckpt_path=tmp_path/'c.pt').fit(steps=1)
    raw = (tmp_path/'c.pt').read_bytes()
    (tmp_path/'trunc.pt').write_bytes(raw[:len(raw) // 2])
    with pytest.raises(CheckpointError, match='not a readable checkpoint'): load_checkpoint(tmp_path/'trunc.pt')
    torch.save({'model': {}}, tmp_path/'foreign.pt')
    with pytest.raises(CheckpointError, match='not a diffnb checkpoint'): load_model(tmp_path/'foreign.pt')
    (tmp_path/'text.pt').write_text('hello')
    with pytest.raises(CheckpointError): load_checkpoint(tmp_path/'text.pt')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'): load_checkpoint(tmp_path/'none.pt')
    m, s = load_model(tmp_path/'c.pt')
    assert m.n_classes == 10 and s.T == 200 and tuple(m.sample_shape) == (1, 28, 28)

def test_targets_train_and_bad_settings():
    for pred in ('v', 'x0'):
        torch.manual_seed(0)
        tr = Trainer(UNet(**{**NET, 'prediction': pred}), cosine_schedule(T=200), DATA, **KW).fit(steps=3)
        assert tr.formulation.prediction == pred and len(tr.history) == 1
    with pytest.raises(ValueError, match='fit needs steps, epochs or time_budget'): make().fit()
    with pytest.raises(ValueError, match='batch_size must be a positive multiple'): make(batch_size=0)
    with pytest.raises(ValueError, match='smaller than one batch'): make(batch_size=256)
    with pytest.raises(ValueError, match='the data has 1 channels'): Trainer(UNet(in_channels=3, n_classes=10), cosine_schedule(), DATA, **KW)
    with pytest.raises(ValueError, match='min_snr_gamma must be positive'):
        diffusion_loss(UNet(), DATA.images[:2], cosine_schedule(), min_snr_gamma=-1)

def test_time_budget_stops():
    import time
    t0 = time.monotonic()
    tr = make().fit(time_budget=1.0)
    assert tr.step >= 1 and time.monotonic() - t0 < 10

def test_periodic_checkpoints_record_the_time_spent(tmp_path):
    "Every checkpoint written during fit holds the training time so far, so a run killed after it resumes with its clock"
    tr = make(ckpt_path=tmp_path/'c.pt', ckpt_every=2)
    saved, real_save = [], tr.save
    tr.save = lambda path=None: (saved.append(tr.elapsed), real_save(path))[1]
    tr.fit(steps=4)
    assert len(saved) == 2 and 0 < saved[0] < saved[1] <= tr.elapsed          # steps 2 and 4
    assert 0 < load_checkpoint(tmp_path/'c.pt')['elapsed'] <= tr.elapsed
