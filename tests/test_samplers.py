"Samplers: parity with diffusers, statistics under exact models, reproducibility, one model call per step, bad input."
import pytest, torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffnb.schedules import cosine_schedule, linear_schedule
from diffnb.ddpm import ddpm_sample, ddpm_step
from diffnb.training import GaussianModel, GaussianMixtureModel
from diffnb.ddim import ddim_sample, dpm_solver_sample, ddim_invert
from diffnb.data import ring_means
from diffnb.unet import UNet

S = cosine_schedule()
MU = torch.tensor([0.4, -0.2, 0.1])
COV = torch.tensor([[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.1]], dtype=torch.float64)
GAUSS = GaussianModel(S, MU, COV)

class Counting:
    "Wraps a model and counts its calls"
    def __init__(self, m): self.m, self.calls, self.n_classes, self.prediction = m, 0, getattr(m, 'n_classes', None), 'eps'
    def __call__(self, x, t, y=None): self.calls += 1; return self.m(x, t, y)

def test_ddpm_step_matches_diffusers():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=False, variance_type='fixed_small')
    x = torch.randn(4, 3)
    for t in (999, 500, 10, 0):
        eps = GAUSS(x, torch.full((4,), t))
        ab = S.alpha_bar64[t].item()
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        want = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        got = ddpm_step(x, t, x0, S, torch.randn(x.shape, generator=torch.Generator().manual_seed(t)))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

@pytest.mark.parametrize('clip', [False, True])
@pytest.mark.parametrize('sched,name', [(cosine_schedule(), 'squaredcos_cap_v2'), (linear_schedule(), 'linear')])
def test_ddim_matches_diffusers(clip, sched, name):
    model = GaussianMixtureModel(sched, ring_means(8), 0.1)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule=name, clip_sample=clip, set_alpha_to_one=True, timestep_spacing='leading')
    ref.set_timesteps(25)
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(model(x, torch.full((32,), int(t))), int(t), x, eta=0.0, use_clipped_model_output=clip).prev_sample
    torch.testing.assert_close(ddim_sample(model, sched, (32, 2), steps=25, x_T=x_T, clip_x0=clip), x, rtol=1e-4, atol=1e-4)

N = 4000   # standard error of a mean <= sqrt(0.3/4000) = 0.009; of a covariance entry <= 0.3*sqrt(2/4000) = 0.007

# Stochastic DDIM (eta=1) with 50 big steps plugs a point estimate of x0 into a wide jump and so overestimates the
# variance: by 0.036 here, measured with 40,000 samples. That is the method's discretisation error, not sampling
# noise, so its tolerance is wider.
@pytest.mark.parametrize('sampler,cov_tol', [
    (lambda g: ddpm_sample(GAUSS, S, (N, 3), generator=g, clip_x0=False), 0.035),
    (lambda g: ddim_sample(GAUSS, S, (N, 3), steps=50, generator=g, clip_x0=False), 0.035),
    (lambda g: ddim_sample(GAUSS, S, (N, 3), steps=50, eta=1.0, generator=g, clip_x0=False), 0.06),
    (lambda g: dpm_solver_sample(GAUSS, S, (N, 3), steps=15, generator=g, clip_x0=False), 0.035),
], ids=['ddpm', 'ddim-eta0', 'ddim-eta1', 'solver-15'])
def test_gaussian_statistics(sampler, cov_tol):
    x = sampler(torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.045)
    torch.testing.assert_close(torch.cov(x.T.double()), COV, rtol=0, atol=cov_tol)

def test_mixture_modes_and_weights():
    w = torch.tensor([0.4, 0.1, 0.3, 0.2])
    means = ring_means(4)
    m = GaussianMixtureModel(S, means, 0.1, w)
    for x in (ddpm_sample(m, S, (N, 2), clip_x0=False, generator=torch.Generator().manual_seed(2)),
              dpm_solver_sample(m, S, (N, 2), steps=20, clip_x0=False, generator=torch.Generator().manual_seed(3))):
        d = torch.cdist(x, means)
        # 5 standard deviations from every mode: probability e^-12.5 = 4e-6 for the data; samplers may strand a few
        assert (d.min(1).values > 0.5).float().mean() < 0.002
        # a weight's standard error is at most sqrt(0.25/4000) = 0.008
        torch.testing.assert_close(torch.bincount(d.argmin(1), minlength=4).float() / N, w, rtol=0, atol=0.035)

