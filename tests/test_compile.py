"torch.compile in training and sampling: the same results as eager, and a one-line fallback where compiling fails."
import sys
import pytest, torch
from torch import nn
from conftest import run
from diffnb.data import TensorImages
from diffnb.schedules import cosine_schedule
from diffnb.sampling import sample, compiled_model
from diffnb.training import Trainer, CompiledModel

class Small(nn.Module):
    "A model small enough to compile in seconds: two convolutions and a time embedding"
    prediction, n_classes, in_channels = 'eps', None, 1
    def __init__(self):
        super().__init__()
        self.a, self.b, self.emb = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1), nn.Embedding(100, 8)
    def forward(self, x, t, y=None): return self.b(torch.nn.functional.silu(self.a(x) + self.emb(t)[:, :, None, None]))

def data():
    g = torch.Generator().manual_seed(0)
    return TensorImages(torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.zeros(64, dtype=torch.long), ['0'])

def test_sampling_compiled_equals_eager():
    torch.manual_seed(0)
    m, s = Small().eval(), cosine_schedule(T=100)
    kw = dict(sampler='ddim', steps=6, generator=None)
    eager = sample(m, s, (4, 1, 8, 8), x_T=torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), **kw)
    comp = sample(m, s, (4, 1, 8, 8), x_T=torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), compile=True, **kw)
    c = compiled_model(m)
    assert c.compiled is not None and c.proven                     # compiled, not fallen back
    torch.testing.assert_close(comp, eager, atol=1e-5, rtol=1e-5)

def test_training_compiled_equals_eager():
    runs = []
    for compile in (False, True):
        torch.manual_seed(0)
        runs.append(Trainer(Small(), cosine_schedule(T=100), data(), batch_size=16, warmup=2, progress=False, device='cpu', compile=compile).fit(steps=3))
    eager, comp = runs
    assert isinstance(comp.net, CompiledModel) and comp.net.compiled is not None and comp.net.proven
    torch.testing.assert_close([l for _, l in comp.history], [l for _, l in eager.history], atol=1e-5, rtol=1e-4)
    for k, v in eager.model.state_dict().items(): torch.testing.assert_close(comp.model.state_dict()[k], v, atol=1e-5, rtol=1e-4)

def test_no_compiler_falls_back_in_one_line():
    "Without a working C++ compiler: one line on stderr, then exactly the eager results, in training and in sampling"
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1])\n"
            "import torch._inductor.config as ic; ic.cpp.cxx = ('/no/such/c++',)\n"
            "from test_compile import Small, data\n"
            "from diffnb.training import Trainer\nfrom diffnb.sampling import sample\nfrom diffnb.schedules import cosine_schedule\n"
            "r = []\n"
            "for c in (False, True):\n"
            "    torch.manual_seed(0)\n"
            "    tr = Trainer(Small(), cosine_schedule(T=100), data(), batch_size=16, progress=False, device='cpu', compile=c).fit(steps=2)\n"
            "    r.append((tr.model.state_dict(), sample(tr.model.eval(), tr.s, (2, 1, 8, 8), steps=3, compile=c, generator=torch.Generator().manual_seed(0))))\n"
            "assert all(torch.equal(v, r[1][0][k]) for k, v in r[0][0].items()) and torch.equal(r[0][1], r[1][1])\n"
            "print('same')\n")
    import os
    r = run([sys.executable, '-c', code, os.path.dirname(__file__)], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0 and r.stdout.strip() == 'same', r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip() and 'No CUDA runtime' not in l]
    assert len(lines) == 2 and all(l.startswith('torch.compile is not available here, running without it (') for l in lines), r.stderr
    assert 'C++ compiler' in lines[0]
