"""The installed commands under bad input and faults: each case runs `diffnb_train` or `diffnb_sample` in a subprocess
and checks the exit status, that stderr is one line without a traceback, and what was (not) written.

The simple cases run concurrently in one fixture (each is mostly the start-up of a Python process); the tests
then check their results one by one. The CLI chapter's table of failure modes points to these tests."""
import hashlib, os, resource, shlex, shutil, signal, socket, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from conftest import bin_path, one_line, run as _run

TRAIN, SAMPLE = bin_path('diffnb_train'), bin_path('diffnb_sample')
BUNDLED_DIGITS = Path(__import__('diffnb.data').data.__file__).parent/'assets'/'mnist_subset.npz'
ONE_THREAD = {'OMP_NUM_THREADS': '1'}
ENV = {**os.environ, 'PYTHONUNBUFFERED': '1', **ONE_THREAD}
QUICK = ['--no-progress', '--device', 'cpu']

def run(args, env=ONE_THREAD, **kw):
    "Run a command (one thread for PyTorch), return the CompletedProcess (text)"
    return _run(args, env=env, **kw)

def limits(fsize=None, data=None):
    "A preexec_fn that caps the size of any file written (a full disk) or the memory (out of memory)"
    def f():
        if fsize:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the cap fails with EFBIG instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if data: resource.setrlimit(resource.RLIMIT_DATA, (data, data))
    return f

