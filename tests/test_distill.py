"The distilled student from the outside: the shipped file, its sampler, guidance, bad input, resumable distillation runs, the exact-teacher check and a quality regression."
import copy, math, tempfile
from pathlib import Path
import pytest, torch
from torch import nn
from diffnb.schedules import cosine_schedule
from diffnb.data import ASSETS, bundled_mnist, ring_means, gaussian_ring
from diffnb.training import load_model, load_checkpoint, Trainer, GaussianMixtureModel, GaussianModel
from diffnb.sampling import sample, SAMPLERS
from diffnb.unet import UNet, timestep_embedding
from diffnb.ddim import dpm_solver_sample
from diffnb.pretrained import pretrained_info
from diffnb.distill import (ProgressiveDistillation, ConsistencyDistillation, DistilledStudents, StudentSchedule, distilled_sample,
                            student_from_teacher, student_timesteps, progressive_distill, export_student, x0_estimate)

def load_student():
    "The shipped student"
    from diffnb.pretrained import load_pretrained
    return load_pretrained('mnist-fast')

def test_shipped_student_loads_offline():
    model, s = load_student()
    assert isinstance(model, DistilledStudents) and isinstance(s, StudentSchedule)
    assert s.default_sampler == 'distilled' and model.steps == [1, 2, 4, 8]
    assert (ASSETS/'mnist-fast'/'model.safetensors').stat().st_size < 8_000_000
    info = pretrained_info('mnist-fast')
    assert info['data'] == 'bundled MNIST, training part' and 'command' in info

def test_student_samples_with_labels_and_guidance():
    model, s = load_student()
    y = torch.arange(10)
    for n in (1, 2, 4, 8):
        x = sample(model, s, (10, 1, 28, 28), steps=n, y=y, generator=torch.Generator().manual_seed(n))
        assert x.shape == (10, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(sample(model, s, (4, 1, 28, 28), y=y[:4], generator=g1), sample(model, s, (4, 1, 28, 28), y=y[:4], generator=g2))
    guided = sample(model, s, (10, 1, 28, 28), y=y, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert guided.shape == (10, 1, 28, 28)

def test_bad_input_is_reported():
    model, s = load_student()
    with pytest.raises(ValueError, match=r'distilled for \[1, 2, 4, 8\] steps, not 3'): sample(model, s, (2, 1, 28, 28), steps=3, y=torch.arange(2))
    with pytest.raises(ValueError, match='y must hold class indices'): sample(model, s, (2, 1, 28, 28), y=torch.tensor([0, 12]))
    with pytest.raises(ValueError, match='eta applies to the DDIM sampler only'): sample(model, s, (2, 1, 28, 28), eta=0.5, y=torch.arange(2))
    with pytest.raises(ValueError, match="method must be one of"): distilled_sample(model, cosine_schedule(), (2, 1, 28, 28))
    with pytest.raises(ValueError, match="a student must predict 'v' or 'x0'"): student_from_teacher(UNet(), 'eps')
    with pytest.raises(ValueError, match="this model samples only with 'distilled', not 'solver'"):
        sample(model, s, (2, 1, 28, 28), sampler='solver', y=torch.arange(2))
    with pytest.raises(ValueError, match='has no teacher'):
        ProgressiveDistillation.from_config(ProgressiveDistillation(None, cosine_schedule(), 2).config).teacher

def test_consistency_target_network_is_a_moving_average():
    "The target network starts as a copy of the student and moves (1 - target_ema) of the way towards it at each loss"
    s = cosine_schedule()
    teacher = GaussianModel(s, torch.zeros(2), torch.eye(2) * 0.1)
    student = TinyV()
    f = ConsistencyDistillation(teacher, s, 4, clip=False, target_ema=0.9)
    x0, g = torch.randn(8, 2), torch.Generator().manual_seed(0)
    f.loss(student, x0, None, f.draw_times(8, g), torch.randn(8, 2, generator=g))
    before = [p.detach().clone() for p in f._target_net.parameters()]
    with torch.no_grad():
        for p in student.parameters(): p.add_(1.0)
    f.loss(student, x0, None, f.draw_times(8, g), torch.randn(8, 2, generator=g))
    for b, p in zip(before, f._target_net.parameters()): assert torch.allclose(p, b + 0.1, atol=1e-6)
    assert ConsistencyDistillation(teacher, s, 4, target_ema=0).target_network(student) is student
    with pytest.raises(ValueError, match='target_ema must be in'): ConsistencyDistillation(teacher, s, 4, target_ema=1.0)
    assert ConsistencyDistillation.from_config(ConsistencyDistillation(None, s, 4, target_ema=0.5).config).target_ema == 0.5

def test_distillation_run_resumes(tmp_path):
    "A progressive distillation run stopped after its first round continues from its checkpoints; the result loads as a student"
    small = dict(channels=(8, 16), attn_levels=(), n_classes=10)
    torch.manual_seed(0)
    teacher = UNet(**small)
    nn.init.normal_(teacher.conv_out.weight, std=0.05)
    tpath = tmp_path/'teacher.pt'
    from diffnb.training import save_checkpoint, model_config
    save_checkpoint(dict(model=teacher.state_dict(), model_config=model_config(teacher), schedule=cosine_schedule().config,
                         data=dict(shape=[1, 28, 28])), tpath)
    data = bundled_mnist('train')
    kw = dict(batch_size=16, lr=1e-3, warmup=2, progress=False, device='cpu')
    straight = progressive_distill(str(tpath), None, data, rounds=(2, 1), steps_per_round=3, out=tmp_path/'a', **kw)
    progressive_distill(str(tpath), None, data, rounds=(2,), steps_per_round=3, out=tmp_path/'b', **kw)       # stopped after round 2
    resumed = progressive_distill(str(tpath), None, data, rounds=(2, 1), steps_per_round=3, out=tmp_path/'b', **kw)
    for k, v in straight.state_dict().items(): assert torch.equal(v, resumed.state_dict()[k]), k
    assert load_checkpoint(tmp_path/'b'/'round1.pt')['formulation']['teacher'] == str(tmp_path/'b'/'round2.pt')
    export_student(resumed, ProgressiveDistillation(str(tpath), cosine_schedule(), 1), tmp_path/'st.pt', data)
    m, s = load_model(tmp_path/'st.pt')
    assert sample(m, s, (2, 1, 28, 28), steps=2, y=torch.arange(2)).shape == (2, 1, 28, 28)

class TinyV(nn.Module):
    "A small MLP predicting v for 2-D points"
    prediction = 'v'
    def __init__(self, h=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + 32, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 2))
    def forward(self, x, t, y=None): return self.net(torch.cat([x, timestep_embedding(t, 32)], 1))

def _fit(f, net, steps, data, lr, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (512,), generator=g)]
        loss = f.loss(net, x0, None, f.draw_times(512, g), torch.randn(512, 2, generator=g)).mean()
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return net