def test_ddim_full_steps_eta1_is_ddpm_in_distribution():
    a = ddim_sample(GAUSS, S, (N, 3), steps=1000, eta=1.0, clip_x0=False, generator=torch.Generator().manual_seed(4))
    b = ddpm_sample(GAUSS, S, (N, 3), clip_x0=False, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.mean(0), b.mean(0), rtol=0, atol=0.06)
    torch.testing.assert_close(a.std(0), b.std(0), rtol=0, atol=0.04)

def test_reproducible_and_x_T_respected():
    for f in (lambda **k: ddpm_sample(GAUSS, cosine_schedule(T=50), (8, 3), **k),
              lambda **k: ddim_sample(GAUSS, S, (8, 3), steps=10, eta=0.5, **k),
              lambda **k: dpm_solver_sample(GAUSS, S, (8, 3), steps=10, **k)):
        assert torch.equal(f(generator=torch.Generator().manual_seed(7)), f(generator=torch.Generator().manual_seed(7)))
        assert not torch.equal(f(generator=torch.Generator().manual_seed(7)), f(generator=torch.Generator().manual_seed(8)))
    x_T = torch.randn(8, 3)
    _, traj = ddim_sample(GAUSS, S, (8, 3), steps=10, x_T=x_T, return_trajectory=True)
    assert torch.equal(traj.x_t[0], x_T) and len(traj) == 10 and traj.x0.shape == (10, 8, 3)

def test_inversion_round_trip():
    x0 = ddim_sample(GAUSS, S, (64, 3), steps=100, clip_x0=False, generator=torch.Generator().manual_seed(9))
    z = ddim_invert(GAUSS, S, x0, steps=100)
    assert (ddim_sample(GAUSS, S, (64, 3), steps=100, x_T=z, clip_x0=False) - x0).abs().max() < 0.05

@pytest.mark.parametrize('fn,steps', [(lambda m, **k: ddpm_sample(m, cosine_schedule(T=30), (2, 3), **k), 30),
                                      (lambda m, **k: ddim_sample(m, S, (2, 3), steps=12, **k), 12),
                                      (lambda m, **k: dpm_solver_sample(m, S, (2, 3), steps=9, **k), 9)])
def test_one_model_call_per_step(fn, steps):
    m = Counting(GAUSS)
    fn(m)
    assert m.calls == steps

@pytest.mark.parametrize('call,match', [
    (lambda m: ddim_sample(m, S, (2, 3), steps=0), r'steps must be an integer in \[1, 1000\]'),
    (lambda m: ddim_sample(m, S, (2, 3), steps=1001), r'steps must be an integer in \[1, 1000\]'),
    (lambda m: dpm_solver_sample(m, S, (2, 3), steps=-3), r'steps must be an integer'),
    (lambda m: ddim_sample(m, S, (2, 3), eta=-1.0), 'eta must be a number >= 0'),
    (lambda m: ddpm_sample(m, S, (2, 3), x_T=torch.zeros(2, 4)), r'x_T must have shape \(2, 3\)'),
    (lambda m: ddim_sample(m, S, (2, 3), x_T=torch.full((2, 3), float('nan'))), 'x_T must be finite'),
    (lambda m: ddim_sample(m, S, (2, 3), y=torch.tensor([1, 2])), 'no class conditioning'),
])
def test_bad_input_before_any_model_call(call, match):
    m = Counting(GAUSS)
    with pytest.raises(ValueError, match=match): call(m)
    assert m.calls == 0

def test_bad_labels_and_model_output():
    net = UNet(n_classes=10, channels=(8, 16), attn_levels=())
    with pytest.raises(ValueError, match=r'y must have shape \(2,\)'): ddim_sample(net, S, (2, 1, 8, 8), y=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r'class indices in \[0, 9\]'): ddim_sample(net, S, (2, 1, 8, 8), y=torch.tensor([1, 10]))
    with pytest.raises(ValueError, match='the model must return a tensor of shape'):
        ddim_sample(lambda x, t, y=None: x[:, :1], S, (2, 3, 8, 8), steps=5)

