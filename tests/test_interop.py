"diffusers interop (chapter 14): schedulers that take diffnb's steps, a diffnb network in diffusers pipelines (saved and reloaded), a UNet2DModel in diffnb's training loop."
import sys, pytest, torch
from conftest import run
from diffusers import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from diffnb.interop import (to_diffusers_scheduler, scheduler_sample, diffusers_prediction_type, DiffnbUNet2DModel,
                            DiffnbClassPipeline, DiffusersUNet, LogSNRDPMSolverScheduler)
from diffnb.schedules import cosine_schedule, linear_schedule
from diffnb.ddim import ddim_sample, dpm_solver_sample, sampling_timesteps
from diffnb.sampling import sample
from diffnb.pretrained import load_pretrained
from diffnb.training import Trainer, diffusion_loss, load_model, NoisePrediction
from diffnb.data import bundled_mnist, ring_means
from diffnb.flow import FlowPath, FlowUNet, GaussianMixtureFlow, flow_sample
from diffnb.unet import UNet

MODEL, S = load_pretrained()
X_T = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 3, 5, 7, 8, 9])
unit = lambda x: (x / 2 + 0.5).clamp(0, 1)

@pytest.mark.parametrize('sched', [cosine_schedule(), linear_schedule(T=500)], ids=['cosine', 'linear-500'])
def test_scheduler_settings(sched):
    ddim, dpm = to_diffusers_scheduler(sched, 'ddim', 'v'), to_diffusers_scheduler(sched, 'dpm', 'x0')
    assert type(ddim) is DDIMScheduler and isinstance(dpm, DPMSolverMultistepScheduler)
    assert (ddim.config.prediction_type, dpm.config.prediction_type) == ('v_prediction', 'sample')
    torch.testing.assert_close(ddim.alphas_cumprod.double(), sched.alpha_bar64, rtol=1e-4, atol=0)   # float32 products
    for n in (1, 3, 10, 33, 100):
        ddim.set_timesteps(n); dpm.set_timesteps(n)
        assert ddim.timesteps.tolist() == sampling_timesteps(sched, n, 'leading')
        assert dpm.timesteps.tolist() == sampling_timesteps(sched, n, 'logsnr')

def test_bad_requests():
    with pytest.raises(ValueError, match='kind must be one of'): to_diffusers_scheduler(S, 'euler')
    with pytest.raises(ValueError, match='t - T // N'): to_diffusers_scheduler(S, 'ddim', spacing='logsnr')
    with pytest.raises(ValueError, match='FlowPath'): to_diffusers_scheduler(S, 'flow-euler')
    with pytest.raises(ValueError, match='needs a NoiseSchedule'): to_diffusers_scheduler(FlowPath(), 'dpm')
    with pytest.raises(ValueError, match='prediction must be'): diffusers_prediction_type('epsilon')

# The bundled model, the same noise: with each sampler's default spacing the two libraries agree to float32 rounding
# (measured: a few 1e-6; diffusers keeps alpha-bar in float32).
@pytest.mark.parametrize('kind,steps,clip', [('ddim', 10, True), ('ddim', 20, False), ('dpm', 10, True), ('dpm', 15, False)])
def test_same_images_as_diffnb(kind, steps, clip):
    ours = (ddim_sample if kind == 'ddim' else dpm_solver_sample)(MODEL, S, X_T.shape, steps=steps, clip_x0=clip, x_T=X_T, y=Y)
    theirs = scheduler_sample(MODEL, to_diffusers_scheduler(S, kind, clip_x0=clip), X_T, steps, Y)
    assert (ours - theirs).abs().max() < 1e-4

def test_ddim_trailing_matches_only_when_steps_divide_T():
    "DDIMScheduler steps by T // N: diffnb's 'trailing' DDIM is the same sampler for N = 20, a different one for N = 30"
    sch = to_diffusers_scheduler(S, 'ddim', spacing='trailing')
    run = lambda n: (ddim_sample(MODEL, S, X_T.shape, steps=n, spacing='trailing', x_T=X_T, y=Y) - scheduler_sample(MODEL, sch, X_T, n, Y)).abs().max()
    assert run(20) < 1e-4
    assert run(30) > 1e-2