def write_folder(path, n=12, size=20, bad=()):
    "Two classes of n random RGB images; the indices in `bad` (of class b) are cut short"
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (path/c).mkdir(parents=True, exist_ok=True)
        for i in range(n): Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path/c/f'{i:02d}.png')
    for i in bad: (path/'b'/f'{i:02d}.png').write_bytes((path/'b'/f'{i:02d}.png').read_bytes()[:200])
    return path

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A tiny trained run (6 steps), an unconditional copy, damaged and hostile checkpoints, images and folders"
    w = tmp_path_factory.mktemp('faults')
    r = run([TRAIN, '--preset', 'tiny', '--formulation', 'ddpm', '--steps', '6', '--samples', '0', *QUICK, '--out', str(w/'run')])
    assert r.returncode == 0, r.stderr
    ck = torch.load(w/'run'/'checkpoint.pt')
    def variant(name, **change):
        c = {**ck, **change}; torch.save(c, w/name); return w/name
    cfg = ck['model_config']['config']
    uncond = {k: v for k, v in ck['ema']['model'].items() if not k.startswith('class_emb')}
    variant('uncond.pt', model_config={**ck['model_config'], 'config': {**cfg, 'n_classes': None}}, ema={**ck['ema'], 'model': uncond},
            model={k: v for k, v in ck['model'].items() if not k.startswith('class_emb')})
    variant('mismatch.pt', model_config={**ck['model_config'], 'config': {**cfg, 'channels': [8, 16, 32]}})
    variant('huge.pt', model_config={**ck['model_config'], 'config': {**cfg, 'channels': [40000] * 3}})
    variant('hugeT.pt', formulation={**ck['formulation'], 'schedule': {**ck['formulation']['schedule'], 'T': 4_000_000_000}})
    nan = {k: v.clone() for k, v in ck['ema']['model'].items()}; nan['conv_out.weight'][:] = float('nan')
    variant('nan.pt', ema={**ck['ema'], 'model': nan})
    torch.save({'format': 'diffnb-checkpoint', 'foo': 1}, w/'wrongkeys.pt')
    (w/'nohparams').mkdir(); torch.save({k: v for k, v in ck.items() if k != 'hparams'}, w/'nohparams'/'checkpoint.pt')
    Image.fromarray(np.full((28, 28), 40000, dtype=np.uint16)).save(w/'deep.png')               # 16-bit grey
    write_folder(w/'imgs')
    (w/'cut.png').write_bytes((w/'imgs'/'a'/'00.png').read_bytes()[:200])
    write_folder(w/'badfirst', n=3); (w/'badfirst'/'a'/'00.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    (w/'afile').write_text('a file, not a folder')
    for copy in ('run_b', 'run_p'): shutil.copytree(w/'run', w/copy)     # cases that lock a run each get their own
    (w/'exists.png').write_bytes(b'an older grid')
    os.mkfifo(w/'fifo')                                                 # not a regular file, like /dev/null (never replaced)
    for f in ('flow', 'edm'):                                           # a run of each other formulation, 2 steps
        r = run([TRAIN, '--preset', 'tiny', '--formulation', f, '--steps', '2', '--samples', '0', *QUICK, '--out', str(w/f)])
        assert r.returncode == 0, r.stderr
    return w

def case_table(w):
    "id -> (command, what stderr must say); every command fails with status 2 and one line"
    ck, img = str(w/'run'/'checkpoint.pt'), str(w/'imgs')
    T = [TRAIN, '--preset', 'tiny', '--samples', '0', *QUICK]
    S = [SAMPLE, '--no-progress', '--steps', '2', '-n', '2']
    cases = {
        # numbers: finite and in range, checked before any work (item 6, 10)
        'minutes-nan': ([TRAIN, '--minutes', 'nan'], '--minutes must be a finite number in (0, 100000000], got nan'),
        'epochs-inf': ([TRAIN, '--epochs', 'inf'], '--epochs must be a finite number in (0, 1000000000], got inf'),
        'steps-0': ([TRAIN, '--steps', '0'], '--steps must be an integer in [1, 1000000000000]'),
        'samples-negative': ([TRAIN, '--samples', '-5'], '--samples must be an integer in [0, 100000]'),
        'lr-nan': ([TRAIN, '--lr', 'nan'], '--lr must be a finite number in (0, 10]'),
        'label-dropout-2': ([TRAIN, '--label-dropout', '2'], '--label-dropout must be a finite number in [0, 1]'),
        'ema-1': ([TRAIN, '--ema', '1'], '--ema must be below 1'),
        'T-1': ([TRAIN, '--T', '1'], '--T must be an integer in [2, 100000]'),
        'options-of-two-formulations': ([TRAIN, '--schedule', 'linear', '--time-sampling', 'logit-normal'], '--schedule applies to another formulation than --formulation flow'),
        'size-0': ([TRAIN, '--data', img, '--size', '0'], '--size must be an integer in [1, 4096]'),
        'guidance-inf': ([SAMPLE, '--guidance', 'inf'], '--guidance must be a finite number in [0, 100]'),
        'guidance-negative': ([SAMPLE, '--guidance', '-2'], '--guidance must be a finite number in [0, 100]'),
        'guidance-1e30': ([SAMPLE, '--guidance', '1e30'], '--guidance must be a finite number in [0, 100], got 1e+30'),
        'eta-1e308': ([SAMPLE, '--eta', '1e308'], '--eta must be a finite number in [0, 1], got 1e+308'),
        'data-empty': ([TRAIN, '--data', ''], '--data is empty'),
        'steps-flow-1e8': ([*S[:-4], '-n', '1', '--steps', '100000000', '--checkpoint', str(w/'flow'/'checkpoint.pt'), '--out', str(w/'o12.png')],
                           '--steps must be an integer in [1, 1000], got 100000000'),
        'sampler-of-another-formulation': ([*S, '--sampler', 'flow-euler', '--checkpoint', str(w/'edm'/'checkpoint.pt'), '--out', str(w/'o13.png')],
                                           '--sampler flow-euler cannot sample this checkpoint (an EDM model); it samples with --sampler'),
        'sampler-heun-for-flow': ([*S, '--sampler', 'heun', '--checkpoint', str(w/'flow'/'checkpoint.pt'), '--out', str(w/'o14.png')],
                                  '--sampler heun cannot sample this checkpoint (a flow-matching model)'),
        'scale-0': ([SAMPLE, '--scale', '0'], '--scale must be an integer in [1, 64]'),
        'batch-size-0': ([SAMPLE, '--batch-size', '0'], '--batch-size must be an integer in [1, 65536]'),
        # options that would be ignored (item 10)
        'size-bundled': ([TRAIN, '--size', '32'], '--size do(es) not apply to --data bundled'),
        'channels-bundled': ([TRAIN, '--channels', '1'], '--channels do(es) not apply to --data bundled'),
        'root-folder': ([TRAIN, '--data', img, '--root', 'x'], '--root do(es) not apply'),
        'label-dropout-unconditional': ([TRAIN, '--unconditional', '--label-dropout', '0.2'], '--label-dropout applies to class-conditional models'),
        'mask-without-image': ([SAMPLE, '--mask', 'top'], '--mask need(s) --image'),
        'resamplings-without-image': ([SAMPLE, '--resamplings', '2'], '--resamplings need(s) --image'),
        'eta-solver': ([SAMPLE, '--sampler', 'solver', '--eta', '0.5'], '--eta applies to the ddim sampler'),
        'model-and-checkpoint': ([SAMPLE, '--checkpoint', ck, '--model', 'mnist'], '--model names a bundled model'),
        'raw-bundled': ([SAMPLE, '--raw'], '--raw needs --checkpoint'),
        'classes-unconditional': ([*S, '--checkpoint', str(w/'uncond.pt'), '--classes', '3', '--out', str(w/'o1.png')], '--classes needs a class-conditional model'),
        # outputs: never an input, never a silent replacement, checked before the work (items 1, 8, 9)
        'out-next-to-checkpoint': ([SAMPLE, '--checkpoint', ck, '--out', str(w/'run'/'checkpoint.png')], 'is the checkpoint: an input is never written over'),
        'tensors-is-image': ([SAMPLE, '--image', str(w/'deep.png'), '--tensors', str(w/'deep.png')], 'is the image: an input is never written over'),
        'out-exists': ([SAMPLE, '--out', str(w/'exists.png')], 'exists: pass --force to replace it'),
        'force-device': ([*S, '--tensors', str(w/'fifo'), '--force', '--out', str(w/'o15.png')], f"--tensors {w/'fifo'} is not a regular file"),
        'force-bundled-data': ([*S, '--image', 'bundled:3', '--tensors', str(BUNDLED_DIGITS), '--force', '--out', str(w/'o16.png')],
                               'is inside the installed diffnb package'),
        'out-is-tensors': ([SAMPLE, '--out', str(w/'same.png'), '--tensors', str(w/'same.png')], 'are the same file'),
        'out-under-file-sample': ([SAMPLE, '--out', str(w/'afile'/'s.png')], 'is a file, not a folder'),
        'out-extension': ([*S, '--out', str(w/'s.xyz')], 'use an image extension such as .png'),
        'out-under-file-train': ([TRAIN, '--out', str(w/'afile'/'run')], 'is a file, not a folder'),
        'out-is-file-train': ([TRAIN, '--out', str(w/'afile')], 'is a file, not a folder'),
        'out-inside-data': ([TRAIN, '--data', img, '--out', str(w/'imgs'/'run')], 'is inside the image folder'),
        'out-holds-run': ([*T, '--steps', '2', '--out', str(w/'run')], 'already holds a run'),
        # inputs: missing, damaged, hostile (item 9, 12)
        'checkpoint-missing': ([SAMPLE, '--checkpoint', str(w/'none.pt')], 'checkpoint not found'),
        'data-missing': ([TRAIN, '--data', str(w/'none')], '--data must be'),
        'image-corrupt': ([*S, '--image', str(w/'cut.png'), '--out', str(w/'o2.png')], f"cannot read the image {w/'cut.png'}"),
        'mask-corrupt': ([*S, '--image', 'bundled:1', '--mask', str(w/'cut.png'), '--out', str(w/'o3.png')], f"cannot read the image {w/'cut.png'}"),
        'folder-first-image-corrupt': ([*T, '--steps', '2', '--data', str(w/'badfirst'), '--out', str(w/'r1')], f"cannot read the image {w/'badfirst'/'a'/'00.png'}"),
        'checkpoint-wrong-keys': ([*S, '--checkpoint', str(w/'wrongkeys.pt'), '--out', str(w/'o4.png')], 'holds no model'),
        'checkpoint-config-mismatch': ([*S, '--checkpoint', str(w/'mismatch.pt'), '--out', str(w/'o5.png')], 'the stored weights do not fit the stored configuration'),
        'checkpoint-40000-channels': ([*S, '--checkpoint', str(w/'huge.pt'), '--out', str(w/'o6.png')], 'asks for more than 1,000,000,000 parameters'),
        'checkpoint-T-4e9': ([*S, '--checkpoint', str(w/'hugeT.pt'), '--out', str(w/'o7.png')], 'asks for T=4000000000 diffusion steps'),
        'checkpoint-nan-weights': ([*S, '--checkpoint', str(w/'nan.pt'), '--out', str(w/'o8.png')], 'the weights hold NaN or inf'),
        'resume-no-hparams': ([*T, '--resume', '--steps', '8', '--out', str(w/'nohparams')], 'cannot be resumed: it holds no hparams'),
        'resume-batch-size': ([*T, '--resume', '--batch-size', '16', '--steps', '8', '--out', str(w/'run_b')], '--batch-size 16 (the run: 64)'),
        'resume-preset': ([TRAIN, '--resume', '--preset', 'digits', '--steps', '8', *QUICK, '--out', str(w/'run_p')], '--preset digits (the run has another network'),
        # the machine
        'device-unknown': ([*S, '--device', 'tpu', '--out', str(w/'o10.png')], '--device must be cpu, cuda, cuda:N or mps'),
        'device-cuda': ([*S, '--device', 'cuda:99', '--out', str(w/'o11.png')], '--device cuda:99'),
        'device-mps': ([*T, '--steps', '2', '--device', 'mps', '--out', str(w/'r2')], '--device mps'),
    }
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available(): del cases['device-mps']
    return cases

@pytest.fixture(scope='module')
def results(work):
    "Run every case of the table, a few at a time"
    table = case_table(work)
    def one(c):                        # a case that hangs (say, days of sampling steps) fails instead of stopping the tests
        try: return subprocess.run(c[0], capture_output=True, text=True, env=ENV, cwd=work, timeout=600)
        except subprocess.TimeoutExpired as e: return subprocess.CompletedProcess(c[0], None, '', f'timed out after {e.timeout} s')
    digest = hashlib.sha256(BUNDLED_DIGITS.read_bytes()).hexdigest()
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as ex:
        done = dict(zip(table, ex.map(one, table.values())))
    assert hashlib.sha256(BUNDLED_DIGITS.read_bytes()).hexdigest() == digest, 'the bundled digits were written over'
    return table, done

CASE_IDS = list(case_table(Path('/nonexistent')))

@pytest.mark.parametrize('case', CASE_IDS)
def test_one_line_error(case, results, work):
    table, done = results
    one_line(done[case], table[case][1])

def test_nothing_written_by_refused_commands(results, work):
    "Refused commands wrote nothing: the checkpoint is intact, the existing grid untouched, no new output or folder"
    for run_dir in ('run', 'run_b', 'run_p'):
        ck = torch.load(work/run_dir/'checkpoint.pt')
        assert ck['step'] == 6 and ck['hparams']['batch_size'] == 64
    assert (work/'exists.png').read_bytes() == b'an older grid'
    assert not any((work/f'o{i}.png').exists() or (work/f'o{i}.pt').exists() for i in range(1, 17)) and not (work/'s.xyz').exists()
    assert (work/'fifo').is_fifo()
    assert not (work/'r1').exists() and not (work/'r2').exists() and not (work/'imgs'/'run').exists()
    assert not list(work.rglob('*.tmp')) and not list(work.rglob('*.lock'))

def test_sixteen_bit_image(work, tmp_path):
    "A 16-bit PNG is scaled to [-1, 1], not clipped to white"
    r = run([SAMPLE, '--image', str(work/'deep.png'), '--mask', 'top', '-n', '1', '--steps', '2', '--resamplings', '1',
             '--no-progress', '--out', str(tmp_path/'g.png')])
    assert r.returncode == 0, r.stderr
    known = torch.load(tmp_path/'g.pt')['known']
    assert torch.allclose(known, torch.full_like(known, 40000 / 65535 * 2 - 1), atol=1e-4)

def test_batches_progress_force_and_stale_temps(work, tmp_path):
    "-n 7 in batches of 3: the bar counts images; --force replaces an output; temps of dead writers go; batch 0 = one call"
    (tmp_path/'s.png').write_bytes(b'old'); (tmp_path/'.s.png.999999999.tmp').write_bytes(b'x'); (tmp_path/'.s.pt.999999999.tmp').write_bytes(b'x')
    ck = str(work/'run'/'checkpoint.pt')
    r = run([SAMPLE, '--checkpoint', ck, '-n', '7', '--batch-size', '3', '--steps', '2', '--force', '--out', str(tmp_path/'s.png')])
    assert r.returncode == 0, r.stderr
    assert '7/7' in r.stderr and 'img' in r.stderr and 'Traceback' not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['s.png', 's.pt']
    Image.open(tmp_path/'s.png').verify()
    batched = torch.load(tmp_path/'s.pt')['samples']
    r = run([SAMPLE, '--checkpoint', ck, '-n', '3', '--steps', '2', '--no-progress', '--out', str(tmp_path/'one.png')])
    assert r.returncode == 0, r.stderr
    assert batched.shape == (7, 1, 28, 28) and torch.equal(torch.load(tmp_path/'one.pt')['samples'], batched[:3])

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_DATA bounds memory this way on Linux')
def test_memory_is_bounded_by_the_batch(work, tmp_path):
    "With memory capped, 1,000 images in batches of 50 fit; in one batch they run out of memory, with a one-line hint"
    cap = limits(data=1200 << 20)
    base = [SAMPLE, '-n', '1000', '--steps', '1', '--no-progress']
    r = run([*base, '--batch-size', '1000', '--out', str(tmp_path/'a.png')], preexec_fn=cap)
    one_line(r, 'out of memory')
    assert 'use a smaller --batch-size' in r.stderr and not (tmp_path/'a.png').exists()
    r = run([*base, '--batch-size', '50', '--out', str(tmp_path/'b.png')], preexec_fn=cap)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'b.pt')['samples'].shape == (1000, 1, 28, 28)

