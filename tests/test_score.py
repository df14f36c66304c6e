"The score chapter: closed-form checks of the likelihood, the probability-flow ODE, denoising score matching, and the PC sampler."
import math, pytest, torch
from conftest import run, bin_path
from diffnb.schedules import linear_schedule, cosine_schedule
from diffnb.edm import GaussianDenoiser, SigmaSchedule, schedule_sigmas
from diffnb.flow import GaussianMixtureFlow, FlowPath
from diffnb.training import GaussianModel, diffusion_loss
from diffnb.sampling import sample, sampler_names
from diffnb.score import (BIN, bits_per_dim, dsm_loss, log_likelihood, pc_sample, pf_ode, reverse_vp, score_from_eps)

MU, COV = torch.tensor([0.3, -0.2, 0.1, 0.0]), torch.diag(torch.tensor([0.2, 0.5, 0.1, 0.3]))

class ContinuousGaussian:
    "The exact noise predictor of N(mean, cov) on a NoiseSchedule, at fractional timesteps (log sigma interpolated)"
    prediction, n_classes = 'eps', None
    def __init__(self, s, mean, cov): self.D, self.log_sig = GaussianDenoiser(mean, cov), schedule_sigmas(s).log()
    def __call__(self, x, t, y=None):
        t = t.double().clamp(0, len(self.log_sig) - 1)
        lo = t.floor().long().clamp(max=len(self.log_sig) - 2)
        sig = (self.log_sig[lo] + (t - lo) * (self.log_sig[lo + 1] - self.log_sig[lo])).exp().reshape(-1, 1)
        xs = x.double() * (1 + sig ** 2).sqrt()
        return ((xs - self.D(xs, sig.flatten()).double()) / sig).to(x.dtype)

def _gauss(x, mean, cov): return torch.distributions.MultivariateNormal(mean.double(), cov.double()).log_prob(x.double())

@pytest.mark.parametrize('kind', ['vp', 'edm', 'flow'])
def test_likelihood_of_gaussian_data_matches_the_closed_form(kind):
    x = torch.distributions.MultivariateNormal(MU, COV).sample((100,))
    s = cosine_schedule()
    if kind == 'vp': m, sch, ref = ContinuousGaussian(s, MU, COV), s, _gauss(x, MU, COV + schedule_sigmas(s)[0] ** 2 * torch.eye(4))
    elif kind == 'edm': m, sch, ref = GaussianDenoiser(MU, COV), SigmaSchedule(0.002, 80.0, 7.0), _gauss(x, MU, COV + 0.002 ** 2 * torch.eye(4))
    else:
        x = MU + 0.4 * torch.randn(100, 4)                              # the flow model's own Gaussian, N(MU, 0.4^2 I)
        m, sch, ref = GaussianMixtureFlow(MU[None], 0.4), FlowPath(), _gauss(x, MU, (0.16 + (1e-3 / 0.999) ** 2) * torch.eye(4))
    exact = log_likelihood(m, sch, x, steps=64, trace='exact')
    assert (exact - ref).abs().max() < 0.05
    hutch = log_likelihood(m, sch, x, steps=64, generator=torch.Generator().manual_seed(0))
    d = hutch - ref
    assert d.mean().abs() < 3 * d.std() / math.sqrt(len(d)) + 0.01        # unbiased: within its standard error

def test_bits_per_dim_of_quantised_gaussian_images():
    "E_u log N(x + bin (u - 1/2)) = log N(x) - bin^2 / 24 tr(S^-1): bits/dim within 3 standard errors of it"
    den = GaussianDenoiser(MU.reshape(1, 2, 2), COV)
    x = torch.distributions.MultivariateNormal(MU, COV).sample((200,)).clamp(-1, 1).reshape(-1, 1, 2, 2)
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    r = bits_per_dim(den, SigmaSchedule(0.002, 80.0, 7.0), x, steps=48, trace='exact', generator=torch.Generator().manual_seed(0))
    S = COV.double() + 0.002 ** 2 * torch.eye(4, dtype=torch.float64)
    ref = _gauss(x.flatten(1), MU, S) - BIN ** 2 / 24 * torch.linalg.inv(S).trace()
    ref_bpd = (-ref / (4 * math.log(2)) - math.log2(BIN)).mean().item()
    assert abs(r['bpd'] - ref_bpd) < 3 * r['se'] and r['n'] == 200 and r['se'] > 0

