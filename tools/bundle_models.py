"""Write the bundled models' folders (`diffnb/assets/mnist`, `diffnb/assets/mnist-fast`) with their model cards.

Each folder is `model.safetensors`, `config.json` and `README.md` (chapter 4d). This command makes them from the
single-file models that `diffnb_train` + `export_pretrained` or `tools/make_fast_model.py` produce, or -- when given
none -- rewrites the existing folders' records and cards, adding the license of the training data and the scores
the chapters measured (chapter 9's sampler table and chapter 9b's bits per dimension for `mnist`, chapter 13's
comparison for `mnist-fast`), read from `nbs/results/` and `bench/results/`. A maintainer's command: it replaces files
every user of `load_pretrained` gets.

    python tools/bundle_models.py                                  # refresh both cards from nbs/results
    python tools/bundle_models.py --mnist runs/mnist/run.pt       # a retrained model, from its training checkpoint
    python tools/bundle_models.py --mnist-fast /tmp/st.pt          # a new student, from export_student's file
    python tools/bundle_models.py --dest /tmp/assets               # leave the package alone
"""
import argparse, json, statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'nbs'/'results'
DATA = dict(license='cc-by-sa-3.0', datasets=['ylecun/mnist'])

def _mean_sd(vals): return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else float('nan'))

def mnist_scores()->dict:
    "Chapter 9's scores of the bundled model: DPM-Solver++(2M), 10 log-SNR steps, per seed"
    rows = json.loads((RESULTS/'09_evaluation_samplers.json').read_text())['rows']
    r = next(r for r in rows if r['sampler'].startswith('DPM') and r['steps'] == 10 and r['spacing'] == 'logsnr')
    ps = r['per_seed']
    f, cf, acc = _mean_sd([p['fid'] for p in ps]), _mean_sd([p['control_fid'] for p in ps]), _mean_sd([p['accuracy'] for p in ps])
    return {'FID against the 1,000 held-out digits (DPM-Solver++(2M), 10 log-SNR steps, 500 samples per seed, '
            f'{len(ps)} seeds, mean ± sd)': f'{f[0]:.2f} ± {f[1]:.2f}; real held-out digits, same protocol: {cf[0]:.2f} ± {cf[1]:.2f}',
            "recognised as their class by diffnb's digit classifier": f'{100 * acc[0]:.1f}% ± {100 * acc[1]:.1f}',
            'source': 'chapter 9 of the diffnb course (nbs/results/09_evaluation_samplers.json)',
            **likelihood_score()}

def likelihood_score()->dict:
    "Chapter 9b's bits per dimension of the bundled model on the held-out digits (bench/results/likelihood.json)"
    h = json.loads((ROOT/'bench'/'results'/'likelihood.json').read_text())['heldout']
    return {f"bits per dimension of {h['n']} held-out digits (probability-flow ODE, uniform dequantisation; an upper bound)":
            f"{h['bpd']:.3f} ± {h['se']:.3f} (standard error over digits); chapter 9b, bench/results/likelihood.json"}

def fast_scores()->dict:
    "Chapter 13's scores of the progressive student at 1, 2, 4 and 8 steps"
    rows = json.loads((RESULTS/'13_distill_compare.json').read_text())['rows']
    out = {f'FID against the held-out digits, {n} step{"s" * (n > 1)} (mean ± sd over 3 seeds)':
           '{:.2f} ± {:.2f}'.format(*rows[f'progressive, {n}']['fid']) for n in (1, 2, 4, 8)}
    out['source'] = 'chapter 13 of the diffnb course (nbs/results/13_distill_compare.json)'
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--mnist', help="a training checkpoint or model file to bundle as 'mnist'")
    p.add_argument('--mnist-fast', help="a student file (export_student) to bundle as 'mnist-fast'")
    p.add_argument('--dest', default=str(ROOT/'diffnb'/'assets'), help='the folder that holds the model folders')
    a = p.parse_args()
    import torch
    from diffnb.hub import export_pretrained, load_folder, save_pretrained
    for name, src, dtype, scores in (('mnist', a.mnist, None, mnist_scores), ('mnist-fast', a.mnist_fast, torch.float16, fast_scores)):
        dest = Path(a.dest)/name
        if src: export_pretrained(src, dest, dtype=dtype, overwrite=True)
        model, s = load_folder(dest)
        rec = model.record
        save_pretrained(model, s, dest, rec['data'], {**rec['info'], **DATA, 'scores': scores()},
                        dtype=dtype, overwrite=True, name=f'bundled:{name}')
        print(f"{dest}: {sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB")

if __name__ == '__main__': main()
