"Schedules and the forward process against diffusers (an independent implementation) and closed forms."
import math, pytest, torch
from diffusers import DDPMScheduler
from diffnb.schedules import linear_schedule, cosine_schedule, sigmoid_schedule, NoiseSchedule
from diffnb.forward import q_sample, q_posterior

@pytest.mark.parametrize('ours,name', [(linear_schedule, 'linear'), (cosine_schedule, 'squaredcos_cap_v2')])
def test_betas_match_diffusers(ours, name):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    s = ours()
    assert s.T == 1000 and s.betas.dtype == torch.float32
    torch.testing.assert_close(s.betas, ref.betas, rtol=0, atol=1e-8)
    torch.testing.assert_close(s.alpha_bar, ref.alphas_cumprod, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours(dtype=torch.float64).betas, ref.betas.double(), rtol=2.5e-7, atol=0)   # diffusers rounds to float32
    assert s.alpha_bar[0].item() == pytest.approx(1 - s.betas[0].item())

def test_q_sample_contract():
    s = cosine_schedule()
    x0, noise, t = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 500, 998, 999])
    expect = s.alpha_bar[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - s.alpha_bar[t]).sqrt().view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(q_sample(x0, t, noise, s), expect)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2')
    torch.testing.assert_close(q_sample(x0, t, noise, s), ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)

def test_posterior_variance_matches_diffusers():
    s = linear_schedule()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule='linear', variance_type='fixed_small')
    # diffusers forms 1 - alpha_bar in float32, which loses digits near t = 0 (alpha_bar close to 1); diffnb in float64
    for t, rel in ((1, 2e-3), (10, 1e-3), (500, 1e-5), (999, 1e-5)):
        x0, xt = torch.randn(1, 3), torch.randn(1, 3)
        _, var, _ = q_posterior(x0, xt, torch.tensor([t]), s)
        assert var.item() == pytest.approx(ref._get_variance(t).item(), rel=rel)

@pytest.mark.parametrize('bad,match', [
    (dict(t=torch.tensor([0, 1000])), r't must lie in \[0, 999\]'),
    (dict(t=torch.tensor([0])), r't must have shape \(2,\)'),
    (dict(noise=torch.zeros(2, 3)), 'noise must have the same shape as x0'),
])
def test_q_sample_bad_input(bad, match):
    args = dict(x0=torch.zeros(2, 4), t=torch.tensor([0, 1]), noise=torch.zeros(2, 4), s=cosine_schedule())
    with pytest.raises(ValueError, match=match): q_sample(**{**args, **bad})

def test_schedule_moves_and_rejects():
    s = sigmoid_schedule(T=50).to(dtype=torch.float64)
    assert s.alpha_bar.dtype == torch.float64 and (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    with pytest.raises(ValueError): NoiseSchedule([0.5, 0.0])

def test_cosine_offset_keyword_and_old_configs():
    from diffnb.schedules import schedule_from_config
    s = cosine_schedule(T=64, offset=0.02)
    assert s.config == {'name': 'cosine', 'T': 64, 'offset': 0.02, 'max_beta': 0.999}
    assert torch.equal(schedule_from_config(s.config).betas, s.betas)
    # checkpoints written before the rename store the offset under 's'
    assert torch.equal(schedule_from_config({'name': 'cosine', 'T': 64, 's': 0.02, 'max_beta': 0.999}).betas, s.betas)
    with pytest.raises(TypeError): cosine_schedule(T=64, s=0.02)

@pytest.mark.parametrize('start,end,tau', [(-3., 3., 1.), (0., 3., 0.9), (-1., 5., 2.)])
def test_sigmoid_schedule_is_chens_formula(start, end, tau):
    # Chen (2023): v(z) = sigmoid(z / tau) on the window; alpha_bar(u) = (v(end) - v(start + u (end - start))) / (v(end) - v(start))
    v = lambda z: 1 / (1 + math.exp(-z / tau))
    s = sigmoid_schedule(T=200, start=start, end=end, tau=tau, dtype=torch.float64)
    expect = torch.tensor([(v(end) - v(start + (i + 1) / 200 * (end - start))) / (v(end) - v(start)) for i in range(200)], dtype=torch.float64)
    torch.testing.assert_close(s.alpha_bar[:-1], expect[:-1], rtol=0, atol=1e-12)   # the last beta is capped at 0.999
