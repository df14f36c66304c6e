"The package installs and imports cleanly, without nbdev, and carries its data and model."
import sys, importlib, pkgutil
from pathlib import Path
import diffnb
from conftest import run

MODULES = sorted(m.name for m in pkgutil.iter_modules(diffnb.__path__) if not m.name.startswith('_'))   # every public module

def test_modules_found():
    assert {'data', 'schedules', 'forward', 'unet', 'training', 'pretrained', 'ddpm', 'ddim', 'cli'} <= set(MODULES), MODULES

def test_imports_without_nbdev():
    code = ('import sys; sys.modules["nbdev"] = None; sys.modules["fastcore.test"] = None\n'
            + '\n'.join(f'import diffnb.{m}' for m in MODULES) + '\nprint("ok")')
    r = run([sys.executable, '-c', code])
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr

def test_every_public_name_is_documented():
    for m in MODULES:
        mod = importlib.import_module(f'diffnb.{m}')
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and getattr(obj, '__module__', '') == mod.__name__:
                assert (obj.__doc__ or '').strip(), f'diffnb.{m}.{name} has no docstring'

def test_assets_ship_with_the_package():
    from diffnb.data import bundled_mnist
    from diffnb.pretrained import pretrained_path, pretrained_info
    d = bundled_mnist(check=True)
    assert len(d) == 5000 and d.n_classes == 10
    for name in ('mnist', 'mnist-fast'):
        folder = pretrained_path(name)
        assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
        assert (folder/'model.safetensors').stat().st_size < 8e6
        assert 'command' in pretrained_info(name) and 'scores' in pretrained_info(name)
    from diffnb.latent import AUTOENCODERS, load_autoencoder
    from diffnb.data import ASSETS
    for name, folder in AUTOENCODERS.items():                # the autoencoder of chapter 12d, in the same folder format
        assert sorted(p.name for p in (ASSETS/folder).iterdir()) == ['README.md', 'config.json', 'model.safetensors']
        vae, scale = load_autoencoder(name)
        assert vae.latent_shape == (4, 8, 8) and scale > 0 and 'scores' in vae.record['info']
    assert not list(Path(diffnb.__file__).parent.glob('assets/*.pt')) or \
        [p.name for p in Path(diffnb.__file__).parent.glob('assets/*.pt')] == ['mnist_classifier.pt']   # no pickled diffusion model ships

def test_version():
    import diffnb
    assert diffnb.__version__.count('.') == 2

def test_the_colab_setup_cell_does_nothing_where_diffnb_is_installed(monkeypatch, tmp_path):
    "Every chapter's first code cell installs the course on Colab; here, with diffnb installed, it must not touch anything"
    import subprocess, os
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root/'tools'))
    import colab
    def refuse(*a, **k): raise AssertionError(f'the setup cell ran {a}')
    monkeypatch.setattr(subprocess, 'run', refuse)
    monkeypatch.chdir(tmp_path)
    exec(compile(colab.SETUP, 'setup-cell', 'exec'), {})
    assert os.getcwd() == str(tmp_path) and not (tmp_path/'diffnb-course').exists()
