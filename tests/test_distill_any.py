"Distilling flow-matching and EDM models (chapter 13's `ScheduleView`) and the `diffnb_distill` command, from the outside."
import json, shlex, signal, subprocess, time
from pathlib import Path
import pytest, torch
from conftest import bin_path, one_line, run

DISTILL, TRAIN, SAMPLE = bin_path('diffnb_distill'), bin_path('diffnb_train'), bin_path('diffnb_sample')
ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
QUICK = ['--no-progress', '--device', 'cpu']

@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    "A tiny flow-matching and a tiny EDM teacher, trained by diffnb_train for two steps: {'flow': checkpoint, 'edm': checkpoint}"
    w = tmp_path_factory.mktemp('teachers')
    out = {}
    for kind in ('flow', 'edm'):
        r = run([TRAIN, '--preset', 'tiny', '--formulation', kind, '--steps', '2', '--samples', '0', '--log', 'none', *QUICK,
                 '--out', str(w/kind)], env=ENV)
        assert r.returncode == 0, r.stderr[-2000:]
        out[kind] = w/kind/'checkpoint.pt'
    return out

def test_ddim_on_the_view_is_the_teachers_euler_method():
    "Two DDIM steps on a ScheduleView are two Euler steps of the flow ODE at the grid's flow times, and of the EDM ODE in sigma"
    from diffnb.schedules import cosine_schedule
    from diffnb.flow import FlowUNet, FlowPath, flow_sample, flow_time
    from diffnb.edm import EDMPrecond, SigmaSchedule, schedule_sigmas
    from diffnb.distill import schedule_teacher, student_timesteps, ddim_jump, x0_estimate, signal_noise
    s, small = cosine_schedule(), dict(channels=(8, 16), attn_levels=(), n_classes=10, groups=4)
    flow_net, edm_net = FlowUNet(**small).eval(), EDMPrecond(small).eval()
    ts, x, y = student_timesteps(s, 2), torch.randn(3, 1, 28, 28), torch.tensor([1, 4, 7])
    def ddim(view):
        z = x
        for t, t_next in zip(ts, ts[1:] + [-1]):
            tt = torch.full((3,), t)
            z = ddim_jump(z, x0_estimate(view, z, tt, y, s), *signal_noise(s, tt, z), *signal_noise(s, torch.full((3,), t_next), z))
        return z
    with torch.no_grad():
        ab = s.alpha_bar64[ts[0]]
        want = flow_sample(flow_net, (3, 1, 28, 28), times=[flow_time(s.alpha_bar64[t]).item() for t in ts] + [0.0],
                           x_T=(x.double() / (ab.sqrt() + (1 - ab).sqrt())).float(), y=y)
        assert (ddim(schedule_teacher(flow_net, FlowPath())[0]) - want).abs().max() < 1e-4
        sig, z = schedule_sigmas(s)[ts].tolist() + [0.0], x / ab.sqrt().item()
        for a, b in zip(sig, sig[1:]): z = z + (b - a) * (z - edm_net(z, torch.full((3,), a), y)) / a
        assert (ddim(schedule_teacher(edm_net, SigmaSchedule())[0]) - z).abs().max() < 1e-4

def test_a_student_of_a_flow_model_starts_equal_to_its_teacher():
    "The student is a copy of the teacher's view: the same answer before training, and its own weights"
    from diffnb.flow import FlowUNet, FlowPath
    from diffnb.distill import schedule_teacher, student_from_teacher
    view, s = schedule_teacher(FlowUNet(channels=(8, 16), attn_levels=(), groups=4), FlowPath())
    student = student_from_teacher(view)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([900, 100])
    with torch.no_grad(): assert torch.equal(student(x, t), view(x, t))
    assert student.net is not view.net and all(p.requires_grad for p in student.parameters())

