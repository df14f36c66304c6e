"Flow matching: parity with diffusers' FlowMatchEulerDiscreteScheduler, order of the solvers, the change of variables to DDIM, training and checkpoints, the sampling entry point, bad input."
import math
import numpy as np
import pytest, torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffnb.data import ring_means, bundled_mnist, TensorImages
from diffnb.schedules import cosine_schedule, linear_schedule
from diffnb.ddim import ddim_sample, sampling_timesteps
from diffnb.training import GaussianMixtureModel, Trainer, load_model, load_checkpoint
from diffnb.sampling import sample, SAMPLERS
from diffnb.guidance import classifier_free_guidance
from diffnb.inpainting import half_mask
from diffnb.unet import UNet
from diffnb.flow import (flow_path, split_velocity, GaussianMixtureFlow, flow_time, flow_alpha_bar, DiscretizedFlow, flow_timesteps,
                         flow_sample, FlowPath, FlowMatching, FlowUNet, reflow_pairs, straightness, sliced_wasserstein, FLOW_METHODS)

RING = GaussianMixtureFlow(ring_means(8), 0.1)
SMOOTH = GaussianMixtureFlow(torch.tensor([[-1., 0.3], [1., -0.2], [0.2, 1.0]]), 0.3)

def diffusers_euler(model, x_T, steps, shift=1.0):
    "diffusers' flow-matching Euler loop; its model input is 1000 t"
    sch = FlowMatchEulerDiscreteScheduler(shift=shift)
    t_min = sch.sigma_min
    sch.set_timesteps(steps)
    x = x_T.clone()
    for tt in sch.timesteps:
        x = sch.step(model(x, torch.full((len(x),), float(tt) / 1000)), tt, x).prev_sample
    return x, sch.timesteps, t_min

@pytest.mark.parametrize('steps', [1, 2, 7, 28])
@pytest.mark.parametrize('shift', [1.0, 3.0])
def test_euler_matches_diffusers(steps, shift):
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(steps))
    want, timesteps, t_min = diffusers_euler(RING, x_T, steps, shift)
    torch.testing.assert_close(torch.tensor(flow_timesteps(steps, shift, t_min)[:-1], dtype=torch.float64) * 1000, timesteps.double(), rtol=0, atol=1e-3)
    torch.testing.assert_close(flow_sample(RING, (128, 2), steps=steps, shift=shift, t_min=t_min, x_T=x_T), want, rtol=1e-5, atol=1e-5)

def test_defaults_are_diffusers_defaults():
    "With no options, flow_sample is FlowMatchEulerDiscreteScheduler() run for `steps` steps"
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    want, _, _ = diffusers_euler(RING, x_T, 20)
    torch.testing.assert_close(flow_sample(RING, (64, 2), steps=20, x_T=x_T), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flow_sample(RING, (64, 2), steps=20, x_T=x_T, method='euler', clip_x0=False), want, rtol=1e-5, atol=1e-5)

def test_order_of_the_solvers():
    "Error against steps on log-log axes: slope -1 for Euler, -2 for midpoint and Heun"
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    run = lambda m, k: flow_sample(SMOOTH, (300, 2), steps=k, method=m, t_min=0, x_T=x_T)
    ref, ks = run('heun', 2048), [8, 16, 32, 64, 128]
    for method, order in [('euler', 1), ('midpoint', 2), ('heun', 2)]:
        err = [(run(method, k) - ref).norm(dim=1).mean().item() for k in ks]
        slope = np.polyfit(np.log(ks), np.log(err), 1)[0]
        assert abs(slope + order) < 0.15, (method, slope, err)

