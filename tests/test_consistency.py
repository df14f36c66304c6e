"Consistency training (chapter 13c) from the outside: the boundary condition, the teacher-free target, the recipe, sampling, training and the command line"
import math
import pytest, torch
from diffnb.data import bundled_mnist
from diffnb.dit import DiT
from diffnb.edm import GaussianDenoiser
from diffnb.unet import UNet
from diffnb.consistency import (ConsistencyPrecond, ConsistencySchedule, ConsistencyTraining, consistency_sample, consistency_scalings,
                                ict_intervals, ict_sigmas, pseudo_huber)
from diffnb.sampling import sample, usable_samplers
from diffnb.training import Trainer, load_model

def _tiny(n_classes=10): return UNet(channels=(8, 16), attn_levels=(), n_classes=n_classes)

@pytest.mark.parametrize('net', [_tiny, lambda: DiT(in_channels=1, img_size=28, patch=4, width=32, depth=1, heads=2, n_classes=10)])
def test_boundary_condition_holds_for_any_weights(net):
    torch.manual_seed(0)
    f = ConsistencyPrecond(net(), sigma_data=0.5).requires_grad_(False)
    for p in f.parameters(): p.add_(torch.randn_like(p))               # far from any initialisation
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 5, 10])
    assert torch.equal(f(x, torch.full((3,), 0.002), y), x)            # f(x, sigma_min) = x, exactly
    assert not torch.allclose(f(x, torch.full((3,), 1.0), y), x)
    c_skip, c_out = consistency_scalings(torch.tensor([0.002, 80.0], dtype=torch.float64))
    assert c_skip[0] == 1 and c_out[0] == 0 and abs(c_out[1] - 0.5) < 1e-3

def test_the_noise_step_is_the_exact_teachers_euler_step_on_average():
    "E[x0 + s_lo eps | x0 + s_hi eps] is one Euler step of the probability-flow ODE with the exact denoiser"
    kappa, mu = torch.tensor([0.1, 0.6], dtype=torch.float64), torch.tensor([0.3, -0.2], dtype=torch.float64)
    D, g = GaussianDenoiser(mu, torch.diag(kappa)), torch.Generator().manual_seed(0)
    s_lo, s_hi = 0.8, 1.0
    xb = torch.tensor([[0.9, -1.4]], dtype=torch.float64)
    m, v = D(xb, torch.tensor([s_hi])), kappa * s_hi ** 2 / (kappa + s_hi ** 2)
    x0 = m + v.sqrt() * torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    ct = (x0 + s_lo * (xb - x0) / s_hi).mean(0)
    euler = xb + (s_lo - s_hi) * (xb - m) / s_hi
    assert torch.allclose(ct, euler[0], atol=3e-3)
    assert (ct - xb[0]).abs().max() > 0.05                                # a real step, not a point that stays put

def test_curriculum_grid_and_draws():
    assert [ict_intervals(k, 800) for k in (0, 99, 100, 699, 700, 5000)] == [10, 10, 20, 640, 1280, 1280]
    assert ict_intervals(0, 1) == 10 and ict_intervals(3, 1) == 1280       # a curriculum shorter than its stages
    sig = ict_sigmas(1280)
    assert len(sig) == 1281 and abs(sig[0] - 0.002) < 1e-12 and abs(sig[-1] - 80) < 1e-9 and (sig.diff() > 0).all()
    f = ConsistencyTraining(total_steps=800)
    f.at_step(0)
    pairs = f.draw_times(50_000, torch.Generator().manual_seed(0))
    assert pairs.shape == (50_000, 2) and (pairs[:, 1] > pairs[:, 0]).all() and len(pairs[:, 0].unique()) == 10
    med = pairs[:, 1].log().median()
    assert -1.6 < med < 0.6                                                # the log-normal's mass is in the middle levels
    f.at_step(799)
    assert len(f.draw_times(50_000, torch.Generator().manual_seed(0))[:, 0].unique()) > 300
    for bad in (dict(total_steps=0), dict(s0=0), dict(s0=20, s1=10), dict(sigma_min=1, sigma_max=0.5), dict(P_std=0), dict(huber_c=0)):
        with pytest.raises(ValueError): ConsistencyTraining(**bad)
    assert ConsistencyTraining.from_config(ConsistencyTraining(total_steps=7, huber_c=0.1).config).config == ConsistencyTraining(total_steps=7, huber_c=0.1).config

def test_loss_is_pseudo_huber_over_the_interval_with_the_lower_answer_as_a_constant():
    torch.manual_seed(0)
    f, form = ConsistencyPrecond(_tiny(None)), ConsistencyTraining()
    x0, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 1, 28, 28)
    pairs = torch.tensor([[0.5, 0.6], [1.0, 1.5], [0.01, 0.02], [10.0, 20.0]])
    loss = form.loss(f, x0, None, pairs, noise)
    lo, hi = (f(x0 + pairs[:, k, None, None, None] * noise, pairs[:, k]) for k in (0, 1))
    c = 0.00054 * 28
    want = (((hi - lo) ** 2).flatten(1).sum(1) + c * c).sqrt() - c
    assert torch.allclose(loss, want / (pairs[:, 1] - pairs[:, 0]), rtol=1e-5)
    assert torch.allclose(pseudo_huber(hi, lo), want, rtol=1e-6)
    loss[0].backward()                                                     # the gradient flows through the upper answer only
    g_hi = [p.grad.clone() for p in f.parameters()]
    f.zero_grad()
    d = pseudo_huber(f(x0[:1] + 0.6 * noise[:1], pairs[:1, 1]), lo[:1].detach()) / 0.1
    d.backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6, rtol=1e-4) for a, p in zip(g_hi, f.parameters()))

