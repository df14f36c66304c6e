"Model folders (safetensors + config.json + model card) from the outside: the bundled models, round trips, refusals, the Hub offline, the command line."
import json, os, time
from pathlib import Path
import pytest, torch
from diffnb.hub import (save_pretrained, from_pretrained, load_folder, export_pretrained, push_to_hub, read_record,
                        WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
from diffnb.checkpoint import CheckpointError, load_model
from diffnb.pretrained import load_pretrained, pretrained_path
from diffnb.schedules import cosine_schedule
from diffnb.training import NoisePrediction, Trainer
from diffnb.unet import UNet
from diffnb.sampling import sample
from diffnb.data import bundled_mnist
from conftest import run, bin_path

EXPORT, SAMPLE = bin_path('diffnb_export'), bin_path('diffnb_sample')
g = lambda: torch.Generator().manual_seed(0)

def tiny():
    return UNet(channels=(8, 16), attn_levels=(), n_classes=10)

def test_bundled_models_are_folders_that_load_without_pickle(monkeypatch):
    def no_pickle(*a, **k): raise AssertionError('torch.load was called')
    monkeypatch.setattr(torch, 'load', no_pickle)
    for name in ('mnist', 'mnist-fast'):
        model, s = load_pretrained(name)
        rec = read_record(pretrained_path(name))
        assert rec['format'] == 'diffnb-model' and rec['model_config']['class'] == type(model).__name__
        assert model.sample_shape == (1, 28, 28) and model.n_classes == 10
        card = (pretrained_path(name)/CARD_NAME).read_text()
        assert card.startswith('---\nlibrary_name: diffnb\nlicense: cc-by-sa-3.0\n') and '## Scores' in card

def test_round_trip_same_weights_same_samples(tmp_path):
    m, s = tiny().eval(), cosine_schedule(T=100)
    f = save_pretrained(m, NoisePrediction(s), tmp_path/'m', data=dict(name='digits', shape=[1, 12, 12]))
    m2, s2 = from_pretrained(f)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    assert m2.sample_shape == (1, 12, 12) and s2.config == s.config
    y = torch.arange(3)
    assert torch.equal(sample(m, s, (3, 1, 12, 12), steps=4, y=y, generator=g()), sample(m2, s2, (3, 1, 12, 12), steps=4, y=y, generator=g()))
    with pytest.raises(FileExistsError): save_pretrained(m, s, f)
    save_pretrained(m2, s2, f, overwrite=True)               # what load returned saves again, formulation included
    assert read_record(f)['formulation']['kind'] == 'ddpm'

def test_a_dataset_gives_the_record_its_name_shape_and_classes(tmp_path):
    digits = bundled_mnist('train')
    f = save_pretrained(tiny(), cosine_schedule(T=100), tmp_path/'m', data=digits)
    rec = read_record(f)['data']
    assert rec == dict(name=digits.name, shape=[1, 28, 28], classes=list(digits.classes))
    assert from_pretrained(f)[0].sample_shape == (1, 28, 28)

def test_half_precision_halves_the_file(tmp_path):
    m, s = tiny(), cosine_schedule(T=100)
    full = save_pretrained(m, s, tmp_path/'a', data=dict(shape=[1, 8, 8]))
    half = save_pretrained(m, s, tmp_path/'b', data=dict(shape=[1, 8, 8]), dtype=torch.float16)
    ratio = (half/WEIGHTS_NAME).stat().st_size / (full/WEIGHTS_NAME).stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    m2, _ = from_pretrained(half)
    assert next(m2.parameters()).dtype == torch.float32
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()): assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)

def test_refusals(tmp_path):
    m, s = tiny(), cosine_schedule(T=100)
    f = save_pretrained(m, s, tmp_path/'m', data=dict(shape=[1, 8, 8]))
    rec = json.loads((f/CONFIG_NAME).read_text())
    rec['model_config']['config']['channels'] = [30_000, 60_000]            # asks for billions of parameters
    (f/CONFIG_NAME).write_text(json.dumps(rec))
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match='asks for more than'): load_folder(f)
    assert time.monotonic() - t0 < 10
    import pickle
    (f/WEIGHTS_NAME).write_bytes(pickle.dumps({'a': 1}))                    # a pickle where the tensors should be
    save_json = dict(rec); save_json['model_config']['config']['channels'] = [8, 16]
    (f/CONFIG_NAME).write_text(json.dumps(save_json))
    with pytest.raises(CheckpointError, match='not a readable safetensors file'): load_folder(f)
    (f/CONFIG_NAME).write_text('{"format": "diffnb-model", ')
    with pytest.raises(CheckpointError, match='not valid JSON'): load_folder(f)
    with pytest.raises(TypeError, match='cannot be stored'):
        save_pretrained(m, s, tmp_path/'x', data=dict(shape=[1, 8, 8]), info={'w': torch.ones(2)})
    with pytest.raises(ValueError, match="shape is unknown"): save_pretrained(m, s, tmp_path/'y')
    with pytest.raises(FileNotFoundError, match='no model folder'): from_pretrained(tmp_path/'missing'/'deeper')

