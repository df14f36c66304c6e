"The installed commands, end to end, as a user runs them."
import json, pytest, torch
from pathlib import Path
from conftest import run, bin_path

TRAIN, SAMPLE = bin_path('diffnb_train'), bin_path('diffnb_sample')

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('cli')/'run'
    r = run([TRAIN, '--preset', 'tiny', '--steps', '25', '--samples', '10', '--no-progress', '--device', 'cpu', '--out', str(out)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('done: 25 steps')
    return out

def test_train_outputs(trained):
    summary = json.loads((trained/'summary.json').read_text())
    assert summary['steps'] == 25 and Path(summary['checkpoint']).exists() and (trained/'samples.png').exists()

def test_the_default_formulation_and_the_one_options_name(trained, tmp_path):
    "Flow matching by default; an option that only one formulation has (here --schedule) selects that formulation"
    assert torch.load(trained/'checkpoint.pt')['formulation']['kind'] == 'flow'
    r = run([TRAIN, '--preset', 'tiny', '--steps', '2', '--samples', '0', '--schedule', 'linear', '--no-progress', '--device', 'cpu', '--out', str(tmp_path/'r')])
    assert r.returncode == 0, r.stderr
    f = torch.load(tmp_path/'r'/'checkpoint.pt')['formulation']
    assert f['kind'] == 'ddpm' and f['schedule']['name'] == 'linear'

@pytest.mark.parametrize('extra', [['--sampler', 'ddim', '--steps', '4'], ['--sampler', 'solver', '--steps', '4'],
                                   ['--sampler', 'solver', '--steps', '4', '--spacing', 'trailing'],
                                   ['--sampler', 'ddim', '--steps', '3', '--guidance', '2', '--classes', '3,4']])
def test_sample_from_checkpoint(trained, tmp_path, extra):
    out = tmp_path/'s.png'
    r = run([SAMPLE, '--checkpoint', str(trained/'checkpoint.pt'), '-n', '5', '--no-progress', '--out', str(out), *extra])
    assert r.returncode == 0, r.stderr
    saved = torch.load(out.with_suffix('.pt'))
    assert saved['samples'].shape == (5, 1, 28, 28) and out.exists()

def test_bundled_model_and_inpainting(tmp_path):
    r = run([SAMPLE, '--steps', '5', '-n', '10', '--guidance', '3', '--no-progress', '--out', str(tmp_path/'a.png')])
    assert r.returncode == 0, r.stderr
    r = run([SAMPLE, '--image', 'bundled:7', '--mask', 'bottom', '--steps', '6', '-n', '3', '--resamplings', '2',
             '--no-progress', '--out', str(tmp_path/'b.png')])
    assert r.returncode == 0, r.stderr
    saved = torch.load(tmp_path/'b.pt')
    m = saved['mask']
    assert torch.equal(saved['samples'] * m, saved['known'] * m)

def test_the_distilled_model(tmp_path):
    "diffnb_sample --model mnist-fast: four network calls by default, any of 1, 2, 4 or 8; inpainting is refused in one line"
    for extra, calls in (([], 4), (['--steps', '1'], 1)):
        r = run([SAMPLE, '--model', 'mnist-fast', '-n', '10', '--no-progress', '--out', str(tmp_path/f'f{calls}.png'), *extra])
        assert r.returncode == 0, r.stderr
        assert torch.load(tmp_path/f'f{calls}.pt')['samples'].shape == (10, 1, 28, 28) and '(distilled' in r.stdout
    r = run([SAMPLE, '--model', 'mnist-fast', '--image', 'bundled:7', '-n', '2', '--no-progress', '--out', str(tmp_path/'i.png')])
    assert r.returncode == 2 and "samples only with 'distilled', which cannot inpaint" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run([SAMPLE, '--model', 'mnist-fast', '--sampler', 'ddim', '-n', '2', '--no-progress', '--out', str(tmp_path/'d.png')])
    assert r.returncode == 2 and "samples only with 'distilled', not 'ddim'" in r.stderr

def test_resume_through_the_cli(tmp_path):
    "Exact resumption with dropout, on a folder read through a DataLoader with worker processes, crossing an epoch"
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (tmp_path/'imgs'/c).mkdir(parents=True)
        for i in range(40): Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path/'imgs'/c/f'{i}.png')
    args = ['--preset', 'tiny', '--batch-size', '16', '--samples', '0', '--dropout', '0.1', '--data', str(tmp_path/'imgs'),
            '--size', '16', '--workers', '2', '--no-progress', '--device', 'cpu', '--out']
    out = tmp_path/'r'
    assert run([TRAIN, *args, str(out), '--steps', '4']).returncode == 0
    (out/'.checkpoint.pt.999999999.tmp').write_bytes(b'left by a process killed while saving')
    r = run([TRAIN, *args, str(out), '--steps', '7', '--resume'])           # 5 steps per epoch: the resumed part crosses one
    assert r.returncode == 0 and 'resuming' in r.stdout and '7 steps (3 in this run' in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'loss.png', 'summary.json']
    straight = tmp_path/'s'
    assert run([TRAIN, *args, str(straight), '--steps', '7']).returncode == 0
    a, b = torch.load(out/'checkpoint.pt'), torch.load(straight/'checkpoint.pt')
    for k, v in a['model'].items(): assert torch.equal(v, b['model'][k]), k
    for k, v in a['ema']['model'].items(): assert torch.equal(v, b['ema']['model'][k]), k

