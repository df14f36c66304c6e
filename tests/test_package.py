"The package installs and imports cleanly, without nbdev, and carries its data and model."
import sys, importlib, pkgutil
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
    assert pretrained_path('mnist').stat().st_size < 5e6
    assert 'command' in pretrained_info('mnist')

def test_version():
    import diffnb
    assert diffnb.__version__.count('.') == 2
