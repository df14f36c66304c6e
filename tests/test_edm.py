"EDM (chapter 11): closed forms, Heun's order, parity with diffusers, the formulation with Trainer and checkpoints, bad input."
import math
import pytest, torch
from torch import nn
from diffusers import EDMEulerScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler
from diffnb.schedules import cosine_schedule, linear_schedule
from diffnb.unet import UNet
from diffnb.data import bundled_mnist, ring_means, TensorImages
from diffnb.training import GaussianModel, GaussianMixtureModel, Trainer, load_model
from diffnb.ddim import ddim_sample, sampling_timesteps
from diffnb.sampling import sample, SAMPLERS
from diffnb.inpainting import half_mask
from diffnb.guidance import classifier_free_guidance
from diffnb.edm import (schedule_sigmas, VPDenoiser, GaussianDenoiser, karras_sigmas, SigmaSchedule, DenoiserOnSchedule,
                        edm_sample, edm_preconditioning, edm_loss_weight, data_rms, EDMPrecond, EDM, EDM_STOCHASTIC)

S64 = cosine_schedule(dtype=torch.float64)
IDX = torch.arange(4)
MU, COV = torch.tensor([0.5, -0.3, 0.0, 0.2]), 0.25 * 0.8 ** (IDX[:, None] - IDX[None]).abs().double()
GD = GaussianDenoiser(MU, COV)

def random_unet(**kw):
    "A small U-Net whose output layer is not zero"
    torch.manual_seed(0)
    net = UNet(channels=(8, 16), attn_levels=(), **kw)
    nn.init.normal_(net.conv_out.weight, std=0.05)
    return net.eval()

class NearlyGaussian(nn.Module):
    "A noise predictor for any real t: b_t x_t (exact for standard normal data) plus a small random U-Net"
    prediction = 'eps'
    def __init__(self, s): super().__init__(); self.b, self.unet = s.sqrt_one_minus_alpha_bar, random_unet()
    def forward(self, x, t, y=None):
        lo = t.floor().long().clamp(0, len(self.b) - 2)
        b = torch.lerp(self.b[lo], self.b[lo + 1], (t - lo).float()).reshape(-1, 1, 1, 1)
        return b * x + 0.05 * self.unet(x, t)

# ---- the sigma view and closed forms

def test_vp_sample_is_ve_sample_scaled():
    from diffnb.forward import q_sample
    x0, eps, t = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 3, dtype=torch.float64), torch.randint(0, 1000, (100,))
    sig = schedule_sigmas(S64)[t, None]
    torch.testing.assert_close(q_sample(x0, t, eps, S64) * (1 + sig ** 2).sqrt(), x0 + sig * eps)

def test_chapter4_models_are_closed_form_denoisers():
    ts = torch.tensor([0, 5, 100, 500, 900, 990])
    sig = schedule_sigmas(S64)[ts]
    x = torch.randn(6, 4, dtype=torch.float64) * (1 + sig[:, None])
    torch.testing.assert_close(VPDenoiser(GaussianModel(S64, MU, COV), S64, quantize=True)(x, sig), GD(x, sig))
    means, w, std = ring_means(8).double(), torch.tensor([0.2, 0.05, 0.15, 0.1, 0.1, 0.2, 0.05, 0.15], dtype=torch.float64), 0.1
    x = 1.5 * torch.randn(6, 2, dtype=torch.float64) * (1 + sig[:, None])
    v = std ** 2 + sig[:, None] ** 2
    r = (w.log() - v.log() - 0.5 * (x[:, None] - means).pow(2).sum(-1) / v).softmax(-1)
    want = (r[..., None] * (means + (std ** 2 / v)[..., None] * (x[:, None] - means))).sum(1)
    torch.testing.assert_close(VPDenoiser(GaussianMixtureModel(S64, means, std, w), S64, quantize=True)(x, sig), want)

def test_gaussian_denoiser_flow_solves_the_ode():
    x = torch.randn(5, 4, dtype=torch.float64)
    for s1 in (0.05, 0.7, 3.0):                                       # dx/dsigma = (x - D) / sigma, by central differences
        h = 1e-5 * s1
        d = (GD.flow(x, s1, s1 + h) - GD.flow(x, s1, s1 - h)) / (2 * h)
        torch.testing.assert_close(d, (x - GD(x, torch.full((5,), s1))) / s1, rtol=1e-6, atol=1e-8)