def test_full_disk_while_sampling(work, tmp_path):
    "A write that fails (the file-size cap stands in for a full disk) leaves no grid, no tensors and no temporary file"
    (tmp_path/'keep.png').write_bytes(b'old')
    r = run([SAMPLE, '-n', '10', '--steps', '2', '--no-progress', '--force', '--out', str(tmp_path/'keep.png')], preexec_fn=limits(fsize=1000))
    one_line(r, f"cannot write {tmp_path/'keep.pt'}")                       # the raw samples are written first
    assert sorted(p.name for p in tmp_path.iterdir()) == ['keep.png'] and (tmp_path/'keep.png').read_bytes() == b'old'

def test_samples_saved_when_the_grid_fails(work, tmp_path):
    "The raw samples are written before the grid: a grid that cannot be written (a huge JPEG past the cap) loses no sample"
    r = run([SAMPLE, '-n', '10', '--steps', '2', '--scale', '64', '--no-progress', '--out', str(tmp_path/'g.jpg')], preexec_fn=limits(fsize=100_000))
    line = one_line(r, f"the grid {tmp_path/'g.jpg'} was not written")
    assert f"the 10 samples are saved in {tmp_path/'g.pt'}" in line
    assert torch.load(tmp_path/'g.pt')['samples'].shape == (10, 1, 28, 28)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['g.pt']

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_DATA bounds memory this way on Linux')
def test_one_image_too_large(work, tmp_path):
    "A stored 4096x4096 image shape that does not fit at batch size 1: the message names the shape, not the batch size"
    ck = torch.load(work/'run'/'checkpoint.pt')
    torch.save({**ck, 'data': {**ck['data'], 'shape': [1, 4096, 4096]}}, tmp_path/'big.pt')
    r = run([SAMPLE, '--checkpoint', str(tmp_path/'big.pt'), '-n', '1', '--steps', '1', '--no-progress', '--out', str(tmp_path/'b.png')],
            preexec_fn=limits(data=1200 << 20))
    line = one_line(r, 'out of memory')
    assert '1x4096x4096' in line and 'a smaller --batch-size cannot help' in line and 'use a smaller' not in line

