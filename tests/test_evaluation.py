"The evaluation measures from the outside: KID's error against the spread over independent draws, the paired difference, the protocol."
import math
import pytest, torch
from diffnb.evaluation import kid, fid, paired_difference, evaluate, DigitClassifier

def _features(n, g, shift=0.0):
    "A toy feature distribution: non-negative like a ReLU network's features, 32 dimensions"
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    z = torch.randn(n, 16, generator=g, dtype=torch.float64)
    z[:, 0] += shift
    return torch.relu(z @ w / 4)

@pytest.mark.parametrize('shift', [0.0, 0.5])
def test_kid_error_is_the_spread_over_independent_draws(shift):
    # equal set sizes: the case where subsets of the full sets are only permutations and carry no spread
    g = torch.Generator().manual_seed(0)
    draws = [kid(_features(200, g), _features(200, g, shift)) for _ in range(150)]
    vals, errs = torch.tensor([v for v, _ in draws]), torch.tensor([e for _, e in draws])
    spread = vals.std().item()
    assert (errs > 0).all()
    assert 0.8 * spread < errs.mean().item() < 1.6 * spread, (errs.mean().item(), spread)   # the jackknife errs on the safe side
    if shift == 0: assert abs(vals.mean().item()) < 3 * spread / math.sqrt(len(vals))   # unbiased: zero for one distribution

def test_kid_leave_one_out_matches_recomputing():
    g = torch.Generator().manual_seed(1)
    a, b = _features(30, g), _features(25, g, 0.3)
    full, err = kid(a, b)
    ta = torch.tensor([kid(torch.cat([a[:i], a[i + 1:]]), b)[0] for i in range(len(a))], dtype=torch.float64)
    tb = torch.tensor([kid(a, torch.cat([b[:j], b[j + 1:]]))[0] for j in range(len(b))], dtype=torch.float64)
    var = (len(a) - 1) / len(a) * (ta - ta.mean()).pow(2).sum() + (len(b) - 1) / len(b) * (tb - tb.mean()).pow(2).sum()
    assert math.isclose(err, var.sqrt().item(), rel_tol=1e-9)
    with pytest.raises(ValueError, match='at least 3'): kid(a[:2], b)

def test_paired_difference():
    m, sd = paired_difference([1.0, 2.0, 3.5], [0.5, 1.0, 2.0])
    assert math.isclose(m, 1.0) and math.isclose(sd, torch.tensor([0.5, 1.0, 1.5]).std().item())
    m, sd = paired_difference({0: 2.0, 1: 3.0}, {1: 1.0, 0: 1.0, 2: 7.0})   # matched by seed, only the seeds both have
    assert math.isclose(m, 1.5) and math.isclose(sd, math.sqrt(0.5))
    with pytest.raises(ValueError, match='same length'): paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match='two'): paired_difference([1.0], [2.0])

def test_evaluate_reports_kid_error():
    g = torch.Generator().manual_seed(2)
    x, ref = torch.rand(40, 1, 28, 28, generator=g) * 2 - 1, torch.rand(50, 1, 28, 28, generator=g) * 2 - 1
    r = evaluate(x, ref, classifier=DigitClassifier().eval())
    assert r['kid_se'] > 0 and r['n'] == 40 and 'kid_sd' not in r