def test_discretize_round_trip():
    model, s = SigmaSchedule().discretize(GD)
    assert isinstance(model, DenoiserOnSchedule) and model.prediction == 'x0' and s.T == 1000
    ts = torch.tensor([3, 300, 700, 980])
    sig = schedule_sigmas(s)[ts]
    x = torch.randn(4, 4, dtype=torch.float64)
    torch.testing.assert_close(VPDenoiser(model, s, quantize=True)(x, sig), GD(x, sig), rtol=1e-4, atol=1e-4)

def test_ddim_is_euler_in_sigma():
    s = cosine_schedule()
    ring = GaussianMixtureModel(s, ring_means(8), 0.1)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    ts = sampling_timesteps(s, 12, 'logsnr')
    levels = torch.cat([schedule_sigmas(s)[ts], torch.zeros(1, dtype=torch.float64)])
    a = ddim_sample(ring, s, (500, 2), steps=12, spacing='logsnr', x_T=x_T, clip_x0=False)
    b = edm_sample(VPDenoiser(ring, s, quantize=True), SigmaSchedule(), (500, 2), sigmas=levels, method='euler', x_T=x_T, clip_x0=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)

# ---- Heun's order

def _global_error(step, n, x_T=torch.randn(1000, 4, generator=torch.Generator().manual_seed(2))):
    "RMS distance between a sampler `step(x, s_cur, s_next)` run on Karras sigmas and the exact ODE solution"
    sig = karras_sigmas(n, 0.002, 80.0).tolist()
    x = x_T.double() * math.sqrt(1 + 80.0 ** 2)
    exact = GD(GD.flow(x, 80.0, 0.002), torch.full((len(x),), 0.002))
    for a, b in zip(sig, sig[1:]): x = step(x, a, b)
    return (x - exact).pow(2).sum(1).mean().sqrt().item()

def _slope(step, ns=(8, 16, 32, 64)):
    e = torch.tensor([_global_error(step, n) for n in ns], dtype=torch.float64).log()
    n = torch.tensor(ns, dtype=torch.float64).log()
    return (((n - n.mean()) * (e - e.mean())).sum() / (n - n.mean()).pow(2).sum()).item()

def _one_step(x, a, b, method):
    "One step of `edm_sample` from noise level a to b (b = 0: the last step), read off its trajectory"
    out, traj = edm_sample(GD, SigmaSchedule(), x.shape, sigmas=[a, b, 0.0] if b > 0 else [a, 0.0], method=method,
                           x_T=(x / math.sqrt(1 + a ** 2)).float(), clip_x0=False, return_trajectory=True)
    return traj.x_t[1].double() if b > 0 else out.double()

def test_heun_is_second_order_and_euler_first():
    euler, heun = _slope(lambda x, a, b: _one_step(x, a, b, 'euler')), _slope(lambda x, a, b: _one_step(x, a, b, 'heun'))
    assert -1.2 < euler < -0.8, euler
    assert heun < -1.8, heun

def test_the_order_test_catches_a_first_order_heun():
    def broken(x, a, b):               # the corrector's slope taken at the start point instead of the Euler prediction
        d = (x - GD(x, torch.full((len(x),), a))) / a
        if b == 0: return x - a * d
        d2 = (x - GD(x, torch.full((len(x),), b))) / b
        return x + (b - a) * (d + d2) / 2
    assert _slope(broken) > -1.5

def test_edm_sample_runs_whole_path_at_the_order():
    "the full sampler (not step by step) converges like Heun: error ratio about 4 per doubling"
    x_T = torch.randn(1000, 4, generator=torch.Generator().manual_seed(3))
    exact = GD(GD.flow(x_T.double() * math.sqrt(1 + 80.0 ** 2), 80.0, 0.002), torch.full((1000,), 0.002))
    err = [(edm_sample(GD, SigmaSchedule(), x_T.shape, steps=n, x_T=x_T, clip_x0=False).double() - exact).pow(2).sum(1).mean().sqrt().item()
           for n in (32, 64)]
    assert 3.4 < err[0] / err[1] < 5.0, err

