"`diffnb_train --latent` (chapter 12d's latent models from the command line), then `diffnb_sample` and `diffnb_eval` on its checkpoint."
import io, shutil
from contextlib import redirect_stdout, redirect_stderr
import numpy as np, pytest, torch
from PIL import Image
from conftest import run, bin_path
from diffnb.cli import train_parser, train, sample_parser, sample_cmd, run_cli, _given_options
from diffnb.data import save_images
from diffnb.latent import VAE, save_autoencoder

TRAIN, SAMPLE = bin_path('diffnb_train'), bin_path('diffnb_sample')
ENV = {'OMP_NUM_THREADS': '1'}
RUN = ['--steps', '3', '--samples', '4', '--sample-every', '0', '--batch-size', '8', '--data', 'bundled:heldout', '--no-progress', '--device', 'cpu']

def here(argv:list, prog:str='diffnb_train')->tuple:
    "`diffnb_train` (or `diffnb_sample`) in this process, as its entry point runs it, without starting Python again: (exit status, stdout, stderr)"
    make_parser, body = (train_parser, train) if prog == 'diffnb_train' else (sample_parser, sample_cmd)
    args = make_parser().parse_args(argv)
    args._given, args._argv = _given_options(make_parser(), argv), argv
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): status = run_cli(prog, body, args)
    return status, out.getvalue(), err.getvalue().strip()

def grid_size(n:int, nrow:int, folder)->tuple:
    "The size of the grid image that `n` decoded 1x28x28 digits make"
    return Image.open(save_images(torch.zeros(n, 1, 28, 28), folder/'reference.png', nrow=nrow, scale=2)).size

@pytest.fixture(scope='module')
def autoencoders(tmp_path_factory):
    "Two untrained autoencoders of 1x28x28 digits (4x8x8 latents), saved as folders: enough to test the plumbing"
    root = tmp_path_factory.mktemp('autoencoders')
    torch.manual_seed(0); a = save_autoencoder(VAE(), root/'a', scale=1.0)
    torch.manual_seed(1); b = save_autoencoder(VAE(), root/'b', scale=1.0)
    return a, b

@pytest.fixture(scope='module')
def unet_run(tmp_path_factory, autoencoders):
    "A latent flow-matching U-Net, three steps, with a sample grid at step 2"
    out = tmp_path_factory.mktemp('latent')/'unet'
    r = run([TRAIN, '--latent', str(autoencoders[0]), *RUN, '--sample-every', '2', '--out', str(out)], env=ENV)
    assert r.returncode == 0, r.stderr
    return out, r.stdout

def test_the_option_alone_names_the_bundled_autoencoder():
    assert train_parser().parse_args(['--latent']).latent == 'mnist-vae'
    assert train_parser().parse_args([]).latent is None
    assert train_parser().parse_args(['--latent', 'my-vae']).latent == 'my-vae'

def test_a_latent_unet(unet_run, tmp_path):
    "The start line says what is trained; the checkpoint holds a latent model of 4x8x8 latents; the grids show decoded 28x28 digits"
    out, stdout = unet_run
    assert 'training a latent model' in stdout and 'U-Net (latent, flow)' in stdout, stdout
    ck = torch.load(out/'checkpoint.pt')
    assert ck['model_config']['class'] == 'LatentDiffusion' and ck['model_config']['config']['net']['class'] == 'FlowUNet'
    assert list(ck['data']['shape']) == [4, 8, 8] and tuple(ck['model_config']['config']['net']['config']['channels']) == (32, 64)
    assert Image.open(out/'samples.png').size == grid_size(4, 10, tmp_path)
    assert Image.open(out/'samples'/'step_000002.png').size == grid_size(16, 8, tmp_path)

def test_a_latent_dit(autoencoders, tmp_path):
    "A DiT in 2x2 patches of the latents, with EDM, whose sigma_data is measured on the latents"
    r = run([TRAIN, '--latent', str(autoencoders[0]), '--backbone', 'dit', '--formulation', 'edm', *RUN, '--out', str(tmp_path/'dit')], env=ENV)
    assert r.returncode == 0 and 'training a latent model' in r.stdout and 'DiT (edm)' in r.stdout, r.stderr
    edm = torch.load(tmp_path/'dit'/'checkpoint.pt')['model_config']['config']['net']
    assert edm['class'] == 'EDMPrecond' and edm['config']['net']['class'] == 'DiT' and edm['config']['net']['config']['patch'] == 2
    assert edm['config']['sigma_data'] != 0.5
    assert Image.open(tmp_path/'dit'/'samples.png').size == grid_size(4, 10, tmp_path)