def test_hub_offline_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match='HF_HUB_OFFLINE is set'): from_pretrained('someone/some-model', cache_dir=tmp_path)
    with pytest.raises(ConnectionError, match='HF_HUB_OFFLINE'): push_to_hub(tiny(), cosine_schedule(T=10), 'someone/x')
    assert time.monotonic() - t0 < 5

def test_a_cached_hub_model_loads_offline(tmp_path, monkeypatch):
    "A repository already in huggingface_hub's cache loads with HF_HUB_OFFLINE=1 (the cache laid out as the Hub's client writes it)"
    src = pretrained_path('mnist')
    snap = tmp_path/'models--someone--digits'/'snapshots'/('0' * 40)
    snap.mkdir(parents=True)
    for n in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME): (snap/n).write_bytes((src/n).read_bytes())
    (tmp_path/'models--someone--digits'/'refs').mkdir()
    (tmp_path/'models--someone--digits'/'refs'/'main').write_text('0' * 40)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model, s = from_pretrained('someone/digits', cache_dir=tmp_path)
    assert model.config == load_pretrained()[0].config

def test_push_to_hub_uploads_the_folder(monkeypatch):
    import huggingface_hub
    seen = {}
    class FakeApi:
        def __init__(self, token=None): seen['token'] = token
        def whoami(self): return {'name': 'me'}
        def create_repo(self, repo_id, private=False, exist_ok=False): seen['repo'] = (repo_id, private)
        def upload_folder(self, repo_id, folder_path, commit_message):
            seen['files'] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return f'https://huggingface.co/{repo_id}/commit/abc'
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    model, s = load_pretrained()
    url = push_to_hub(model, s, 'me/digits', private=True, token='t')
    assert url.endswith('/commit/abc') and seen['repo'] == ('me/digits', True) and seen['token'] == 't'
    assert sorted(seen['files']) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    assert b"from_pretrained('me/digits')" in seen['files'][CARD_NAME]
    class NotLoggedIn(FakeApi):
        def whoami(self): raise OSError('401 Unauthorized')
    monkeypatch.setattr(huggingface_hub, 'HfApi', NotLoggedIn)
    with pytest.raises(PermissionError, match='huggingface-cli login'): push_to_hub(model, s, 'me/digits')

@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp('run')
    data = bundled_mnist('train')
    tr = Trainer(UNet(channels=(8, 16), attn_levels=(), n_classes=10), NoisePrediction(cosine_schedule()), data,
                 batch_size=8, progress=False, ckpt_path=d/'run.pt', device='cpu')
    tr.fit(steps=3)
    tr.save()
    return d/'run.pt'

def test_export_then_sample_on_the_command_line(checkpoint, tmp_path):
    folder = tmp_path/'model'
    r = run([EXPORT, str(checkpoint), str(folder), '--license', 'mit'])
    assert r.returncode == 0, r.stderr
    assert 'license: mit' in (folder/CARD_NAME).read_text() and read_record(folder)['info']['steps'] == 3
    m1, s1 = load_model(checkpoint)
    m2, s2 = from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    r = run([SAMPLE, '--checkpoint', str(folder), '--n', '4', '--steps', '3', '--out', str(tmp_path/'s.png'), '--no-progress'])
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path/'s.pt', weights_only=True)['samples'].shape == (4, 1, 28, 28)
    r = run([EXPORT, str(checkpoint), str(folder)])
    assert r.returncode == 2 and 'already holds a model' in r.stderr and len(r.stderr.strip().splitlines()) == 1

@pytest.mark.parametrize('args, message', [
    (['--raw'], '--raw needs a training checkpoint'),
    (['--out', '{folder}/config.json'], 'is the model folder'),
])
def test_sample_from_a_folder_refuses(checkpoint, tmp_path, args, message):
    folder = tmp_path/'model'
    export_pretrained(checkpoint, folder)
    args = [a.format(folder=folder) for a in args]
    r = run([SAMPLE, '--checkpoint', str(folder), '--n', '2', '--steps', '2', '--no-progress', '--force'] +
            (args if '--out' in args else args + ['--out', str(tmp_path/'s.png')]))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

def test_a_hub_id_offline_on_the_command_line(tmp_path):
    r = run([SAMPLE, '--checkpoint', 'someone/not-cached', '--n', '1', '--out', str(tmp_path/'s.png'), '--no-progress'],
            env={'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path/'cache')}, timeout=60)
    assert r.returncode == 2 and 'HF_HUB_OFFLINE is set' in r.stderr, r.stderr

def test_what_cannot_be_told_apart_is_refused(tmp_path):
    "A distilled student's schedule that lost its record (a copy made by .to()) must not be saved as a plain DDPM schedule"
    model, s = load_pretrained('mnist-fast')
    save_pretrained(model, s, tmp_path/'ok')                       # what loading returned: its formulation is known
    assert read_record(tmp_path/'ok')['formulation']['kind'] == 'progressive'
    with pytest.raises(TypeError, match='cannot tell what a StudentSchedule was trained with'):
        save_pretrained(model, s.to('cpu'), tmp_path/'bad')