# ---- statistics and model calls

@pytest.mark.parametrize('kw', [dict(), dict(method='euler', steps=80), dict(**EDM_STOCHASTIC)], ids=['heun', 'euler', 'stochastic'])
def test_gaussian_statistics(kw):
    kw = dict(dict(steps=40), **kw)
    x = edm_sample(GD, SigmaSchedule(), (4000, 4), generator=torch.Generator().manual_seed(0), clip_x0=False, **kw)
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.045)
    torch.testing.assert_close(torch.cov(x.T.double()), COV, rtol=0, atol=0.05)

class Counting:
    def __init__(self, m): self.m, self.calls, self.n_classes = m, 0, None
    prediction = 'edm'
    def __call__(self, x, sigma, y=None): self.calls += 1; return self.m(x, sigma)

@pytest.mark.parametrize('method,steps,calls', [('heun', 18, 35), ('heun', 1, 1), ('euler', 18, 18)])
def test_model_calls(method, steps, calls):
    m = Counting(GD)
    edm_sample(m, SigmaSchedule(), (3, 4), steps=steps, method=method)
    assert m.calls == calls

def test_reproducible_with_a_generator():
    a = edm_sample(GD, SigmaSchedule(), (8, 4), steps=6, generator=torch.Generator().manual_seed(5), **EDM_STOCHASTIC)
    b = edm_sample(GD, SigmaSchedule(), (8, 4), steps=6, generator=torch.Generator().manual_seed(5), **EDM_STOCHASTIC)
    assert torch.equal(a, b)

# ---- parity with diffusers

def test_karras_sigmas_and_preconditioning_match_edm_euler_scheduler():
    ref = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.7)
    ref.set_timesteps(25)
    torch.testing.assert_close(ref.sigmas.double(), karras_sigmas(25, 0.002, 80.0), rtol=1e-6, atol=1e-6)
    sg, x, F = torch.tensor([0.003, 0.3, 2.0, 60.0]), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in edm_preconditioning(sg, 0.7))
    r = sg.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(ref.precondition_inputs(x, r), c_in * x)
    torch.testing.assert_close(ref.precondition_noise(sg), c_noise.flatten())
    torch.testing.assert_close(ref.precondition_outputs(x, F, r), c_skip * x + c_out * F)

def test_euler_run_matches_edm_euler_scheduler():
    ref = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.6)
    ref.set_timesteps(10)
    net = EDMPrecond(random_unet(), sigma_data=0.6)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = edm_sample(net, SigmaSchedule(), x_T.shape, steps=10, method='euler', x_T=x_T, clip_x0=False)
    x = x_T * math.sqrt(1 + 80.0 ** 2)
    with torch.no_grad():
        for i, t in enumerate(ref.timesteps):
            x = ref.step(net.net(ref.scale_model_input(x, t), net.timestep(ref.sigmas[i].expand(3))), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)

@pytest.mark.parametrize('sched,name,tol', [(linear_schedule(), 'linear', 1e-4), (cosine_schedule(), 'squaredcos_cap_v2', 1e-3)])
@pytest.mark.parametrize('cls,method', [(EulerDiscreteScheduler, 'euler'), (HeunDiscreteScheduler, 'heun')])
def test_discrete_karras_schedulers_match(sched, name, tol, cls, method):
    net = NearlyGaussian(sched)
    ref = cls(num_train_timesteps=1000, beta_schedule=name, beta_start=1e-4, beta_end=0.02, use_karras_sigmas=True)
    ref.set_timesteps(10)
    sig = schedule_sigmas(sched)
    ours_sig = karras_sigmas(10, sig[0].item(), sig[-1].item())
    torch.testing.assert_close(ref.sigmas.unique_consecutive().double(), ours_sig, rtol=tol, atol=1e-6)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = edm_sample(net, sched, x_T.shape, steps=10, method=method, sigma_max=sig[-1].item(), x_T=x_T, clip_x0=False)
    x, calls = x_T * math.sqrt(1 + sig[-1].item() ** 2), 0
    with torch.no_grad():
        for t in ref.timesteps:
            x, calls = ref.step(net(ref.scale_model_input(x, t), t.expand(3)), t, x).prev_sample, calls + 1
    assert calls == (19 if method == 'heun' else 10)
    torch.testing.assert_close(ours, x, rtol=tol, atol=tol)