def test_exact_consistency_function_samples_the_data():
    kappa, mu = torch.tensor([0.05, 0.3], dtype=torch.float64), torch.tensor([0.2, -0.1], dtype=torch.float64)
    D = GaussianDenoiser(mu, torch.diag(kappa))
    exact = lambda x, sigma, y=None: D.flow(x, sigma[0].item(), 0.002)
    z = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
    one = consistency_sample(exact, ConsistencySchedule(), (20_000, 2), x_T=z, clip_x0=False, device='cpu')
    assert torch.allclose(one.double(), D.flow(80 * z, 80.0, 0.002).double(), atol=1e-5)
    three = consistency_sample(exact, ConsistencySchedule(), (20_000, 2), steps=3, x_T=z, clip_x0=False, device='cpu',
                               generator=torch.Generator().manual_seed(1))
    assert torch.allclose(three.double().mean(0), mu, atol=0.02) and torch.allclose(three.double().var(0), kappa, atol=0.02)
    with pytest.raises(ValueError, match='sigmas must decrease'):
        consistency_sample(exact, ConsistencySchedule(), (2, 2), sigmas=[1.0, 2.0], device='cpu')
    with pytest.raises(ValueError, match='sigma_min'):
        consistency_sample(exact, ConsistencySchedule(), (2, 2), sigmas=[1.0, 0.001], device='cpu')

def test_training_advances_the_curriculum_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = ConsistencyPrecond(_tiny(), sigma_data=0.5)
    tr = Trainer(model, ConsistencyTraining(total_steps=8), bundled_mnist('train'), batch_size=8, seed=0, progress=False, device='cpu')
    tr.fit(steps=3)
    assert tr.formulation.step == 2                                        # told the step before each draw
    assert isinstance(tr.s, ConsistencySchedule) and usable_samplers(tr.s) == ['consistency']
    y = torch.arange(4)
    for kw in (dict(), dict(steps=2), dict(steps=3, guidance_scale=2.0), dict(sigmas=[80.0, 1.0])):
        x = sample(tr.ema.model, tr.s, (4, 1, 28, 28), y=y, generator=torch.Generator().manual_seed(0), **kw)
        assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all() and x.abs().max() <= 1
    for other in ('heun', 'ddim', 'flow-euler'):
        with pytest.raises(ValueError, match="samples only with 'consistency'"): sample(tr.ema.model, tr.s, (2, 1, 28, 28), sampler=other)
    tr.save(tmp_path/'run.pt')
    m2, s2 = load_model(tmp_path/'run.pt')
    assert isinstance(m2, ConsistencyPrecond) and isinstance(s2, ConsistencySchedule)
    a = sample(tr.ema.model, tr.s, (4, 1, 28, 28), y=y, steps=2, generator=torch.Generator().manual_seed(0))
    b = sample(m2, s2, (4, 1, 28, 28), y=y, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-5)
    from diffnb.hub import save_pretrained
    save_pretrained(m2, s2, tmp_path/'folder')                              # the model folder format holds it too
    m3, s3 = load_model(tmp_path/'folder')
    assert isinstance(m3, ConsistencyPrecond) and isinstance(s3, ConsistencySchedule)
    assert torch.allclose(sample(m3, s3, (4, 1, 28, 28), y=y, steps=2, generator=torch.Generator().manual_seed(0)), b, atol=1e-5)
    tr2 = Trainer.resume(tmp_path/'run.pt', bundled_mnist('train'), progress=False, device='cpu')
    tr2.fit(steps=2)                                                        # two more steps: 3 and 4
    assert tr2.step == 5 and tr2.formulation.step == 4 and tr2.formulation.total_steps == 8

def test_command_line_trains_resumes_and_samples_consistency(tmp_path):
    "diffnb_train --formulation consistency (U-Net and DiT); diffnb_sample uses the consistency sampler without being told"
    from conftest import run, bin_path, one_line
    TRAIN, SAMPLE = bin_path('diffnb_train'), bin_path('diffnb_sample')
    env = {'OMP_NUM_THREADS': '1'}
    common = ['--steps', '3', '--samples', '4', '--sample-every', '0', '--batch-size', '8', '--data', 'bundled:heldout', '--no-progress', '--device', 'cpu']
    r = run([TRAIN, '--formulation', 'consistency', *common, '--preset', 'tiny', '--out', str(tmp_path/'ct')], env=env)
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path/'ct'/'checkpoint.pt')
    assert ck['model_config']['class'] == 'ConsistencyPrecond' and ck['formulation']['kind'] == 'consistency-training'
    assert ck['formulation']['total_steps'] == 3
    r = run([TRAIN, '--resume', '--out', str(tmp_path/'ct'), '--steps', '5', '--no-progress', '--device', 'cpu'], env=env)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'ct'/'checkpoint.pt')['step'] == 5
    r = run([SAMPLE, '--checkpoint', str(tmp_path/'ct'/'checkpoint.pt'), '-n', '4', '--no-progress', '--out', str(tmp_path/'s.png')], env=env)
    assert r.returncode == 0 and (tmp_path/'s.png').exists(), r.stderr
    assert 'consistency' in r.stdout, r.stdout
    r = run([SAMPLE, '--checkpoint', str(tmp_path/'ct'/'checkpoint.pt'), '-n', '4', '--sampler', 'heun', '--out', str(tmp_path/'h.png')], env=env)
    one_line(r, "'consistency'")
    r = run([TRAIN, '--formulation', 'consistency', '--backbone', 'dit', *common, '--out', str(tmp_path/'dit')], env=env)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'dit'/'checkpoint.pt')['model_config']['config']['net']['class'] == 'DiT'
