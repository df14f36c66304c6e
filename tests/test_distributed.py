"Data-parallel training: a two-process Gloo run on the CPU under torchrun."
import sys
from pathlib import Path
import pytest, torch
from conftest import run

WORKER = str(Path(__file__).parent/'ddp_worker.py')
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    two, one = tmp_path_factory.mktemp('ddp2'), tmp_path_factory.mktemp('ddp1')
    r = run(TORCHRUN + [WORKER, str(two)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([sys.executable, WORKER, str(one)], timeout=120)
    assert r.returncode == 0, r.stderr
    return two, one

def test_both_ranks_end_identical(runs):
    two, _ = runs
    r0, r1 = torch.load(two/'rank0.weights'), torch.load(two/'rank1.weights')
    assert r0['world'] == 2
    for k in r0['model']: assert torch.equal(r0['model'][k], r1['model'][k]), k
    for k in r0['ema']: assert torch.equal(r0['ema'][k], r1['ema'][k]), k

def test_matches_one_process_over_the_same_global_batches(runs):
    two, one = runs
    a, b = torch.load(two/'rank0.weights'), torch.load(one/'rank0.weights')
    assert b['world'] == 1
    # the loss of every step is the mean over the same 32 images with the same noise and timesteps
    assert a['losses'] == pytest.approx(b['losses'], rel=1e-4)
    # the gradient of the first step (averaged over the processes, then clipped) is the one-process gradient
    for k in a['grads']: torch.testing.assert_close(a['grads'][k], b['grads'][k], rtol=1e-4, atol=1e-6)
    # the all-reduce sums gradients in another order than one process does; Adam's first steps move every weight by
    # about lr * sign(gradient), so a coordinate whose gradient is nearly zero can go either way: compare loosely
    for k in a['model']:
        assert (a['model'][k] - b['model'][k]).norm() <= 0.02 * b['model'][k].norm() + 1e-4, k

def test_only_rank_zero_writes_checkpoints(runs):
    two, _ = runs
    assert sorted(p.name for p in two.iterdir()) == ['checkpoint.pt', 'rank0.weights', 'rank1.weights']
    assert torch.load(two/'checkpoint.pt')['step'] == 6

def test_the_documented_command(tmp_path):
    out = tmp_path/'cli'
    r = run(TORCHRUN + ['-m', 'diffnb.cli', 'train', '--preset', 'tiny', '--steps', '3', '--batch-size', '16', '--samples', '0',
                        '--no-progress', '--device', 'cpu', '--out', str(out)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count('done: 3 steps') == 1
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'loss.png', 'summary.json']