@pytest.mark.parametrize('shift', [1.0, 3.0])
def test_flow_euler_matches(shift):
    ring = GaussianMixtureFlow(ring_means(8), 0.1)
    z = torch.randn(128, 2, generator=torch.Generator().manual_seed(3))
    sch = to_diffusers_scheduler(FlowPath(), 'flow-euler', shift=shift)
    assert isinstance(sch, FlowMatchEulerDiscreteScheduler)
    ours = flow_sample(ring, z.shape, steps=12, shift=shift, t_min=sch.sigma_min, x_T=z)
    assert (ours - scheduler_sample(ring, sch, z, 12)).abs().max() < 1e-5

def test_wrapper_is_the_same_network():
    net = DiffnbUNet2DModel.from_diffnb(MODEL)
    assert (net.config.sample_size, net.config.in_channels, net.config.n_classes) == (28, 1, 10)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([5, 500, 990])
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.tensor([1, 2, 3])).sample, MODEL(x, t, torch.tensor([1, 2, 3])))
        assert torch.equal(net(x, t, return_dict=False)[0], MODEL(x, t))
    with pytest.raises(ValueError, match='UNet or FlowUNet'): DiffnbUNet2DModel.from_diffnb(torch.nn.Linear(2, 2))

def test_ddim_pipeline_and_round_trip(tmp_path):
    pipe = DDIMPipeline(unet=DiffnbUNet2DModel.from_diffnb(MODEL), scheduler=to_diffusers_scheduler(S, 'ddim'))
    pipe.set_progress_bar_config(disable=True)
    want = unit(ddim_sample(MODEL, S, X_T.shape, steps=10, x_T=X_T))
    run = lambda p: p(batch_size=6, generator=torch.Generator().manual_seed(0), num_inference_steps=10,
                      use_clipped_model_output=True, output_type='pt').images
    assert (run(pipe) - want).abs().max() < 1e-4
    pipe.save_pretrained(tmp_path)
    assert (tmp_path/'unet'/'diffusion_pytorch_model.safetensors').is_file() and (tmp_path/'unet'/'config.json').is_file()
    loaded = DDIMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.unet) is DiffnbUNet2DModel
    assert (run(loaded) - want).abs().max() < 1e-4

def test_class_pipeline_guidance_and_round_trip(tmp_path):
    pipe = DiffnbClassPipeline(unet=DiffnbUNet2DModel.from_diffnb(MODEL), scheduler=to_diffusers_scheduler(S, 'dpm'))
    pipe.set_progress_bar_config(disable=True)
    want = unit(sample(MODEL, S, X_T.shape, sampler='solver', steps=10, y=Y, guidance_scale=2.5, x_T=X_T))
    got = pipe(Y, guidance_scale=2.5, num_inference_steps=10, latents=X_T, output_type='pt').images
    assert (got - want).abs().max() < 1e-4
    pipe.save_pretrained(tmp_path)
    loaded = DiffnbClassPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is LogSNRDPMSolverScheduler
    again = loaded(Y.tolist(), guidance_scale=2.5, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type='np').images
    assert again.shape == (6, 28, 28, 1) and abs(torch.from_numpy(again).permute(0, 3, 1, 2) - want).max() < 1e-4
    with pytest.raises(ValueError, match='class indices in'): pipe([10])
    with pytest.raises(ValueError, match='latents must have shape'): pipe([1], latents=X_T)
    with pytest.raises(ValueError, match='class-conditional'): DiffnbClassPipeline(DiffnbUNet2DModel(channels=(8, 16), attn_levels=()), to_diffusers_scheduler(S))