@pytest.mark.parametrize('kind', ['vp', 'edm'])
def test_richardson_extrapolation_removes_most_of_the_solver_error(kind):
    "Heun's error falls like 1 / steps^2: steps and steps / 2 combined are several times closer to the closed form"
    x = MU + torch.randn(100, 4, generator=torch.Generator().manual_seed(0)) @ COV.sqrt()      # N(MU, COV): COV is diagonal
    s = cosine_schedule()
    if kind == 'vp': m, sch, ref = ContinuousGaussian(s, MU, COV), s, _gauss(x, MU, COV + schedule_sigmas(s)[0] ** 2 * torch.eye(4))
    else: m, sch, ref = GaussianDenoiser(MU, COV), SigmaSchedule(0.002, 80.0, 7.0), _gauss(x, MU, COV + 0.002 ** 2 * torch.eye(4))
    plain = (log_likelihood(m, sch, x, steps=32, trace='exact') - ref).abs().max()
    extra = (log_likelihood(m, sch, x, steps=32, trace='exact', extrapolate=True) - ref).abs().max()
    assert extra < plain / 2, (plain, extra)
    with pytest.raises(ValueError, match='even number of steps'): log_likelihood(m, sch, x, steps=7, extrapolate=True)
    assert log_likelihood(m, sch, x[:2], steps=7).shape == (2,)         # plain Heun takes any number of steps

@pytest.mark.parametrize('kind', ['vp', 'edm', 'flow'])
def test_a_common_data_end(kind):
    "sigma_min puts every kind of model's data end at the same level: the density of x0 + sigma_min eps"
    sm, cov = 0.05, torch.diag(torch.tensor([0.2, 0.5, 0.1, 0.002]))             # one narrow direction: the level shows
    x = MU + torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) @ cov.sqrt()
    s = cosine_schedule()
    if kind == 'vp': m, sch = ContinuousGaussian(s, MU, cov), s
    elif kind == 'edm': m, sch = GaussianDenoiser(MU, cov), SigmaSchedule(0.002, 80.0, 7.0)
    else: x, m, sch, cov = MU + 0.05 * torch.randn(200, 4), GaussianMixtureFlow(MU[None], 0.05), FlowPath(), 0.0025 * torch.eye(4)
    lp = log_likelihood(m, sch, x, steps=64, trace="exact", extrapolate=True, sigma_min=sm)
    assert (lp - _gauss(x, MU, cov + sm ** 2 * torch.eye(4))).abs().max() < 0.05
    own = log_likelihood(m, sch, x, steps=32, trace='exact', extrapolate=True)
    assert (own - lp).mean() > 0.05                                                  # another level, another density
    if kind == 'vp':
        with pytest.raises(ValueError, match='levels the model was trained on'): pf_ode(m, sch, sigma_min=1e-3)
    with pytest.raises(ValueError, match='sigma_min must be a number'): pf_ode(m, sch, sigma_min=-1.0)

def test_bits_per_dim_refuses_bad_input():
    den, ss = GaussianDenoiser(torch.zeros(1, 2, 2)), SigmaSchedule(0.002, 80.0, 7.0)
    x = -torch.ones(3, 1, 2, 2)                                       # pixel level 0
    for bad, msg in ((x - 0.5, '[-1, 1]'), (x + 0.001, '8-bit levels'), (x.long(), 'float tensor'), (x * float('nan'), 'finite')):
        with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]')): bits_per_dim(den, ss, bad)
    for steps in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='steps must be'): bits_per_dim(den, ss, x, steps=steps)
    from diffnb.pretrained import load_pretrained
    with pytest.raises(ValueError, match='no probability-flow ODE'): pf_ode(*load_pretrained('mnist-fast'))

def test_pf_ode_and_reverse_sde_share_their_marginals():
    s, mu, cov = linear_schedule(), torch.tensor([0.5, -0.3]), torch.tensor([[0.3, 0.1], [0.1, 0.2]])
    gm, keep = GaussianModel(s, mu, cov), (600, 300, 0)
    start = torch.randn(8000, 2, generator=torch.Generator().manual_seed(0))
    _, sde = reverse_vp(gm, s, start, generator=torch.Generator().manual_seed(1), keep=keep)
    _, ode = reverse_vp(gm, s, start, ode=True, keep=keep)
    for t in keep:
        ab = s.alpha_bar64[t].item()
        m, c = math.sqrt(ab) * mu.double(), ab * cov.double() + (1 - ab) * torch.eye(2, dtype=torch.float64)
        for pts in (sde[t], ode[t]):
            assert (pts.double().mean(0) - m).abs().max() < 0.04 and (pts.double().T.cov() - c).abs().max() < 0.05