def test_full_disk_at_the_first_save(work, tmp_path):
    "A really full disk (a 3 MB tmpfs) at the first save of the digits model: one line naming it; nothing left behind"
    disk = tmp_path/'disk'; disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)], capture_output=True).returncode != 0:
        pytest.skip('mounting a small tmpfs needs root')
    try:
        r = run([TRAIN, '--steps', '1', '--samples', '0', *QUICK, '--out', str(disk/'run')])
        line = one_line(r, 'No space left on device')
        assert 'no checkpoint was saved' in line and not (disk/'run').exists()
    finally: subprocess.run(['umount', str(disk)])

def default_sigint():
    "In a child about to receive Ctrl-C: SIGINT as a terminal gives it (a job started in the background inherits it ignored)"
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def ignored_signals(pid)->str:
    "The child's mask of ignored signals, for a failure's message"
    try: return next(l for l in Path(f'/proc/{pid}/status').read_text().splitlines() if l.startswith('SigIgn'))
    except (OSError, StopIteration): return 'SigIgn: unknown'

@pytest.mark.parametrize('delay', [1.2, 1.6])    # after the interpreter's own start-up, which no program can catch (cold caches: ~1 s)
def test_ctrl_c_in_the_first_second(work, tmp_path, delay):
    "Ctrl-C while the options are still being parsed (the --preset name imports PyTorch): 130 and one line, no traceback"
    p = subprocess.Popen([TRAIN, '--preset', 'tiny', '--steps', '5', '--samples', '0', *QUICK, '--out', str(tmp_path/'run')],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=default_sigint)
    time.sleep(delay); ign = ignored_signals(p.pid); p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, ign, out[-500:], err[-1000:])
    one_line(subprocess.CompletedProcess(p.args, p.returncode, '', err), 'interrupted', status=130)
    assert not (tmp_path/'run'/'checkpoint.pt').exists() or torch.load(tmp_path/'run'/'checkpoint.pt')['step'] >= 1