def test_flow_model_in_the_pipeline():
    net = FlowUNet(channels=(8, 16), attn_levels=(), n_classes=10, time_scale=500.0).eval()
    torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05, generator=torch.Generator().manual_seed(0))
    wrapped = DiffnbUNet2DModel.from_diffnb(net)
    assert wrapped.config.timestep_scale == 0.5 and wrapped.config.prediction == 'flow'
    pipe = DiffnbClassPipeline(unet=wrapped, scheduler=to_diffusers_scheduler(FlowPath(), 'flow-euler'))
    pipe.set_progress_bar_config(disable=True)
    want = sample(net, FlowPath(), (3, 1, 28, 28), sampler='flow-euler', steps=6, y=Y[:3], guidance_scale=2.0, x_T=X_T[:3], clip_x0=False)
    got = pipe(Y[:3], guidance_scale=2.0, num_inference_steps=6, latents=X_T[:3], output_type='pt').images
    assert want.std() > 0.1 and (got - unit(want)).abs().max() < 1e-4

SMALL = dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
             down_block_types=('DownBlock2D', 'DownBlock2D'), up_block_types=('UpBlock2D', 'UpBlock2D'), norm_num_groups=4)

@pytest.mark.parametrize('n_classes', [None, 10])
def test_unet2d_trains_saves_and_samples(tmp_path, n_classes):
    data = bundled_mnist('train')
    held = bundled_mnist('heldout').images[:32]
    g = torch.Generator().manual_seed(0)
    t, noise = torch.randint(0, 1000, (32,), generator=g), torch.randn(held.shape, generator=g)
    def loss(m):
        with torch.no_grad(): return diffusion_loss(m.eval(), held, S, t=t, noise=noise).item()
    model = DiffusersUNet(SMALL, n_classes=n_classes)
    before = loss(model)
    tr = Trainer(model, S, data, batch_size=16, lr=3e-3, warmup=5, ckpt_path=tmp_path/'run.pt', device='cpu', progress=False).fit(steps=25)
    assert loss(tr.model) < 0.6 * before
    loaded, s2 = load_model(tmp_path/'run.pt')
    assert type(loaded) is DiffusersUNet and loaded.n_classes == n_classes and loaded.sample_shape == (1, 28, 28)
    for k, v in tr.ema.model.state_dict().items(): assert torch.equal(loaded.state_dict()[k], v)
    y = torch.arange(4) if n_classes else None
    x = ddim_sample(loaded, s2, (4, 1, 28, 28), steps=5, y=y, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()
    resumed = Trainer.resume(tmp_path/'run.pt', data, device='cpu', progress=False)
    assert resumed.step == 25 and type(resumed.model) is DiffusersUNet

def test_unet2d_adapter_bad_input():
    with pytest.raises(ValueError, match='give n_classes'): DiffusersUNet(dict(SMALL, num_class_embeds=11))
    with pytest.raises(ValueError, match='n_classes must be'): DiffusersUNet(SMALL, n_classes=0)
    with pytest.raises(ValueError, match='y must be None'): DiffusersUNet(SMALL)(torch.randn(1, 1, 28, 28), torch.tensor([3]), torch.tensor([1]))

def test_a_diffusers_unet_as_a_model_folder(tmp_path):
    "A UNet2DModel trained by diffnb shares like any diffnb model: a model folder that loads in a new process"
    from diffnb.hub import save_pretrained, read_record
    model = DiffusersUNet(SMALL, n_classes=10).eval()
    folder = save_pretrained(model, NoisePrediction(cosine_schedule()), tmp_path/'m', data=dict(shape=[1, 28, 28]))
    assert read_record(folder)['model_config']['module'] == 'diffnb.interop'
    code = ('import sys, torch; from diffnb.hub import from_pretrained; from diffnb.sampling import sample\n'
            f'm, s = from_pretrained({str(folder)!r}); print(type(m).__name__, tuple(sample(m, s, (2, 1, 28, 28), steps=2, y=torch.arange(2)).shape))')
    r = run([sys.executable, '-c', code])
    assert r.returncode == 0 and r.stdout.split() == ['DiffusersUNet', '(2,', '1,', '28,', '28)'], r.stderr
