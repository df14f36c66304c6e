"The DiT backbone: shapes, patchify round trip, the adaLN-Zero identity at init, checkpoints and model folders, every formulation, the backbone registry, bad arguments."
import pytest, torch
from diffnb.data import bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.training import Trainer, NoisePrediction, load_model, save_checkpoint, CheckpointError
from diffnb.edm import EDMPrecond, EDM
from diffnb.flow import FlowMatching, FlowUNet
from diffnb.sampling import sample
from diffnb.hub import save_pretrained, from_pretrained
from diffnb.unet import UNet
from diffnb.dit import DiT, DiTBlock, FinalLayer, patchify, unpatchify, pos_embed_2d, BACKBONES, register_backbone, build_backbone

SMALL = dict(width=32, depth=2, heads=4, n_classes=10)

@pytest.fixture(scope='module')
def data():
    d = bundled_mnist('train')
    return TensorImages(d.images[:128], d.labels[:128], d.classes, 'tiny')

@pytest.mark.parametrize('patch', [2, 4])
def test_shapes(patch):
    net = DiT(patch=patch, **SMALL)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, torch.tensor([0, 400, 999]), torch.tensor([0, 9, 10]))
    assert out.shape == x.shape and out.abs().max() == 0          # zero-initialised output layer
    assert net.pos.shape == ((28 // patch) ** 2, 32)
    assert DiT(in_channels=3, img_size=32, patch=patch, width=32, depth=1)(torch.randn(2, 3, 32, 32), 5).shape == (2, 3, 32, 32)

@pytest.mark.parametrize('p', [1, 2, 4, 7])
def test_patchify_round_trip(p):
    x = torch.randn(2, 3, 28, 56)
    tok = patchify(x, p)
    assert tok.shape == (2, 28 * 56 // p ** 2, p * p * 3)
    assert torch.equal(unpatchify(tok, p, 3, 28, 56), x)
    assert torch.equal(patchify(unpatchify(tok, p, 3, 28, 56), p), tok)

def test_pos_embed():
    pe = pos_embed_2d(64, 5, 6)
    assert pe.shape == (30, 64) and torch.equal(pe[7, 32:], pe[1, 32:])   # same column
    with pytest.raises(ValueError, match='divisible by 4'): pos_embed_2d(30, 2, 2)

def test_adaln_zero_identity():
    x, c = torch.randn(2, 16, 64), torch.randn(2, 64)
    assert torch.equal(DiTBlock(64, 4)(x, c), x)
    assert not torch.allclose(DiTBlock(64, 4, adaln_zero=False)(x, c), x)
    assert torch.equal(FinalLayer(64, 2, 1)(x, c), torch.zeros(2, 16, 4))
    net = DiT(**SMALL)
    h = torch.randn(2, 49, 32)
    for blk in net.blocks: assert torch.equal(blk(h, c[:, :32]), h)
    plain = DiT(**SMALL, adaln_zero=False)
    assert all(b.ada.weight.abs().max() > 0 for b in plain.blocks) and plain.final.linear.weight.abs().max() == 0

def _trained(net, steps=3):
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 10])
    t = torch.rand(4) if net.prediction == 'flow' else torch.randint(0, 1000, (4,))
    for _ in range(steps):
        opt.zero_grad(); (net(x, t, y) - x).pow(2).mean().backward(); opt.step()
    return net.eval()

def test_model_folder_round_trip(tmp_path, data):
    net = _trained(DiT(**SMALL, prediction='flow'))
    save_pretrained(net, FlowMatching(), tmp_path/'m', data=data)
    again, s = from_pretrained(tmp_path/'m')
    assert type(again) is DiT and again.config == net.config
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([0.2, 0.8]), torch.tensor([4, 10])
    with torch.no_grad(): assert torch.equal(again(x, t, y), net(x, t, y))

def test_checkpoint_round_trip_edm(tmp_path, data):
    net = EDMPrecond(_trained(DiT(**SMALL)))
    tr = Trainer(net, EDM(), data, batch_size=16, progress=False, device='cpu', ckpt_path=tmp_path/'run.pt').fit(steps=2)
    model, s = load_model(tmp_path/'run.pt', ema=False)
    assert type(model) is EDMPrecond and type(model.net) is DiT
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.1, 5.0])
    with torch.no_grad(): assert torch.equal(model(x, sigma), tr.model.eval()(x, sigma))