def test_timesteps_match_diffusers_interpolation():
    ref = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule='linear', use_karras_sigmas=True)
    ref.set_timesteps(15)
    s = linear_schedule()
    got = VPDenoiser(NearlyGaussian(s), s).timestep(ref.sigmas[:-1])
    torch.testing.assert_close(got, ref.timesteps.float(), rtol=0, atol=0.02)

# ---- preconditioning on the digits

def test_preconditioning_gives_unit_second_moments_on_the_digits():
    y = bundled_mnist('train').images[:1000]
    sd = data_rms(y)
    assert 0.9 < sd < 1.0
    g = torch.Generator().manual_seed(0)
    for sigma in (0.005, 0.2, 2.0, 80.0):
        x = y + sigma * torch.randn(y.shape, generator=g)
        c_skip, c_out, c_in, _ = edm_preconditioning(torch.tensor(sigma), sd)
        assert abs((c_in * x).pow(2).mean().item() - 1) < 0.02
        assert abs(((y - c_skip * x) / c_out).pow(2).mean().item() - 1) < 0.03
        assert abs(edm_loss_weight(torch.tensor(sigma), sd).item() * c_out.item() ** 2 - 1) < 1e-5

# ---- the formulation, Trainer, checkpoints, sample()

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = bundled_mnist('train')
    tiny = TensorImages(d.images[:128], d.labels[:128], d.classes, 'tiny')
    path = tmp_path_factory.mktemp('edm')/'run.pt'
    torch.manual_seed(0)
    tr = Trainer(EDMPrecond(dict(channels=(8, 16), attn_levels=(), n_classes=10), sigma_data=data_rms(d)), EDM(), tiny,
                 batch_size=16, lr=3e-3, warmup=2, progress=False, device='cpu', ckpt_path=path).fit(steps=8)
    return tr, tiny, path

def test_untrained_loss_is_one():
    d = bundled_mnist('train').images[:256]
    f, m = EDM(), EDMPrecond(dict(channels=(8, 16), attn_levels=()), sigma_data=data_rms(d))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(): per = f.loss(m, d, None, f.draw_times(256, g), torch.randn(d.shape, generator=g))
    assert per.shape == (256,) and abs(per.mean().item() - 1) < 0.03

def test_checkpoint_gives_back_a_working_model(trained):
    tr, tiny, path = trained
    model, s = load_model(path)
    assert isinstance(model, EDMPrecond) and isinstance(s, SigmaSchedule) and s.default_sampler == 'heun'
    assert model.config == tr.model.config and model.config['net']['n_classes'] == 10
    for a, b in zip(model.state_dict().values(), tr.ema.model.state_dict().values()): assert torch.equal(a, b)
    y = torch.arange(3)
    for kw in [dict(), dict(sampler='euler', steps=4), dict(sampler='edm-stochastic', steps=4), dict(guidance_scale=2.0, steps=3),
               dict(sampler='ddim', steps=5), dict(sampler='solver', steps=5), dict(sampler='ddim', steps=5, guidance_scale=2.0)]:
        out = sample(model, s, (3, 1, 28, 28), y=y, generator=torch.Generator().manual_seed(0), **kw)
        assert out.shape == (3, 1, 28, 28) and torch.isfinite(out).all() and out.abs().max() <= 1
    known, mask = tiny.images[:3], half_mask((28, 28))
    out = sample(model, s, known=known, mask=mask, sampler='ddim', steps=5, y=y, guidance_scale=2.0)
    assert torch.equal(out[:, :, :14], known[:, :, :14])

def test_resume_is_exact(trained, tmp_path):
    tr, tiny, path = trained
    d = bundled_mnist('train')
    torch.manual_seed(0)
    straight = Trainer(EDMPrecond(dict(channels=(8, 16), attn_levels=(), n_classes=10), sigma_data=data_rms(d)), EDM(), tiny,
                       batch_size=16, lr=3e-3, warmup=2, progress=False, device='cpu').fit(steps=12)
    resumed = Trainer.resume(path, tiny, progress=False, ckpt_path=tmp_path/'r.pt').fit(steps=4)
    assert resumed.step == 12
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()): assert torch.equal(a, b)