def test_full_disk_while_checkpointing(work, tmp_path):
    "The checkpoint cannot be written: one line, and the checkpoint on disk still loads, at its step"
    shutil.copytree(work/'run', tmp_path/'run')
    r = run([TRAIN, '--resume', '--steps', '8', '--samples', '0', *QUICK, '--out', str(tmp_path/'run')], preexec_fn=limits(fsize=200_000))
    one_line(r, 'while saving the checkpoint; the checkpoint on disk is unchanged (step 6)')
    assert torch.load(tmp_path/'run'/'checkpoint.pt')['step'] == 6
    assert not list((tmp_path/'run').glob('.*.tmp')) and not (tmp_path/'run'/'checkpoint.pt.lock').exists()

def test_resume_may_change_the_learning_rate(work, tmp_path):
    "A resume with a lower --lr (and the run's own batch size and seed, which are fine) trains on and records the change"
    shutil.copytree(work/'run', tmp_path/'run')
    r = run([TRAIN, '--resume', '--lr', '1e-4', '--batch-size', '64', '--seed', '0', '--preset', 'tiny', '--steps', '8', '--samples', '0', *QUICK,
             '--out', str(tmp_path/'run')])
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path/'run'/'checkpoint.pt')
    assert ck['step'] == 8 and ck['hparams']['lr'] == 1e-4 and ck['changes'] == [[6, {'lr': 1e-4}]]