@pytest.mark.parametrize('kind', ['eps', 'edm', 'flow'])
def test_train_and_sample(kind, data):
    model, f = {'eps': lambda: (DiT(**SMALL), NoisePrediction(cosine_schedule())),
                'edm': lambda: (EDMPrecond(DiT(**SMALL)), EDM()),
                'flow': lambda: (DiT(**SMALL, prediction='flow'), FlowMatching())}[kind]()
    before = [p.detach().clone() for p in model.parameters()]
    tr = Trainer(model, f, data, batch_size=16, lr=1e-3, warmup=1, progress=False, device='cpu').fit(steps=1)
    assert torch.isfinite(torch.tensor(tr.history[-1][1]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    s = f.to('cpu').for_sampling()
    x = sample(model.eval(), s, (2, 1, 28, 28), steps=3, y=torch.tensor([3, 7]), guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()

def test_registry():
    assert {'unet', 'dit'} <= set(BACKBONES)
    assert type(build_backbone('unet', n_classes=10)) is UNet
    assert type(build_backbone('unet', prediction='flow')) is FlowUNet
    net = build_backbone('dit', 1, 28, 10, 'v', width=32, depth=1)
    assert type(net) is DiT and net.prediction == 'v' and net.n_classes == 10
    register_backbone('plain', lambda in_channels, img_size, n_classes, prediction, **kw: DiT(in_channels, img_size, width=32, depth=1, prediction=prediction))
    try: assert build_backbone('plain').config['width'] == 32
    finally: del BACKBONES['plain']
    with pytest.raises(ValueError, match='backbone must be one of'): build_backbone('nope')
    with pytest.raises(ValueError, match='builder must be callable'): register_backbone('x', 3)

@pytest.mark.parametrize('kw, msg', [
    (dict(img_size=28, patch=3), r'img_size \(28\) must be divisible by patch \(3\)'),
    (dict(width=100, heads=8), r'width \(100\) must be divisible by heads \(8\)'),
    (dict(width=6, heads=3), 'width must be divisible by 4'),
    (dict(depth=0), 'depth must be a positive integer'),
    (dict(patch=2.0), 'patch must be a positive integer'),
    (dict(prediction='edm'), "prediction must be 'eps', 'x0', 'v' or 'flow'"),
    (dict(n_classes=0), 'n_classes must be a positive integer or None'),
    (dict(mlp_ratio=0), 'mlp_ratio must be a number > 0'),
    (dict(time_scale=float('nan')), 'time_scale must be a number > 0'),
])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg): DiT(**kw)

def test_bad_inputs():
    net, flow = DiT(**SMALL), DiT(**SMALL, prediction='flow')
    with pytest.raises(ValueError, match=r'x must have shape \(B, 1, 28, 28\)'): net(torch.randn(1, 1, 32, 32), 0)
    with pytest.raises(ValueError, match=r'class indices in \[0, 9\]'): net(torch.randn(1, 1, 28, 28), 0, torch.tensor([11]))
    with pytest.raises(ValueError, match='float times'): flow(torch.randn(1, 1, 28, 28), torch.tensor([3]))
    with pytest.raises(ValueError, match='no class conditioning'): DiT(width=32, depth=1)(torch.randn(1, 1, 28, 28), 0, torch.tensor([1]))

def test_the_command_line(tmp_path):
    "diffnb_train --backbone dit trains each formulation; diffnb_sample and a resume read the network from the checkpoint"
    from conftest import run, bin_path
    train, smp, env = bin_path('diffnb_train'), bin_path('diffnb_sample'), {'OMP_NUM_THREADS': '1'}
    common = ['--steps', '2', '--batch-size', '8', '--samples', '2', '--no-progress', '--log', 'none']
    for form in ('flow', 'ddpm', 'edm'):
        r = run([train, '--backbone', 'dit', '--formulation', form, *common, '--out', str(tmp_path/form)], env=env)
        assert r.returncode == 0 and 'DiT' in r.stdout, r.stderr
    r = run([smp, '--checkpoint', str(tmp_path/'flow'/'checkpoint.pt'), '-n', '2', '--steps', '2', '--no-progress',
             '--out', str(tmp_path/'s.png')], env=env)
    assert r.returncode == 0 and 'flow-euler' in r.stdout, r.stderr
    assert type(load_model(tmp_path/'edm'/'checkpoint.pt')[0].net) is DiT
    r = run([train, '--resume', '--steps', '3', *common[2:], '--out', str(tmp_path/'flow')], env=env)
    assert r.returncode == 0 and 'resuming' in r.stdout, r.stderr
    for bad, msg in ((['--backbone', 'unet', '--resume', '--out', str(tmp_path/'flow')], '--backbone unet (the run: dit)'),
                     (['--backbone', 'dit', '--preset', 'tiny'], '--preset applies to --backbone unet'),
                     (['--backbone', 'dit', '--dropout', '0.1'], '--dropout applies to --backbone unet')):
        r = run([train, *bad, '--steps', '4'])
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