TOY_ROUNDS, TOY_STEPS = (8, 4, 2, 1), 500          # from the teacher's 16-step DDIM; about 30 s on one core
TOY_RMS, TOY_BETWEEN = 0.12, 0.15                  # measured: 0.078 and 9.4%; the teacher's own 2-step DDIM: 0.53 and 93%

def test_one_step_student_reproduces_the_teacher_ode_on_the_ring():
    "Progressive distillation of the exact ring teacher: the 1-step map lands where the teacher's ODE does, point by point and in distribution"
    s = cosine_schedule()
    teacher = GaussianMixtureModel(s, ring_means(8), 0.1)
    ring, _ = gaussian_ring(100_000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)

    class CopyTeacher:                                  # the student's start: an MLP fitted to the teacher's v
        def draw_times(self, n, g): return torch.randint(0, s.T, (n,), generator=g)
        def loss(self, net, x0, y, t, noise):
            a, b = s.sqrt_alpha_bar[t, None], s.sqrt_one_minus_alpha_bar[t, None]
            x = a * x0 + b * noise
            return (net(x, t) - (teacher(x, t) - b * x) / a).pow(2).sum(1)
    student = _fit(CopyTeacher(), TinyV(), 1500, ring, 2e-3, 0)
    current = teacher
    for n in TOY_ROUNDS:
        _fit(ProgressiveDistillation(current, s, n, clip=False), student, TOY_STEPS, ring, 1e-3, n)
        current = copy.deepcopy(student).eval()
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    ode = dpm_solver_sample(teacher, s, (4000, 2), steps=200, x_T=x_T, clip_x0=False)
    one = distilled_sample(student, s, (4000, 2), steps=1, method='progressive', x_T=x_T, clip_x0=False)
    d = torch.cdist(one, ring_means(8))
    share = torch.bincount(d.argmin(1), minlength=8) / 4000
    assert (share - 1 / 8).abs().max() < 0.02                                  # the modes' weights (standard error 0.005)
    assert (one - ode).pow(2).sum(1).mean().sqrt() < TOY_RMS                   # point by point: the ODE's own endpoint
    assert (d.min(1).values > 0.3).float().mean() < TOY_BETWEEN                # few points stranded between modes

def test_fid_regression_of_the_shipped_student():
    """The shipped student's 4-step samples keep their quality against the teacher's 10-step solver.

    FID in the bundled classifier's features against the 500 reference digits of `heldout_halves(0)`, with 200 samples each
    (labels drawn at random, one seed): small enough to run in seconds, so FID is biased upwards and noisier than in the
    benchmark's 500-sample, three-seed protocol. Measured here: student 1.62, teacher 0.87 (1.9x); the benchmark gives
    1.06 +- 0.36 against 0.48 +- 0.15. The bound, 2.5x, fails a student that has lost its distillation: the teacher's own
    DDIM on the 4-step grid scores 5.74 here (6.6x)."""
    from diffnb.evaluation import heldout_halves, load_classifier, features, fid
    from diffnb.pretrained import load_pretrained
    teacher, s = load_pretrained()
    student, s_student = load_student()
    clf = load_classifier()
    ref = features(clf, heldout_halves(0)[0].images)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (200,), generator=g)
    x_teacher = sample(teacher, s, (200, 1, 28, 28), sampler='solver', steps=10, y=y, generator=torch.Generator().manual_seed(1))
    x_student = sample(student, s_student, (200, 1, 28, 28), steps=4, y=y, generator=torch.Generator().manual_seed(1))
    f_teacher, f_student = fid(features(clf, x_teacher), ref), fid(features(clf, x_student), ref)
    assert f_student < 2.5 * f_teacher, (f_student, f_teacher)
