"Guidance and inpainting through the public API, with the bundled model and with exact models."
import warnings, pytest, torch
from diffnb.pretrained import load_pretrained
from diffnb.guidance import classifier_free_guidance
from diffnb.inpainting import inpaint, half_mask, box_mask, stroke_mask, mask_from_image, repaint_schedule, repaint_model_calls
from diffnb.schedules import cosine_schedule
from diffnb.sampling import sample
from diffnb.ddim import ddim_sample
from diffnb.data import bundled_mnist
from diffnb.unet import UNet

MODEL, S = load_pretrained()

def test_guidance_scales_one_and_zero_are_exact():
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([10, 500, 900]), torch.tensor([1, 5, 9])
    with torch.no_grad():
        assert torch.equal(classifier_free_guidance(MODEL, 1)(x, t, y), MODEL(x, t, y))
        assert torch.equal(classifier_free_guidance(MODEL, 0)(x, t, y), MODEL(x, t, None))
        c, u = MODEL(x, t, y), MODEL(x, t, None)
        torch.testing.assert_close(classifier_free_guidance(MODEL, 4.0)(x, t, y), u + 4 * (c - u), rtol=1e-4, atol=1e-5)

def test_guidance_bad_input():
    with pytest.raises(ValueError, match='needs a class-conditional model'): classifier_free_guidance(UNet(), 2.0)
    with pytest.raises(ValueError, match=r'guidance_scale must be a finite number in \[0, 100\]'): classifier_free_guidance(MODEL, -0.5)
    with pytest.raises(ValueError, match=r'class indices in \[0, 9\]'):
        ddim_sample(classifier_free_guidance(MODEL, 2.0), S, (1, 1, 28, 28), y=torch.tensor([10]))

@pytest.mark.parametrize('sampler,method', [('ddim', 'repaint'), ('ddim', 'replace'), ('ddpm', 'replace')])
def test_known_pixels_are_exact(sampler, method):
    d = bundled_mnist()
    known, y = d.images[:3], d.labels[:3]
    mask = box_mask((28, 28), 7, 7, 14, 14)
    x = sample(MODEL, S, known=known, mask=mask, y=y, guidance_scale=2.0, sampler=sampler, steps=10 if sampler == 'ddim' else None,
               method=method, jump_length=2, resamplings=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x * mask, known * mask)
    assert (x * (1 - mask)).abs().sum() > 0 and x.abs().max() <= 1

def test_masks_and_mask_errors(tmp_path):
    from PIL import Image
    Image.new('L', (28, 28), 255).save(tmp_path/'m.png')
    assert mask_from_image(tmp_path/'m.png').all()
    assert stroke_mask((28, 28), generator=torch.Generator().manual_seed(0)).mean() < 1
    known = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match='does not broadcast'): inpaint(MODEL, S, known, torch.ones(1, 1, 14, 14))
    with pytest.raises(ValueError, match='only 0'): inpaint(MODEL, S, known, half_mask((28, 28)) * 0.5)
    with pytest.raises(ValueError, match='known must be finite'): inpaint(MODEL, S, known * float('nan'), half_mask((28, 28)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert torch.equal(inpaint(MODEL, S, known, torch.ones(28, 28)), known)
        assert any('nothing to inpaint' in str(x.message) for x in w)

@pytest.mark.parametrize('sampler,steps,jump,r', [('ddim', 20, 5, 3), ('ddim', 50, 5, 5), ('ddim', 17, 4, 2), ('ddim', 9, 5, 4),
                                                  ('ddim', 12, 3, 1), ('ddpm', None, 10, 3), ('ddpm', None, 7, 2)])
def test_repaint_model_calls_are_counted(sampler, steps, jump, r):
    "One model call per step down; going back up (forward re-noising) calls nothing"
    s = cosine_schedule(T=60)
    calls = []
    def counting(x, t, y=None): calls.append(len(x)); return torch.zeros_like(x)
    inpaint(counting, s, torch.zeros(2, 1, 4, 4), half_mask((4, 4)), sampler=sampler, steps=steps, jump_length=jump, resamplings=r)
    n = s.T if sampler == 'ddpm' else steps
    assert len(calls) == n + jump * (r - 1) * max(0, n // jump - 1) == repaint_model_calls(n, jump, r)
    path = repaint_schedule(n, jump, r)
    assert len(calls) == sum(b < a for a, b in zip(path, path[1:]))
    calls.clear()
    inpaint(counting, s, torch.zeros(2, 1, 4, 4), half_mask((4, 4)), sampler=sampler, steps=steps, method='replace')
    assert len(calls) == n

def test_repaint_cost_quoted_in_the_chapter():
    assert repaint_model_calls(50, 5, 5) == 5 * 50 - 4 * 5 == 230      # 50 DDIM steps, jumps of 5, 5 resamplings
    assert repaint_model_calls(100, 5, 10) == 955