@pytest.mark.parametrize('sched', [cosine_schedule(), linear_schedule()])
def test_logsnr_spacing(sched):
    from diffnb.ddim import sampling_timesteps
    ab = sched.alpha_bar64
    logsnr = (ab / (1 - ab)).log()
    for steps in (1, 2, 5, 10, 15, 50, 200, 990, 999, 1000):
        ts = sampling_timesteps(sched, steps, 'logsnr')
        assert len(ts) == steps and all(0 <= b < a <= 999 for a, b in zip(ts, ts[1:]))
        if steps <= 50:   # inside the covered range: from log-SNR -10 up to +6
            assert -10 <= logsnr[ts[0]] < -9 and logsnr[ts[0] + 1] < -10
            if steps > 1: assert 5.5 < logsnr[ts[-1]] <= 6
    assert sampling_timesteps(sched, 1000, 'logsnr') == list(range(999, -1, -1))
    with pytest.raises(ValueError, match='needs the NoiseSchedule'): sampling_timesteps(1000, 10, 'logsnr')

def test_solver_defaults_to_logsnr_spacing():
    "The solver never asks the model about timesteps below log-SNR -10 (the cosine schedule's 995..999)"
    seen = []
    def model(x, t, y=None): seen.append(int(t[0])); return GAUSS(x, t)
    dpm_solver_sample(model, S, (4, 3), steps=10, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 10 and seen[0] == 994

# --- DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler --------------------------------------------
# Same timesteps ('trailing'), same final step to the clean image. With the cosine schedule the first timestep has
# alpha-bar 2.4e-9 and diffusers forms its sigmas in float32, so the two agree to about 1e-4 there (1e-6 with the
# linear schedule, whose first alpha-bar is 4e-5).
@pytest.mark.parametrize('sched,name,tol', [(cosine_schedule(), 'squaredcos_cap_v2', 5e-4), (linear_schedule(), 'linear', 1e-5)])
@pytest.mark.parametrize('steps', [10, 25])
def test_dpm_solver_matches_diffusers(sched, name, tol, steps):
    from diffusers import DPMSolverMultistepScheduler
    model = GaussianMixtureModel(sched, ring_means(8), 0.1)
    ref = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule=name, algorithm_type='dpmsolver++', solver_order=2,
                                      timestep_spacing='trailing', lower_order_final=True, final_sigmas_type='zero')
    ref.set_timesteps(steps)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    x = x_T.clone()
    for t in ref.timesteps: x = ref.step(model(x, torch.full((32,), int(t))), int(t), x).prev_sample
    ours = dpm_solver_sample(model, sched, (32, 2), steps=steps, x_T=x_T, clip_x0=False, spacing='trailing')
    torch.testing.assert_close(ours, x, rtol=0, atol=tol)