def test_euler_is_ddim():
    "DDIM (eta = 0) on chapter 4's exact model = Euler on the exact flow at the mapped times, from the rescaled noise"
    s = cosine_schedule()
    vp = GaussianMixtureModel(s, ring_means(8), 0.1)
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(2))
    for spacing in ('leading', 'trailing', 'linspace'):
        taus = sampling_timesteps(s, 15, spacing)
        times = flow_time(s.alpha_bar64[taus]).tolist() + [0.0]
        k0 = (s.sqrt_alpha_bar[taus[0]] + s.sqrt_one_minus_alpha_bar[taus[0]]).item()
        torch.testing.assert_close(flow_sample(RING, (512, 2), times=times, x_T=x_T / k0),
                                   ddim_sample(vp, s, (512, 2), steps=15, spacing=spacing, x_T=x_T, clip_x0=False), rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize('sched', [cosine_schedule(dtype=torch.float64), linear_schedule(dtype=torch.float64)], ids=['cosine', 'linear'])
def test_discretized_flow_is_the_vp_model(sched):
    "The exact flow field through the change of variables equals chapter 4's exact mixture model, as a v-prediction"
    vp, disc = GaussianMixtureModel(sched, ring_means(8), 0.1), DiscretizedFlow(RING, sched)
    x = 1.5 * torch.randn(200, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for tau in (0, 50, 500, 900, 999):
        t = torch.full((200,), tau)
        ab = sched.alpha_bar64[tau]
        eps = vp(x, t)
        torch.testing.assert_close(disc(x, t), (eps - (1 - ab).sqrt() * x) / ab.sqrt(), rtol=1e-6, atol=1e-6)   # v = a eps - b x0

def test_change_of_variables():
    ab = torch.linspace(1e-6, 1 - 1e-6, 101, dtype=torch.float64)
    torch.testing.assert_close(flow_alpha_bar(flow_time(ab)), ab)
    x0, eps = torch.randn(11, 3, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64)
    a, b = ab[::10, None].sqrt(), (1 - ab[::10, None]).sqrt()
    torch.testing.assert_close((a * x0 + b * eps) / (a + b), flow_path(x0, eps, flow_time(ab[::10])))

def test_split_velocity_and_exact_field_minimise_the_loss():
    x0, eps, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    e, x = split_velocity(eps - x0, flow_path(x0, eps, t), t)
    torch.testing.assert_close(e, eps); torch.testing.assert_close(x, x0)
    f, g = FlowMatching(), torch.Generator().manual_seed(4)
    pts = ring_means(8)[torch.randint(0, 8, (50_000,), generator=g)] + 0.1 * torch.randn(50_000, 2, generator=g)
    noise, times = torch.randn(50_000, 2, generator=g), f.draw_times(50_000, g)
    best = f.loss(RING, pts, None, times, noise).mean()
    for bad in (lambda x, t, y=None: 0.9 * RING(x, t), lambda x, t, y=None: RING(x, t) + 0.05):
        assert f.loss(bad, pts, None, times, noise).mean() > best

def test_exact_field_transports_noise_to_the_mixture():
    w = torch.tensor([0.3, 0.1, 0.2, 0.05, 0.05, 0.1, 0.1, 0.1])
    m = GaussianMixtureFlow(ring_means(8), 0.1, w)
    x = flow_sample(m, (8000, 2), steps=100, method='heun', t_min=0, generator=torch.Generator().manual_seed(5))
    d = torch.cdist(x, ring_means(8))
    assert (d.min(1).values > 0.5).float().mean() < 0.002
    torch.testing.assert_close(torch.bincount(d.argmin(1), minlength=8).float() / len(x), w, rtol=0, atol=0.02)

def test_flow_unet_feeds_scaled_time():
    torch.manual_seed(0)
    f = FlowUNet(channels=(8, 16), attn_levels=(), n_classes=3)
    torch.nn.init.normal_(f.unet.conv_out.weight, std=0.1)      # make the output depend on the input
    u = UNet(**{k: v for k, v in f.config.items() if k != 'time_scale'}); u.load_state_dict(f.unet.state_dict())
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([0.25, 0.9]), torch.tensor([0, 2])
    torch.testing.assert_close(f(x, t, y), u(x, 1000 * t, y))
    assert f.prediction == 'flow' and f.n_classes == 3 and f.in_channels == 1

@pytest.fixture(scope='module')
def tiny_data():
    d = bundled_mnist('train')
    return TensorImages(d.images[:128], d.labels[:128], d.classes, 'tiny')

KW = dict(batch_size=16, lr=3e-3, warmup=2, progress=False, device='cpu')
SMALL = dict(channels=(8, 16), attn_levels=(), n_classes=10)

def test_trainer_checkpoint_and_resume(tmp_path, tiny_data):
    "Trainer(model, FlowMatching(...), data) trains, resumes exactly, and load_model gives back (FlowUNet, FlowPath)"
    f = FlowMatching('logit-normal', 0.2, 0.8)
    torch.manual_seed(0); straight = Trainer(FlowUNet(**SMALL), f, tiny_data, **KW).fit(steps=5)
    torch.manual_seed(0); Trainer(FlowUNet(**SMALL), f, tiny_data, ckpt_path=tmp_path/'run.pt', **KW).fit(steps=3)
    resumed = Trainer.resume(tmp_path/'run.pt', tiny_data, progress=False).fit(steps=2)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()): torch.testing.assert_close(a, b, rtol=0, atol=0)
    ck = load_checkpoint(tmp_path/'run.pt')
    assert ck['formulation'] == f.config and ck['model_config']['class'] == 'FlowUNet' and ck['hparams']['min_snr_gamma'] is None
    model, s = load_model(tmp_path/'run.pt')
    assert isinstance(model, FlowUNet) and isinstance(s, FlowPath) and s.default_sampler == 'flow-euler'
    assert model.sample_shape == (1, 28, 28)
    x = sample(model, s, (2, 1, 28, 28), y=torch.tensor([3, 7]), steps=4)
    assert x.shape == (2, 1, 28, 28) and x.abs().max() <= 1

def test_every_sampler_through_sample(tiny_data):
    torch.manual_seed(0)
    model = FlowUNet(**SMALL).eval()
    torch.nn.init.normal_(model.unet.conv_out.weight, std=0.05)
    s, y = FlowPath(), torch.tensor([1, 4])
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in ('flow-euler', 'flow-midpoint', 'flow-heun', 'ddim', 'solver'):
        x = sample(model, s, (2, 1, 28, 28), sampler=name, steps=4, y=y, x_T=x_T, guidance_scale=2.0)
        assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all(), name
    known = tiny_data.images[:2]
    x = sample(model, s, known=known, mask=half_mask((28, 28), 'top'), sampler='ddim', steps=4, y=y)
    torch.testing.assert_close(x[..., :14, :], known[..., :14, :])
    # guidance on the velocity: scale 1 is the conditional model, and the guided velocity is affine in the scale
    g1 = flow_sample(classifier_free_guidance(model, 1.0), (2, 1, 28, 28), steps=3, y=y, x_T=x_T)
    torch.testing.assert_close(g1, flow_sample(model, (2, 1, 28, 28), steps=3, y=y, x_T=x_T))

def test_discretized_samplers_agree_with_flow_euler():
    "sample(..., sampler='ddim') on a flow model is flow Euler at the mapped times (through FlowPath.discretize)"
    s = cosine_schedule()
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(6))
    taus = sampling_timesteps(s, 12, 'leading')
    k0 = (s.sqrt_alpha_bar[taus[0]] + s.sqrt_one_minus_alpha_bar[taus[0]]).item()
    a = sample(RING, FlowPath(), (256, 2), sampler='ddim', steps=12, x_T=x_T, clip_x0=False)
    b = flow_sample(RING, (256, 2), times=flow_time(s.alpha_bar64[taus]).tolist() + [0.0], x_T=x_T / k0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    x = sample(RING, FlowPath(), (4000, 2), sampler='solver', steps=15, clip_x0=False, generator=torch.Generator().manual_seed(7))
    assert (torch.cdist(x, ring_means(8)).min(1).values > 0.5).float().mean() < 0.01

def test_reproducible_and_trajectory():
    g = lambda: torch.Generator().manual_seed(8)
    for m in FLOW_METHODS:
        a = flow_sample(RING, (16, 2), steps=5, method=m, generator=g())
        x, tr = flow_sample(RING, (16, 2), steps=5, method=m, generator=g(), return_trajectory=True)
        torch.testing.assert_close(a, x, rtol=0, atol=0)
        assert len(tr) == 5 and tr.x_t.shape == (6, 16, 2) and tr.t[0] == 1.0
        torch.testing.assert_close(tr.x_t[-1], x)

def test_clip_keeps_estimates_in_range():
    wide = GaussianMixtureFlow(torch.tensor([[3.0, 0.0]]), 0.1)
    x = flow_sample(wide, (64, 2), steps=10, clip_x0=True, generator=torch.Generator().manual_seed(9))
    assert x.abs().max() <= 1 + 1e-6
    assert flow_sample(wide, (64, 2), steps=10, generator=torch.Generator().manual_seed(9))[:, 0].mean() > 2.5

def test_reflow_pairs_and_straightness():
    z, x = reflow_pairs(RING, (500, 2), steps=50, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(x, flow_sample(RING, (500, 2), steps=50, t_min=0, x_T=z))
    const = lambda x, t, y=None: torch.full_like(x, -0.3)
    _, tr = flow_sample(const, (100, 2), steps=20, t_min=0, x_T=z[:100], return_trajectory=True)
    assert abs(straightness(tr)) < 1e-10
    _, tr = flow_sample(RING, (500, 2), steps=100, t_min=0, x_T=z, return_trajectory=True)
    assert straightness(tr) > 0.3
    a, b = torch.randn(4000, 2), torch.randn(4000, 2)
    assert sliced_wasserstein(a, b) < 0.06
    assert abs(sliced_wasserstein(a, a + torch.tensor([0.3, 0.4]), generator=torch.Generator().manual_seed(0)) - 0.5 / math.sqrt(2)) < 0.05

@pytest.mark.parametrize('call,msg', [
    (lambda: flow_sample(RING, (2, 2), steps=0), 'steps must be a positive integer'),
    (lambda: flow_sample(RING, (2, 2), steps=2.5), 'steps must be a positive integer'),
    (lambda: flow_sample(RING, (2, 2), method='rk4'), 'method must be one of'),
    (lambda: flow_sample(RING, (2, 2), shift=-1.0), 'shift must be a number > 0'),
    (lambda: flow_sample(RING, (2, 2), t_min=-0.1), 't_min must be a number in [0, 1)'),
    (lambda: flow_sample(RING, (2, 2), times=[1.0, 0.5, 0.7, 0.0]), 'times must decrease'),
    (lambda: flow_sample(RING, (2, 2), times=[1.0]), 'times must decrease'),
    (lambda: flow_sample(RING, (2, 2), steps=2, times=[1.0, 0.0]), 'contradicts'),
    (lambda: flow_sample(RING, (2,)), 'shape must be a tuple'),
    (lambda: flow_sample(RING, (2, 2), x_T=torch.zeros(2, 3)), 'x_T must have shape (2, 2)'),
    (lambda: flow_sample(RING, (2, 2), x_T=torch.full((2, 2), float('nan'))), 'x_T must be finite'),
    (lambda: flow_sample(RING, (2, 2), y=torch.tensor([0, 1])), 'y must be None'),
    (lambda: flow_sample(FlowUNet(**SMALL), (2, 1, 28, 28), steps=2, y=torch.tensor([0, 10])), 'y must hold class indices'),
    (lambda: flow_sample(lambda x, t, y=None: x[:, :1], (2, 2)), 'the model must return a tensor of shape (2, 2)'),
    (lambda: flow_sample(lambda x, t, y=None: x * float('nan'), (2, 2)), 'non-finite'),
    (lambda: RING(torch.zeros(2, 2), torch.tensor([0, 1])), 'float times'),
    (lambda: RING(torch.zeros(2, 2), torch.tensor([0.5, -0.1])), 't must lie in [0, 1]'),
    (lambda: FlowUNet(**SMALL)(torch.zeros(2, 1, 28, 28), torch.tensor([100, 200])), 'float times'),
    (lambda: FlowMatching('lognormal'), 'time_sampling must be one of'),
    (lambda: FlowMatching('logit-normal', scale=0), 'scale must be a number > 0'),
    (lambda: FlowUNet(prediction='v'), 'do not pass prediction'),
    (lambda: DiscretizedFlow(GaussianMixtureModel(cosine_schedule(), ring_means(8), 0.1), cosine_schedule()), 'needs a flow model'),
    (lambda: sample(RING, FlowPath(), (2, 2), sampler='flow-heun', eta=0.5), 'eta applies to the DDIM sampler only'),
    (lambda: sample(RING, cosine_schedule(), (2, 2), sampler='flow-euler'), 'cannot sample a model with NoiseSchedule'),
    (lambda: sample(RING, FlowPath(), known=torch.zeros(1, 1, 4, 4), mask=torch.ones(1, 1, 4, 4), sampler='flow-euler'), 'does not inpaint'),
    (lambda: FlowMatching().loss(lambda x, t, y=None: x[:, :1], torch.zeros(2, 2), None, torch.rand(2), torch.zeros(2, 2)), 'shaped like its input'),
    (lambda: sliced_wasserstein(torch.zeros(3, 2), torch.zeros(4, 2)), 'same shape'),
])
def test_bad_input(call, msg):
    with pytest.raises((ValueError, FloatingPointError)) as e: call()
    assert msg in str(e.value), str(e.value)

def test_registered():
    for name in ('flow-euler', 'flow-midpoint', 'flow-heun'):
        assert SAMPLERS[name].takes is FlowPath and not SAMPLERS[name].inpaints
