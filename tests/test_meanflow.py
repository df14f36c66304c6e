"MeanFlow (chapter 13b) from the outside: the identity on the ring's exact flow, sampling, training and checkpoints"
import pytest, torch
from diffnb.data import ring_means, bundled_mnist
from diffnb.flow import GaussianMixtureFlow, FlowUNet, FlowMatching
from diffnb.meanflow import (MeanFlow, MeanFlowPath, MeanFlowUNet, average_velocity, meanflow_target, meanflow_sample,
                             meanflow_times)
from diffnb.sampling import sample, usable_samplers
from diffnb.training import Trainer, load_model

RING = GaussianMixtureFlow(ring_means(8), 0.1)

def _points(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return z, t * torch.rand(n, generator=g, dtype=torch.float64), t

def test_average_velocity_converges_and_is_the_velocity_at_r_equal_t():
    z, r, t = _points()
    ref = average_velocity(RING, z, r, t, steps=1024)
    assert (average_velocity(RING, z, r, t, steps=256) - ref).abs().max() < 1e-7
    e64, e128 = ((average_velocity(RING, z, r, t, steps=n) - ref).abs().max() for n in (64, 128))
    assert 10 < e64 / e128 < 22                                    # fourth order: halving the step divides the error by ~16
    assert torch.allclose(average_velocity(RING, z, t, t), RING(z, t), atol=1e-12)
    with pytest.raises(ValueError, match='r must not exceed t'): average_velocity(RING, z, t, r)

def test_meanflow_identity_holds_for_the_exact_average_velocity_only():
    z, r, t = _points()
    exact = lambda z, pair: average_velocity(RING, z, pair[:, 0], pair[:, 1], steps=256)
    u, target = meanflow_target(exact, z, r, t, RING(z, t))
    assert (u - target).abs().max() < 1e-7                         # the exact u meets its target: zero loss
    off = lambda z, pair: exact(z, pair) + 0.05 * torch.sin(3 * z)
    u, target = meanflow_target(off, z, r, t, RING(z, t))
    assert (u - target).abs().max() > 1e-2

def test_one_jump_of_the_exact_model_lands_where_the_flow_does():
    z1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = lambda z, pair: average_velocity(RING, z, pair[:, 0], pair[:, 1], steps=256)
    land = meanflow_sample(exact, (50, 2), steps=1, x_T=z1)
    halves = meanflow_sample(exact, (50, 2), steps=2, x_T=z1)
    assert (land.double() - halves.double()).abs().max() < 1e-4    # two exact jumps land where one does

def test_times_are_checked():
    x = torch.zeros(3, 2)
    r, t = meanflow_times(torch.tensor([0.2, 0.5, 1.0]), x)
    assert torch.equal(r, t)
    with pytest.raises(ValueError, match='r <= t'): meanflow_times(torch.tensor([[0.5, 0.2]] * 3), x)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): meanflow_times(torch.tensor([[0.0, 1.5]] * 3), x)
    pairs = MeanFlow().draw_times(1000, torch.Generator().manual_seed(0))
    assert pairs.shape == (1000, 2) and (pairs[:, 0] <= pairs[:, 1]).all()
    assert 0.15 < (pairs[:, 0] < pairs[:, 1]).float().mean() < 0.35      # ratio 0.25 of the pairs have r < t
    for bad in (dict(ratio=1.5), dict(scale=0), dict(power=-1), dict(c=0), dict(loc=float('nan'))):
        with pytest.raises(ValueError): MeanFlow(**bad)

def test_loss_value_is_the_error_and_gradient_is_weighted():
    torch.manual_seed(0)
    net = MeanFlowUNet(channels=(8, 16), attn_levels=(), n_classes=None)
    x0, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 1, 28, 28)
    pairs = MeanFlow().draw_times(4, torch.Generator().manual_seed(0))
    plain, weighted = MeanFlow(power=0), MeanFlow(power=1)
    a, b = plain.loss(net, x0, None, pairs, noise), weighted.loss(net, x0, None, pairs, noise)
    assert torch.allclose(a, b)                                     # the same value
    ga = torch.autograd.grad(a[0], net.unet.conv_out.bias)[0]
    gb = torch.autograd.grad(b[0], net.unet.conv_out.bias)[0]
    assert torch.allclose(gb, ga / (a[0].detach() + 1e-3), rtol=1e-4)

def test_training_sampling_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MeanFlowUNet(channels=(8, 16), attn_levels=(), n_classes=10)
    tr = Trainer(model, MeanFlow(), bundled_mnist('train'), batch_size=8, seed=0, progress=False, device='cpu')
    tr.fit(steps=3)
    assert isinstance(tr.s, MeanFlowPath) and 'meanflow' in usable_samplers(tr.s) and 'flow-euler' in usable_samplers(tr.s)
    y = torch.arange(4)
    for kw in (dict(), dict(steps=2), dict(sampler='flow-euler', steps=3), dict(steps=2, guidance_scale=2.0)):
        x = sample(tr.ema.model, tr.s, (4, 1, 28, 28), y=y, generator=torch.Generator().manual_seed(0), **kw)
        assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()
    tr.save(tmp_path/'run.pt')
    m2, s2 = load_model(tmp_path/"run.pt")
    assert isinstance(m2, MeanFlowUNet) and isinstance(s2, MeanFlowPath)
    a = sample(tr.ema.model, tr.s, (4, 1, 28, 28), y=y, generator=torch.Generator().manual_seed(0))
    b = sample(m2, s2, (4, 1, 28, 28), y=y, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-5)

def test_meanflow_sampler_refuses_a_plain_flow_model():
    with pytest.raises(ValueError, match="cannot sample a model with FlowPath"):
        sample(FlowUNet(channels=(8, 16), attn_levels=()), FlowMatching().for_sampling(), (2, 1, 28, 28), sampler='meanflow')

def test_command_line_trains_resumes_and_samples_meanflow(tmp_path):
    "diffnb_train --formulation meanflow; diffnb_sample uses its jumps without being told; a DiT backbone is refused in one line"
    from conftest import run, bin_path
    TRAIN, SAMPLE = bin_path('diffnb_train'), bin_path('diffnb_sample')
    env = {'OMP_NUM_THREADS': '1'}
    common = ['--steps', '3', '--samples', '4', '--sample-every', '0', '--batch-size', '8', '--data', 'bundled:heldout', '--no-progress',
              '--device', 'cpu', '--preset', 'tiny']
    r = run([TRAIN, '--formulation', 'meanflow', *common, '--out', str(tmp_path/'mf')], env=env)
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path/'mf'/'checkpoint.pt')
    assert ck['model_config']['class'] == 'MeanFlowUNet' and ck['formulation']['kind'] == 'meanflow'
    r = run([TRAIN, '--resume', '--out', str(tmp_path/'mf'), '--steps', '5', '--no-progress', '--device', 'cpu'], env=env)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'mf'/'checkpoint.pt')['step'] == 5
    r = run([SAMPLE, '--checkpoint', str(tmp_path/'mf'/'checkpoint.pt'), '-n', '4', '--no-progress', '--out', str(tmp_path/'s.png')], env=env)
    assert r.returncode == 0 and (tmp_path/'s.png').exists(), r.stderr
    assert 'meanflow' in r.stdout, r.stdout
    r = run([TRAIN, '--formulation', 'meanflow', '--backbone', 'dit', *common[:-2], '--out', str(tmp_path/'dit')], env=env)
    assert r.returncode == 2 and 'drop --backbone dit' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
