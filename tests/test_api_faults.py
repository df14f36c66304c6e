"""The Python API under bad input: `sample`'s bound on steps, its choice of samplers, the guidance scale, and the
package's modules found from any working directory."""
import subprocess, sys
import pytest, torch
from diffnb.sampling import sample, usable_samplers, max_steps
from diffnb.schedules import cosine_schedule
from diffnb.guidance import classifier_free_guidance
from diffnb.edm import SigmaSchedule
from diffnb.flow import FlowPath

def zeros(x, t, y=None): return torch.zeros_like(x)

@pytest.mark.parametrize('s,sampler', [(FlowPath(), 'flow-euler'), (SigmaSchedule(), 'heun'), (cosine_schedule(), 'ddim')])
def test_steps_are_bounded(s, sampler):
    "10**8 steps would run for days (or fail on memory, blaming the batch): refused at once, naming steps and the bound"
    with pytest.raises(ValueError, match=r'steps must be an integer in \[1, 1000\], got 100000000'):
        sample(zeros, s, (1, 1, 4, 4), sampler=sampler, steps=10**8)
    assert max_steps(s) == 1000 and sample(zeros, s, (1, 1, 4, 4), sampler=sampler, steps=3, clip_x0=False).shape == (1, 1, 4, 4)

def test_a_sampler_of_another_formulation():
    "A flow sampler for an EDM model (an IndexError deep inside before), an EDM sampler for a flow model: one clear ValueError"
    with pytest.raises(ValueError, match="sampler 'flow-euler' cannot sample a model with SigmaSchedule"):
        sample(zeros, SigmaSchedule(), (1, 1, 4, 4), sampler='flow-euler', steps=2)
    with pytest.raises(ValueError, match="sampler 'heun' cannot sample a model with FlowPath"):
        sample(zeros, FlowPath(), (1, 1, 4, 4), sampler='heun', steps=2)
    assert 'flow-euler' in usable_samplers(FlowPath()) and 'heun' not in usable_samplers(FlowPath())
    assert 'heun' in usable_samplers(SigmaSchedule()) and 'flow-euler' not in usable_samplers(SigmaSchedule())

class TwoClass:
    n_classes = 2
    def __call__(self, x, t, y): return torch.zeros_like(x) + y[:, None, None, None].float()

@pytest.mark.parametrize('w', [1e30, 101.0, float('inf'), -1.0])
def test_guidance_scale_is_bounded(w):
    "guidance_scale=1e30 saturated every pixel without a word: scales beyond 100 are refused"
    with pytest.raises(ValueError, match=r'guidance_scale must be a finite number in \[0, 100\]'): classifier_free_guidance(TwoClass(), w)
    with pytest.raises(ValueError, match=r'guidance_scale must be a finite number in \[0, 100\]'):
        sample(TwoClass(), cosine_schedule(), (2, 1, 4, 4), steps=2, y=torch.tensor([0, 1]), guidance_scale=w)
    classifier_free_guidance(TwoClass(), 100)

def test_the_cli_bound_on_guidance_is_the_library_s():
    import diffnb.guidance, diffnb.cli
    assert diffnb.guidance._MAX_GUIDANCE == 100
    args = diffnb.cli.sample_parser().parse_args(['--guidance', '100.5'])
    with pytest.raises(ValueError, match=r'\[0, 100\]'): diffnb.cli._check_sample_args(args, {'guidance'})

def test_sampler_names_from_a_folder_holding_a_clone(tmp_path):
    "From a working directory holding a clone (diffnb/ with setup.py), listing the samplers imports nothing of the clone"
    (tmp_path/'diffnb'/'diffnb').mkdir(parents=True)
    (tmp_path/'diffnb'/'setup.py').write_text("open(__file__ + '.ran', 'w').write('imported')\nraise SystemExit(7)\n")
    r = subprocess.run([sys.executable, '-c', 'from diffnb.sampling import sampler_names; print(len(sampler_names()))'],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and int(r.stdout) >= 8, r.stderr
    assert not (tmp_path/'diffnb'/'setup.py.ran').exists()


def test_an_interrupt_while_a_model_is_built_stays_an_interrupt():
    "A signal that lands inside torch's device mode can surface as torch's own error about its mode stack; loading must give back the interrupt"
    import torch.nn as nn
    from diffnb.checkpoint import register_model, model_from_config, MODEL_CLASSES
    class Interrupted(nn.Module):
        def __init__(self):
            super().__init__()
            try: raise KeyboardInterrupt
            finally: raise RuntimeError('trying to pop from empty mode stack')     # what torch raised on the way out
    register_model(Interrupted)
    try:
        with pytest.raises(KeyboardInterrupt): model_from_config({'class': 'Interrupted', 'config': {}})
    finally: MODEL_CLASSES.pop('Interrupted', None)