def test_reverse_sde_is_ddpm_for_small_betas():
    from diffnb.ddpm import ddpm_sample
    s = linear_schedule()
    gm = GaussianModel(s, torch.tensor([0.5, -0.3]), torch.tensor([[0.3, 0.1], [0.1, 0.2]]))
    a = ddpm_sample(gm, s, (500, 2), variance='beta', clip_x0=False, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    b, _ = reverse_vp(gm, s, torch.randn(500, 2, generator=g), generator=g)
    assert (a - b).abs().max() < 0.05

def test_dsm_loss_is_the_noise_loss_weighted_by_one_over_b_squared():
    s = cosine_schedule()
    x0, noise = torch.randn(64, 3), torch.randn(64, 3)
    t = torch.randint(0, 1000, (64,))
    net = lambda x_t, t, y=None: 0.5 * torch.sin(x_t)
    b = s.sqrt_one_minus_alpha_bar[t][:, None]
    dsm = dsm_loss(lambda x_t, t: score_from_eps(net(x_t, t), b), x0, t, noise, s)
    ch4 = diffusion_loss(net, x0, s, t=t, noise=noise, reduction='none')
    torch.testing.assert_close(dsm, 3 * ch4 / b[:, 0] ** 2, rtol=1e-4, atol=1e-4)

def test_pc_is_registered_and_samples():
    assert 'pc' in sampler_names()
    s, g = cosine_schedule(), torch.Generator().manual_seed(0)
    mu, A = 0.3 * torch.randn(32, generator=g), 0.1 * torch.randn(32, 32, generator=g)
    cov = A @ A.T + 0.1 * torch.eye(32)
    gm = GaussianModel(s, mu, cov)
    err = {}
    for steps, c in ((20, 0), (40, 1), (400, 1)):                    # the corrector helps at equal levels; many levels are exact
        x = sample(gm, s, (3000, 32), sampler='pc', steps=steps, corrector_steps=c, clip_x0=False, generator=torch.Generator().manual_seed(1))
        err[steps] = (x.T.cov() - cov).abs().max().item()
    assert err[20] > err[40] and err[400] < 0.15 and (x.mean(0) - mu).abs().max() < 0.05
    gm = GaussianModel(s, torch.tensor([0.5, -0.3]), torch.tensor([[0.3, 0.1], [0.1, 0.2]]))
    a = sample(gm, s, (4, 2), sampler='pc', generator=torch.Generator().manual_seed(1))
    b = pc_sample(gm, s, (4, 2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)                                            # the registry's default: 20 calls, as pc_sample's
    with pytest.raises(ValueError, match='multiple of 2'): sample(gm, s, (4, 2), sampler='pc', steps=7)
    with pytest.raises(ValueError, match='does not inpaint'): sample(gm, s, sampler='pc', known=torch.zeros(1, 2), mask=torch.ones(1, 2))

def test_pc_with_guidance_on_a_class_conditional_unet():
    from diffnb.pretrained import load_pretrained
    model, s = load_pretrained()
    x = sample(model, s, (2, 1, 28, 28), sampler='pc', steps=4, y=torch.tensor([1, 7]), guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all() and x.abs().max() <= 1

def test_the_commands(tmp_path):
    ev, smp = bin_path('diffnb_eval'), bin_path('diffnb_sample')
    r = run([ev, '-n', '2', '--steps', '2', '--json', str(tmp_path/'r.json')], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    assert 'bits/dim' in r.stdout and (tmp_path/'r.json').exists()
    for bad, msg in ((['-n', '0'], '-n must be'), (['--steps', '0'], '--steps must be'), (['--data', str(tmp_path/'none')], 'not found'),
                     (['--model', 'mnist-fast', '-n', '2'], 'no probability-flow ODE')):
        r = run([ev, *bad])
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run([ev, '-n', '2', '--steps', '3'])
    assert r.returncode == 2 and '--steps must be even' in r.stderr, r.stderr
    r = run([ev, '-n', '2', '--steps', '3', '--no-extrapolate'], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0 and '3 Heun steps,' in r.stdout, r.stderr
    r = run([smp, '--sampler', 'pc', '--steps', '4', '-n', '2', '--no-progress', '--out', str(tmp_path/'pc.png')], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'pc.pt')['samples'].shape == (2, 1, 28, 28)