def test_distill_a_flow_model_end_to_end(teachers, tmp_path):
    "diffnb_distill on a flow checkpoint: round checkpoints, student.pt that diffnb_sample samples untold, a grid, a summary; --resume of a finished run"
    out = tmp_path/'pd'
    cmd = [DISTILL, str(teachers['flow']), '--rounds', '2,1', '--steps', '3', '--batch-size', '8', '--samples', '6', *QUICK, '--out', str(out)]
    r = run(cmd, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'FlowUNet' in r.stdout and 'done: progressive students' in r.stdout, r.stdout
    assert {p.name for p in out.iterdir()} == {'distill.json', 'round2.pt', 'round1.pt', 'student.pt', 'samples.png', 'summary.json'}
    summary = json.loads((out/'summary.json').read_text())
    assert summary['rounds'] == [2, 1] and summary['sample_steps'] == 1 and summary['teacher'] == str(teachers['flow'].resolve())
    from diffnb.training import load_model
    st, s = load_model(out/'student.pt')
    assert type(st).__name__ == 'DistilledStudents' and type(st.for_steps(2)).__name__ == 'ScheduleView' and s.default_sampler == 'distilled'
    assert torch.load(out/'round1.pt', weights_only=False)['step'] == 3
    r = run([SAMPLE, '--checkpoint', str(out/'student.pt'), '--steps', '2', '-n', '4', *QUICK, '--out', str(tmp_path/'s.png')], env=ENV)
    assert r.returncode == 0 and (tmp_path/'s.png').exists(), r.stderr[-2000:]
    r = run([DISTILL, '--resume', *QUICK, '--out', str(out)], env=ENV)          # nothing left to train: the student again
    assert r.returncode == 0, r.stderr[-2000:]

def test_consistency_distillation_of_an_edm_model(teachers, tmp_path):
    "diffnb_distill --method consistency on an EDM checkpoint: one student that samples in any number of steps of its grid"
    out = tmp_path/'cd'
    r = run([DISTILL, str(teachers['edm']), '--method', 'consistency', '--intervals', '4', '--steps', '3', '--batch-size', '8', '--samples', '4',
             *QUICK, '--out', str(out)], env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    from diffnb.training import load_model
    from diffnb.sampling import sample
    st, s = load_model(out/'student.pt')
    assert type(st).__name__ == 'ScheduleView' and type(st.net).__name__ == 'EDMPrecond' and s.method == 'consistency'
    for n in (1, 3): assert torch.isfinite(sample(st, s, (2, 1, 28, 28), steps=n, y=torch.tensor([0, 1]))).all()

@pytest.mark.parametrize('extra, says', [
    (['--rounds', '8,3'], 'each half the one before'),
    (['--intervals', '8'], '--intervals applies to --method consistency'),
    (['--lr', '0'], '--lr must be'),
    (['--steps', '0'], '--steps must be'),
])
def test_bad_options_are_refused_before_any_work(teachers, tmp_path, extra, says):
    one_line(run([DISTILL, str(teachers['flow']), *extra, *QUICK, '--out', str(tmp_path/'x')], env=ENV), says)
    assert not (tmp_path/'x').exists()

def test_refusals(teachers, tmp_path):
    "No teacher, a teacher that is not there, a student as teacher, a folder holding a run, a resume that changes the run"
    one_line(run([DISTILL, *QUICK, '--out', str(tmp_path/'a')], env=ENV), 'name the teacher to distil')
    one_line(run([DISTILL, str(tmp_path/'none.pt'), *QUICK, '--out', str(tmp_path/'a')], env=ENV), 'does not exist')
    out = tmp_path/'pd'
    r = run([DISTILL, str(teachers['flow']), '--rounds', '1', '--steps', '1', '--batch-size', '4', '--samples', '0', *QUICK, '--out', str(out)], env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    one_line(run([DISTILL, str(out/'student.pt'), *QUICK, '--out', str(tmp_path/'b')], env=ENV), 'a distilled student already')
    one_line(run([DISTILL, str(teachers['flow']), '--rounds', '1', *QUICK, '--out', str(out)], env=ENV), 'already holds a run')
    one_line(run([DISTILL, '--resume', '--lr', '1e-3', *QUICK, '--out', str(out)], env=ENV), '--lr 0.001 (the run: 0.0003)')
    one_line(run([DISTILL, str(teachers['edm']), '--resume', *QUICK, '--out', str(out)], env=ENV), 'holds another run')

def test_ctrl_c_saves_and_says_how_to_go_on(teachers, tmp_path):
    "Ctrl-C during a round: status 130, one line naming the saved step and the command that continues; that command finishes the run"
    out = tmp_path/'pd'
    cmd = [DISTILL, str(teachers['flow']), '--rounds', '2,1', '--steps', '40', '--batch-size', '8', '--samples', '0', '--ckpt-every', '1',
           *QUICK, '--out', str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**__import__('os').environ, **ENV},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out/'round2.pt').exists() and p.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    line = one_line(subprocess.CompletedProcess(cmd, p.returncode, '', err), 'training stopped after a finished step', status=130)
    assert 'continue with: diffnb_distill' in line and '--resume' in line, line
    assert not (out/'student.pt.lock').exists() and not (out/'student.pt').exists()
    again = shlex.split(line.split('continue with: ')[1])
    r = run([DISTILL, *again[1:]], env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(out/'round1.pt', weights_only=False)['step'] == 40 and (out/'student.pt').exists()

def test_ctrl_c_in_the_first_second(teachers, tmp_path):
    "Ctrl-C while the command starts (importing PyTorch): status 130 and one line, no traceback, no run left behind"
    p = subprocess.Popen([DISTILL, str(teachers['flow']), '--steps', '5', *QUICK, '--out', str(tmp_path/'pd')], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**__import__('os').environ, **ENV},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.4); p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    one_line(subprocess.CompletedProcess(p.args, p.returncode, '', err), 'interrupted', status=130)
    assert not (tmp_path/'pd'/'student.pt').exists() and not (tmp_path/'pd'/'student.pt.lock').exists()