def test_chapter4_model_through_sample_with_heun():
    s = cosine_schedule()
    net = NearlyGaussian(s)
    a = sample(net, s, (2, 1, 8, 8), sampler='heun', steps=6, x_T=torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), clip_x0=False)
    b = edm_sample(net, s, (2, 1, 8, 8), steps=6, x_T=torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), clip_x0=False)
    assert torch.equal(a, b)
    assert {'heun', 'euler', 'edm-stochastic'} <= set(SAMPLERS)

def test_guidance_composes():
    "a guided model is just another model: scale 1 is the conditional model exactly, for both kinds of s"
    y, x_T = torch.tensor([0, 2]), torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    s, net = cosine_schedule(), random_unet(n_classes=3)
    plain = edm_sample(net, s, x_T.shape, steps=4, y=y, x_T=x_T)
    assert torch.equal(edm_sample(classifier_free_guidance(net, 1.0), s, x_T.shape, steps=4, y=y, x_T=x_T), plain)
    assert not torch.equal(edm_sample(classifier_free_guidance(net, 3.0), s, x_T.shape, steps=4, y=y, x_T=x_T), plain)
    edm_net = EDMPrecond(random_unet(n_classes=3), sigma_data=0.9)
    a = sample(edm_net, SigmaSchedule(), x_T.shape, steps=4, y=y, x_T=x_T)
    assert torch.equal(sample(edm_net, SigmaSchedule(), x_T.shape, steps=4, y=y, x_T=x_T, guidance_scale=1.0), a)
    with pytest.raises(ValueError, match='y is required'): edm_sample(classifier_free_guidance(net, 2.0), s, x_T.shape, steps=2)

# ---- bad input

def test_bad_input():
    s = SigmaSchedule()
    with pytest.raises(ValueError, match='n must be an integer >= 1'): edm_sample(GD, s, (2, 4), steps=0)
    with pytest.raises(ValueError, match="method must be 'heun' or 'euler'"): edm_sample(GD, s, (2, 4), method='rk4')
    with pytest.raises(ValueError, match='S_churn must be a number >= 0'): edm_sample(GD, s, (2, 4), S_churn=-1.0)
    with pytest.raises(ValueError, match='sigmas must be decreasing'): edm_sample(GD, s, (2, 4), sigmas=[1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match='does not match'): edm_sample(GD, s, (2, 4), steps=3, sigmas=[2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match='x_T must have shape'): edm_sample(GD, s, (2, 4), x_T=torch.zeros(2, 5))
    with pytest.raises(ValueError, match='shape must be a tuple'): edm_sample(GD, s, (2, -4))
    with pytest.raises(ValueError, match='s must be a NoiseSchedule or a SigmaSchedule'): edm_sample(GD, 'cosine', (2, 4))
    with pytest.raises(ValueError, match='is a denoiser'): edm_sample(EDMPrecond(dict(channels=(8,), attn_levels=())), cosine_schedule(), (1, 1, 8, 8))
    with pytest.raises(ValueError, match='the model must return a tensor of shape'): edm_sample(lambda x, s, y=None: x[:, :2], s, (2, 4))
    with pytest.raises(FloatingPointError, match='non-finite'): edm_sample(lambda x, s, y=None: x * float('nan'), s, (2, 4))
    with pytest.raises(ValueError, match='eta applies to the DDIM sampler only'): sample(GD, s, (2, 4), sampler='heun', eta=1.0)
    with pytest.raises(ValueError, match='sigma must hold finite noise levels > 0'):
        EDMPrecond(dict(channels=(8,), attn_levels=()))(torch.zeros(2, 1, 8, 8), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match='sigma_data must be > 0'): EDMPrecond(sigma_data=0.0)
    with pytest.raises(ValueError, match='need 0 < sigma_min < sigma_max'): SigmaSchedule(1.0, 0.5)
    with pytest.raises(ValueError, match='P_std must be > 0'): EDM(P_std=0.0)