@pytest.mark.parametrize('cmd,message', [
    ([SAMPLE, '--checkpoint', 'missing.pt'], 'checkpoint not found'),
    ([SAMPLE, '--classes', '10'], r'--classes must be in [0, 9]'),
    ([SAMPLE, '--classes', 'x'], '--classes must be integers'),
    ([SAMPLE, '--steps', '5000'], 'steps must be an integer in [1, 1000]'),
    ([SAMPLE, '--eta', '-1'], '--eta must be a finite number in [0, 1]'),
    ([SAMPLE, '--image', 'bundled:99999'], 'bundled:INDEX must be in'),
    ([SAMPLE, '--image', 'bundled:1', '--mask', 'nothing.png'], 'mask not found'),
    ([SAMPLE, '--image', 'bundled:1', '--sampler', 'solver'], "sampler 'solver' does not inpaint"),
    ([SAMPLE, '-n', '0'], '--n must be an integer in [1, 10000000]'),
    ([SAMPLE, '--sampler', 'ddpm', '--spacing', 'trailing'], '--spacing applies to the ddim and solver samplers'),
    ([TRAIN, '--steps', '-5'], '--steps must be an integer in [1, 1000000000000]'),
    ([TRAIN, '--data', 'no_such_dataset'], '--data must be'),
])
def test_errors_are_one_line(cmd, message, tmp_path):
    r = run(cmd + ['--no-progress', '--out', str(tmp_path/'x')] if cmd[0] == TRAIN else cmd + ['--no-progress', '--out', str(tmp_path/'x.png')])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

def test_bad_checkpoint_file(tmp_path):
    (tmp_path/'bad.pt').write_bytes(b'not a checkpoint')
    r = run([SAMPLE, '--checkpoint', str(tmp_path/'bad.pt'), '--no-progress'])
    assert r.returncode == 2 and 'not a readable checkpoint' in r.stderr and 'Traceback' not in r.stderr

def test_module_entry_point(tmp_path):
    "python -m diffnb.cli works, also from a folder that holds a clone of the repository (whose setup.py must not run)"
    import sys
    r = run([sys.executable, '-m', 'diffnb.cli', 'sample', '--steps', '2', '-n', '2', '--no-progress', '--out', str(tmp_path/'m.png')])
    assert r.returncode == 0, r.stderr
    assert run([sys.executable, '-m', 'diffnb.cli']).returncode == 2
    (tmp_path/'diffnb'/'diffnb').mkdir(parents=True)
    (tmp_path/'diffnb'/'setup.py').write_text("open(__file__ + '.ran', 'w').write('imported')\nraise SystemExit(7)\n")
    r = run([sys.executable, '-m', 'diffnb.cli', 'sample', '--sampler', 'heun', '--steps', '2', '-n', '2', '--no-progress', '--out', str(tmp_path/'c.png')],
            cwd=tmp_path)
    assert r.returncode == 0 and not (tmp_path/'diffnb'/'setup.py.ran').exists(), r.stderr