def test_sample_and_eval_a_latent_checkpoint(unet_run, tmp_path):
    "diffnb_sample needs no option for a latent checkpoint, inpainting included (in pixels); diffnb_eval refuses it in one line"
    ckpt = str(unet_run[0]/'checkpoint.pt')
    r = run([SAMPLE, '--checkpoint', ckpt, '-n', '4', '--steps', '2', '--no-progress', '--out', str(tmp_path/'s.png')], env=ENV)
    assert r.returncode == 0 and 'flow-euler' in r.stdout, r.stderr
    x = torch.load(tmp_path/'s.pt')['samples']
    assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert Image.open(tmp_path/'s.png').size == grid_size(4, None, tmp_path)
    status, _, err = here(['--checkpoint', ckpt, '--image', 'bundled:7', '--mask', 'bottom', '-n', '2', '--steps', '4', '--resamplings', '1',
                           '--no-progress', '--out', str(tmp_path/'i.png')], 'diffnb_sample')
    assert status == 0, err
    saved = torch.load(tmp_path/'i.pt')
    m = saved['mask']
    assert saved['samples'].shape == (2, 1, 28, 28) and torch.equal(saved['samples'] * m, saved['known'] * m)
    from diffnb.score import eval_parser, eval_cmd
    err = io.StringIO()
    with redirect_stderr(err): status = run_cli('diffnb_eval', eval_cmd, eval_parser().parse_args(['--checkpoint', ckpt, '-n', '2']))
    assert status == 2 and 'is a latent model' in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()

def test_resume_keeps_the_autoencoder(unet_run, autoencoders, tmp_path):
    "A resume needs no --latent (the checkpoint holds the autoencoder); the same one is accepted, another one or a run of pixels refused"
    out = tmp_path/'run'
    shutil.copytree(unet_run[0], out)
    r = run([TRAIN, '--resume', '--steps', '4', '--samples', '0', '--no-progress', '--device', 'cpu', '--out', str(out)], env=ENV)
    assert r.returncode == 0 and 'resuming' in r.stdout and '4 steps (1 in this run' in r.stdout, r.stdout + r.stderr
    status, stdout, err = here(['--resume', '--latent', str(autoencoders[0]), '--steps', '5', '--samples', '0', '--log', 'none', '--no-progress', '--out', str(out)])
    assert status == 0 and '5 steps (1 in this run' in stdout, err
    status, _, err = here(['--resume', '--latent', str(autoencoders[1]), '--steps', '6', '--no-progress', '--out', str(out)])
    assert status == 2 and f'--latent {autoencoders[1]} (the run: another autoencoder)' in err and len(err.splitlines()) == 1, err
    assert torch.load(out/'checkpoint.pt')['step'] == 5
    status, _, err = here(['--preset', 'tiny', '--steps', '1', '--samples', '0', '--no-progress', '--out', str(tmp_path/'pixels')])
    assert status == 0, err
    status, _, err = here(['--resume', '--latent', str(autoencoders[0]), '--steps', '2', '--no-progress', '--out', str(tmp_path/'pixels')])
    assert status == 2 and '(the run: a model of pixels, not of latents)' in err, err

def test_images_the_autoencoder_cannot_encode(autoencoders, tmp_path):
    "Images of another shape than the autoencoder's, or a name that is no autoencoder: one line before the first step, nothing written"
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (tmp_path/'rgb'/c).mkdir(parents=True)
        for i in range(2): Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tmp_path/'rgb'/c/f'{i}.png')
    ae = str(autoencoders[0])
    for extra, message in ((['--data', str(tmp_path/'rgb')], 'encodes 1x28x28 images, but --data'),
                           (['--data', str(tmp_path/'rgb')], 'has 3x32x32 images: pass --size 28 and --channels 1'),
                           (['--data', str(tmp_path/'rgb'), '--size', '32', '--channels', '1'], 'has 1x32x32 images: pass --size 28')):
        status, _, err = here(['--latent', ae, *extra, '--steps', '2', '--no-progress', '--out', str(tmp_path/'x')])
        assert status == 2 and message in err and len(err.splitlines()) == 1, err
    status, _, err = here(['--latent', str(tmp_path/'no-such-vae'), '--steps', '2', '--no-progress', '--out', str(tmp_path/'x')])
    assert status == 2 and 'no such autoencoder' in err, err
    assert not (tmp_path/'x').exists()
