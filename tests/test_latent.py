"Latent diffusion from the outside: the VAE and its KL term, the shipped autoencoder, a latent model trained, sampled, inpainted, saved and loaded."
import math, pytest, torch
from diffnb.data import bundled_mnist, TensorImages
from diffnb.latent import (VAE, kl_divergence, vae_loss, train_autoencoder, load_autoencoder, save_autoencoder, latent_scale,
                           encode_images, LatentDiffusion, latent_dataset, latent_mask)
from diffnb.dit import build_backbone
from diffnb.flow import FlowMatching
from diffnb.training import Trainer, load_model, NoisePrediction, CheckpointError
from diffnb.schedules import cosine_schedule
from diffnb.sampling import sample
from diffnb.hub import save_pretrained, from_pretrained

@pytest.fixture(scope='module')
def shipped(): return load_autoencoder()

@pytest.fixture(scope='module')
def digits():
    d = bundled_mnist('train')
    return TensorImages(d.images[:128], d.labels[:128], d.classes, 'first 128 digits')

def test_vae_shapes_and_padding():
    v = VAE()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    m, lv = v.encode(x)
    assert m.shape == lv.shape == (2, 4, 8, 8) and v.decode(m).shape == (2, 1, 28, 28)
    v2 = VAE(latent_channels=2, downsamplings=1, channels=(8, 16))
    assert v2.latent_shape == (2, 14, 14) and v2.decode(v2.encode(x)[0]).shape == x.shape
    v3 = VAE(in_channels=3, img_size=32, latent_channels=4)
    assert v3.latent_shape == (4, 8, 8) and v3.pad == 0

def test_kl_closed_form():
    torch.manual_seed(0)
    m, lv = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m, (0.5 * lv).exp()), torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(kl_divergence(m, lv), want.flatten(1).sum(1), atol=1e-5)
    assert kl_divergence(torch.zeros(1, 7), torch.zeros(1, 7)).item() == 0.0
    # a posterior with sigma = 1 and mean mu: KL = |mu|^2 / 2
    mu = torch.tensor([[1.0, 2.0, -2.0]])
    assert kl_divergence(mu, torch.zeros_like(mu)).item() == pytest.approx(4.5)

def test_training_reduces_the_reconstruction_error(digits):
    torch.manual_seed(0)
    v = VAE(channels=(8, 16, 16))
    hist = train_autoencoder(v, digits, steps=30, batch_size=16, every=10)
    assert len(hist) == 3 and hist[-1][1] < hist[0][1]
    loss, err, kl = vae_loss(v, digits.images[:4], kl_weight=0.5)
    assert loss.item() == pytest.approx((err + 0.5 * kl).item(), rel=1e-5)     # the mean of per-image sums: linear in the two terms
    with pytest.raises(ValueError, match='steps must be a positive integer'): train_autoencoder(v, digits, steps=0)

def test_the_shipped_autoencoder_reconstructs_held_out_digits(shipped):
    vae, scale = shipped
    x = bundled_mnist('heldout').images[:200]
    rec = vae.decode(encode_images(vae, x)).clamp(-1, 1)
    psnr = (10 * torch.log10(4 / (rec - x).pow(2).flatten(1).mean(1))).mean().item()
    assert psnr > 20, psnr
    z = encode_images(vae, bundled_mnist('train').images[:1000], sample=True, generator=torch.Generator().manual_seed(0))
    assert abs((scale * z).std().item() - 1) < 0.05
    assert latent_scale(vae, bundled_mnist('train')) == pytest.approx(scale, rel=0.02)