# --- order of accuracy on the exact Gaussian model ----------------------------------------------------------------
# A deterministic sampler maps Gaussian noise affinely, so with Gaussian data its output distribution is Gaussian
# and follows exactly from D+1 runs. Started from the exact distribution of x_t at its first timestep, it should
# output the exact distribution of x0-hat at its last timestep; the Wasserstein-2 distance to that measures the
# discretisation error alone (no sampling noise), and its slope against the step count on log-log axes is the order.
def _w2(m1, c1, m2, c2):
    w, v = torch.linalg.eigh(c2)
    r2 = (v * w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(r2 @ c1 @ r2).clamp_min(0).sqrt().sum()
    return float(((m1 - m2).pow(2).sum() + c1.trace() + c2.trace() - 2 * cross).clamp_min(0).sqrt())

def _error(sampler, steps):
    from diffnb.ddim import sampling_timesteps
    s = cosine_schedule(dtype=torch.float64)
    gm = GaussianModel(s, MU.double(), COV)
    ts = sampling_timesteps(s, steps, 'logsnr')
    a0, aL, I = s.alpha_bar64[ts[0]], s.alpha_bar64[ts[-1]], torch.eye(3, dtype=torch.float64)
    m0, L0 = a0.sqrt() * gm.mean, torch.linalg.cholesky(a0 * COV + (1 - a0) * I)
    pts = torch.cat([m0[None], m0 + L0.T])
    out = sampler(gm, s, pts.shape, steps=steps, x_T=pts, clip_x0=False, spacing='logsnr').double()
    M = out[1:] - out[0]
    return _w2(out[0], M.T @ M, gm.mean, aL * COV @ torch.linalg.solve(aL * COV + (1 - aL) * I, COV))

def _slope(sampler, counts=(16, 24, 32, 48, 64)):
    import numpy as np
    return np.polyfit(np.log(counts), np.log([_error(sampler, k) for k in counts]), 1)[0]

def test_solver_is_second_order():
    assert _slope(dpm_solver_sample) < -1.7

def test_ddim_is_first_order_and_would_fail_the_second_order_check():
    s = _slope(ddim_sample)
    assert -1.3 < s < -0.7
    assert not s < -1.7        # the check above tells a first-order method from a second-order one

# --- what limits a few-step sampler on the ring ---------------------------------------------------------------------
# Every few-step sampler ends by replacing its sample with x0-hat = E[x0 | x_t] at its last grid point. For a point
# that has settled on one mode of standard deviation std, that posterior mean spreads around the mode's centre with
# variance std^2 / (1 + e^(-2 lambda) / std^2) per coordinate instead of std^2. The log-SNR grid ends at log-SNR 6
# (lambda = 3): rms distance 0.127 instead of the data's 0.141. At 50 steps the samplers sit on that floor -- the gap
# to 0.141 is the last jump, not the discretisation of the ODE.
def test_fifty_steps_sit_on_the_floor_of_the_last_jump():
    import math
    from diffnb.ddim import sampling_timesteps
    means, std = ring_means(8), 0.1
    m = GaussianMixtureModel(S, means, std)
    t_last = sampling_timesteps(S, 50, 'logsnr')[-1]
    lam = 0.5 * math.log(S.alpha_bar64[t_last].item() / (1 - S.alpha_bar64[t_last].item()))
    floor = std * math.sqrt(2 / (1 + math.exp(-2 * lam) / std ** 2))
    assert abs(floor - 0.127) < 0.002
    for fn in (ddim_sample, dpm_solver_sample):
        x = fn(m, S, (N, 2), steps=50, spacing='logsnr', clip_x0=False, generator=torch.Generator().manual_seed(6))
        d = torch.cdist(x, means).min(1).values
        rms = d[d < 0.3].pow(2).mean().sqrt().item()        # the points that settled on a mode
        assert abs(rms - floor) < 0.006, (fn.__name__, rms, floor)   # standard error about 0.001


def test_sampler_registered_with_a_notebooks_class_of_the_same_name():
    "A chapter's notebook registers its samplers with the classes it defines itself; `sample` must still take the module's class as one of them"
    import diffnb.flow as F
    from diffnb.sampling import register_sampler, SAMPLERS, sample
    class FlowPath:                                   # what running chapter 12's notebook defines: same name, another class
        def discretize(self, *a, **k): return F.FlowPath.discretize(self, *a, **k)
    torch.manual_seed(0)
    net = F.FlowUNet(channels=(8, 16), attn_levels=(), n_classes=10).eval()
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    x_T = torch.randn(2, 1, 28, 28)
    want = sample(net, F.FlowPath(), (2, 1, 28, 28), sampler='flow-euler', steps=8, x_T=x_T, clip_x0=False)
    spec = SAMPLERS['flow-euler']
    try:
        register_sampler('flow-euler', spec.fn, spec.default_steps, FlowPath, spec.inpaints, spec.summary)
        got = sample(net, F.FlowPath(), (2, 1, 28, 28), sampler='flow-euler', steps=8, x_T=x_T, clip_x0=False)
    finally: SAMPLERS['flow-euler'] = spec
    assert want.std() > 0.1 and (got - want).abs().max() < 1e-6