def test_a_damaged_image_during_training(work, tmp_path):
    "A file cut short, met by a DataLoader worker at some step: one line naming it; the finished steps are saved"
    folder = write_folder(tmp_path/'imgs', bad=(5,))
    r = run([TRAIN, '--preset', 'tiny', '--batch-size', '8', '--steps', '20', '--samples', '0', '--workers', '2', '--data', str(folder),
             '--size', '16', *QUICK, '--out', str(tmp_path/'run')])
    line = one_line(r, f"cannot read the image {folder/'b'/'05.png'}")
    assert 'is saved in' in line and 'continue with: diffnb_train' in line and '--resume' in line
    step = int(line.split('failed at step ')[1].split()[0])
    assert torch.load(tmp_path/'run'/'checkpoint.pt')['step'] == step

def long_training(out):
    "A training run that goes on until stopped, a few steps in: (command, process)"
    cmd = [TRAIN, '--preset', 'tiny', '--steps', '100000', '--ckpt-every', '100000', '--samples', '0', *QUICK, '--out', str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=default_sigint)
    assert p.stdout.readline().startswith('training a'), p.stderr.read()
    time.sleep(2)                                                  # a few steps
    return cmd, p

def test_two_trainers_and_ctrl_c(work, tmp_path):
    "A second trainer on a folder in use is refused; Ctrl-C saves the finished step and prints the command that continues"
    out = tmp_path/'run'
    cmd, first = long_training(out)
    try:
        one_line(run(cmd, env=ENV), 'is being written by another run')
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None: first.kill()
    line = one_line(subprocess.CompletedProcess(cmd, first.returncode, '', err), 'SIGINT: training stopped after a finished step', status=130)
    step = torch.load(out/'checkpoint.pt')['step']
    assert f'step {step} is saved in {out/"checkpoint.pt"}' in line and not (out/'checkpoint.pt.lock').exists()
    again = shlex.split(line.split('continue with: ')[1]) + ['--steps', str(step + 2)]   # the suggested command, two steps further
    r = run([TRAIN, *again[1:]])
    assert r.returncode == 0 and f'resuming {out/"checkpoint.pt"} at step {step}' in r.stdout, r.stdout + r.stderr
    assert torch.load(out/'checkpoint.pt')['step'] == step + 2