def test_autoencoder_folders(shipped, tmp_path):
    vae, scale = shipped
    save_autoencoder(vae, tmp_path/'ae', scale, {'note': 'copy'})
    again, s2 = load_autoencoder(tmp_path/'ae')
    z = torch.randn(2, 4, 8, 8)
    assert s2 == scale and torch.equal(again.decode(z), vae.decode(z)) and not any(p.requires_grad for p in again.parameters())
    with pytest.raises(FileExistsError): save_autoencoder(vae, tmp_path/'ae', scale)
    (tmp_path/'ae'/'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match='not a readable safetensors'): load_autoencoder(tmp_path/'ae')
    save_autoencoder(vae, tmp_path/'bad', -1.0)
    with pytest.raises(CheckpointError, match='latent scale must be a positive number'): load_autoencoder(tmp_path/'bad')
    with pytest.raises(FileNotFoundError, match='no autoencoder folder'): load_autoencoder(tmp_path/'nothing')

def _tiny(vae, scale, prediction='flow', backbone='dit'):
    kw = dict(patch=2, width=32, depth=1, heads=2) if backbone == 'dit' else dict(channels=(8, 16), attn_levels=())
    return LatentDiffusion(build_backbone(backbone, in_channels=4, img_size=8, n_classes=10, prediction=prediction, **kw), vae, scale)

@pytest.mark.parametrize('formulation', ['flow', 'ddpm'])
def test_a_latent_model_trains_samples_and_reloads(shipped, digits, tmp_path, formulation):
    vae, scale = shipped
    torch.manual_seed(0)
    model = _tiny(vae, scale, 'flow' if formulation == 'flow' else 'eps', 'unet' if formulation == 'ddpm' else 'dit')
    f = FlowMatching() if formulation == 'flow' else NoisePrediction(cosine_schedule())
    data = latent_dataset(model, digits)
    assert data.shape == (4, 8, 8) and data.images.abs().max() > 1        # latents: not bounded by 1
    before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    tr = Trainer(model, f, data, batch_size=16, progress=False, device='cpu', ckpt_path=tmp_path/'run.pt').fit(steps=3)
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in before.items())   # the autoencoder is frozen
    assert not model.autoencoder.training
    m, s = load_model(tmp_path/'run.pt')
    assert type(m).__name__ == 'LatentDiffusion' and m.sample_shape == (4, 8, 8)
    g = lambda: torch.Generator().manual_seed(0)
    y = torch.tensor([0, 5])
    a = sample(m, s, (2, *m.sample_shape), steps=3, y=y, generator=g())
    b = sample(tr.ema.model.eval(), tr.s, (2, 1, 28, 28), steps=3, y=y, generator=g())
    assert a.shape == (2, 1, 28, 28) and torch.allclose(a, b, atol=1e-5) and a.abs().max() <= 1
    guided = sample(m, s, (2, 4, 8, 8), steps=3, y=y, guidance_scale=4.0, generator=g())
    assert guided.shape == a.shape and not torch.allclose(guided, a)
    save_pretrained(m, s, tmp_path/'folder')
    m2, s2 = from_pretrained(tmp_path/'folder')
    assert torch.allclose(sample(m2, s2, (2, 4, 8, 8), steps=3, y=y, generator=g()), a, atol=1e-5)

def test_latent_inpainting_keeps_the_known_pixels(shipped, digits):
    vae, scale = shipped
    torch.manual_seed(0)
    m = _tiny(vae, scale).eval()
    known, mask = digits.images[:3], torch.ones(3, 1, 28, 28)
    mask[..., 8:20, 8:20] = 0                                     # a hole in the middle
    out = sample(m, FlowMatching().for_sampling(), sampler='ddim', steps=3, known=known, mask=mask, y=digits.labels[:3])
    assert torch.equal(out * mask, known * mask)
    lm = latent_mask(mask, vae)
    assert lm.shape == (3, 1, 8, 8) and lm[0, 0, 4, 4] == 0 and lm[0, 0, 0, 0] == 1
    assert lm[0, 0].sum() < (mask[0, 0].mean() * 64)              # the margin makes the known region smaller, never larger
    with pytest.raises(ValueError, match='inpainting needs both known and mask'): sample(m, FlowMatching().for_sampling(), known=known)
    with pytest.raises(ValueError, match='known must be images'):
        sample(m, FlowMatching().for_sampling(), sampler='ddim', known=torch.zeros(1, 4, 8, 8), mask=torch.ones(1, 1, 8, 8))

def test_refusals(shipped):
    vae, scale = shipped
    net = build_backbone('dit', in_channels=1, img_size=8, prediction='flow', patch=2, width=32, depth=1, heads=2)
    with pytest.raises(ValueError, match='the latents have 4'): LatentDiffusion(net, vae, scale)
    with pytest.raises(ValueError, match='scale must be a positive number'): LatentDiffusion(_tiny(vae, scale).net, vae, math.nan)
    with pytest.raises(ValueError, match='needs a network and an autoencoder'): LatentDiffusion(None, vae)
    m = _tiny(vae, scale)
    with pytest.raises(ValueError, match=r'shape must be \(B, 4, 8, 8\)'): sample(m, FlowMatching().for_sampling(), (1, 1, 8, 8))
    # pixel models still refuse images outside [-1, 1]
    from diffnb.unet import UNet
    bad = TensorImages(torch.full((8, 1, 28, 28), 3.0), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r'the images must lie in \[-1, 1\]'):
        Trainer(UNet(channels=(8, 16), attn_levels=()), NoisePrediction(cosine_schedule()), bad, batch_size=4, progress=False, device='cpu').fit(steps=1)

def test_an_edm_model_of_latents_keeps_its_sigma_data(shipped):
    "EDM's loss weighting reads the model's sigma_data: the latent wrapper must pass the network's on"
    from diffnb.edm import EDMPrecond
    vae, scale = shipped
    net = build_backbone('dit', in_channels=4, img_size=8, prediction='eps', patch=2, width=32, depth=1, heads=2)
    assert LatentDiffusion(EDMPrecond(net, sigma_data=0.93), vae, scale).sigma_data == 0.93
    assert not hasattr(_tiny(vae, scale), 'sigma_data')