@pytest.mark.parametrize('sig', ['SIGTERM', 'SIGHUP'])
def test_signal_while_sampling(work, tmp_path, sig):
    "SIGTERM (a scheduler's stop) or SIGHUP (a closed terminal) while sampling: status 130, one line, no file or temporary file written"
    p = subprocess.Popen([SAMPLE, '-n', '2000', '--batch-size', '20', '--steps', '20', '--no-progress', '--out', str(tmp_path/'s.png')],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(6); p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    one_line(subprocess.CompletedProcess(p.args, p.returncode, '', err), f'interrupted: {sig}', status=130)
    assert list(tmp_path.iterdir()) == []

def test_sighup_while_training(work, tmp_path):
    "A hang-up (closed terminal, dropped SSH session) stops training like Ctrl-C: the finished step is saved, status 130"
    out = tmp_path/'run'
    cmd, p = long_training(out)
    try:
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    line = one_line(subprocess.CompletedProcess(cmd, p.returncode, '', err), 'SIGHUP: training stopped after a finished step', status=130)
    step = torch.load(out/'checkpoint.pt')['step']
    assert step > 0 and f'step {step} is saved in {out/"checkpoint.pt"}' in line

def silent_server():
    "A socket that accepts connections and never answers"
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
    return s

@pytest.mark.parametrize('server', ['silent', 'refusing'])
def test_download_without_internet(work, tmp_path, server):
    "The download goes through a proxy that never answers (or refuses): a one-line error within the timeout, no hang"
    s = silent_server()
    port = s.getsockname()[1]
    if server == 'refusing': s.close()
    env = {**ENV, 'https_proxy': f'http://127.0.0.1:{port}', 'http_proxy': f'http://127.0.0.1:{port}', 'no_proxy': '', 'NO_PROXY': ''}
    try:
        r = run([TRAIN, '--data', 'mnist', '--root', str(tmp_path/'data'), '--download-timeout', '1', '--preset', 'tiny', '--steps', '1',
                 '--samples', '0', *QUICK, '--out', str(tmp_path/'run')], env=env, timeout=300)   # a hang fails here
        one_line(r, 'could not download mnist')
        assert 'without internet' in r.stderr
        if server == 'silent': assert 'no answer within 1 s' in r.stderr
    finally: s.close()

def test_ctrl_c_again_and_again(work, tmp_path):
    "Ctrl-C pressed again and again (the second one stops at once): 130, one line; no temporary or lock file; a checkpoint on disk loads"
    out = tmp_path/'run'
    p = subprocess.Popen([TRAIN, '--preset', 'tiny', '--batch-size', '1024', '--steps', '100000', '--ckpt-every', '1', '--samples', '0', *QUICK,
                          '--out', str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=default_sigint)
    try:
        assert p.stdout.readline().startswith('training a'), p.stderr.read()
        time.sleep(3)
        for _ in range(100):
            if p.poll() is not None: break
            p.send_signal(signal.SIGINT); time.sleep(0.2)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    one_line(subprocess.CompletedProcess(p.args, p.returncode, '', err), 'interrupted', status=130)
    assert not list(tmp_path.rglob('.*.tmp')) and not list(tmp_path.rglob('*.lock'))
    if (out/'checkpoint.pt').exists(): assert torch.load(out/'checkpoint.pt')['step'] >= 1

def test_api_stops_at_the_first_non_finite_value():
    "From Python: a model that returns NaN stops the sampler at that step; a NaN in the image to inpaint is refused"
    from diffnb.schedules import cosine_schedule
    from diffnb.sampling import sample
    s = cosine_schedule(T=100)
    calls = []
    def model(x, t, y=None):
        calls.append(int(t[0]))
        return torch.full_like(x, float('nan')) if len(calls) == 3 else torch.zeros_like(x)
    with pytest.raises(FloatingPointError, match='non-finite'): sample(model, s, (2, 1, 8, 8), steps=10)
    assert len(calls) == 3
    known, mask = torch.zeros(2, 1, 8, 8), torch.ones(1, 1, 8, 8)
    known[0, 0, 3, 3] = float('nan')
    with pytest.raises(ValueError, match='known must be finite'): sample(lambda x, t, y=None: torch.zeros_like(x), s, known=known, mask=mask, steps=5)
