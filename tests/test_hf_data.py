"Hugging Face `datasets` as a data source, offline: a dataset made here from the bundled digits, saved with save_to_disk."
import json, sys, time
import numpy as np, pytest, torch
from conftest import run, bin_path

datasets = pytest.importorskip('datasets')
from diffnb.data import bundled_mnist, hf_images, load_dataset, DownloadError

N = 64

@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    "64 bundled digits as a Dataset with an Image column and a ClassLabel column, written by save_to_disk"
    datasets.disable_progress_bars()
    d = bundled_mnist()
    pixels = ((d.images[:N, 0] + 1) * 127.5).round().byte().numpy()
    ds = datasets.Dataset.from_dict({'image': list(pixels), 'label': d.labels[:N].tolist()},
            features=datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=d.classes)}))
    path = tmp_path_factory.mktemp('hf')/'digits'
    ds.save_to_disk(str(path))
    return path, d

def test_load_from_disk(saved):
    path, d = saved
    ds = load_dataset(f'hf:{path}')
    assert len(ds) == N and ds.shape == (1, 28, 28) and ds.classes == d.classes and ds.n_classes == 10
    x, y = ds.get_batch(range(N))
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(y, d.labels[:N])
    torch.testing.assert_close(x, d.images[:N], atol=1e-6, rtol=0)        # scaled exactly like the bundled digits
    small = load_dataset(f'hf:{path}', size=16, channels=3)
    assert small.shape == (3, 16, 16) and small.get_batch([0, 1])[0].shape == (2, 3, 16, 16)

def test_dataset_object_columns_and_splits(tmp_path):
    arrays = datasets.Dataset.from_dict({'pixels': [np.zeros((5, 5), np.uint8), np.full((5, 5), 255, np.uint8)], 'digit': [3, 1]})
    with pytest.raises(ValueError, match="cannot tell which column holds the images"): hf_images(arrays)
    ds = hf_images(arrays, image_column='pixels', label_column='digit')
    assert ds.classes == ['0', '1', '2', '3'] and ds[0][1] == 3 and ds[1][0].min() == 1 and ds[0][0].max() == -1
    arrays = arrays.rename_columns({'pixels': 'img'})
    assert load_dataset(arrays).classes == ['0']                   # found by its name; no label column: one class
    dd = datasets.DatasetDict(train=arrays, test=arrays.select([1]))
    dd.save_to_disk(str(tmp_path/'dd'))
    assert len(load_dataset(f'hf:{tmp_path/"dd"}:test', channels=1)) == 1
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\], not 'valid'"): load_dataset(f'hf:{tmp_path/"dd"}:valid')
    with pytest.raises(ValueError, match='holds one dataset, without splits'): hf_images(arrays, split='train')

def test_hub_name_offline_is_a_clear_error_not_a_wait(tmp_path):
    "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE honoured, and an unreachable Hub fails at once (not after datasets' retries)"
    code = ("from diffnb.data import hf_images\n"
            "try: hf_images('someone/some-images', timeout=2)\n"
            "except OSError as e: print(type(e).__name__, e)\n")
    for env in ({'HF_HUB_OFFLINE': '1'}, {'HF_DATASETS_OFFLINE': '1'}, {'HF_ENDPOINT': 'http://127.0.0.1:9'}):
        t0 = time.monotonic()
        r = run([sys.executable, '-c', code], env={'HF_HOME': str(tmp_path/'cache'), **env})
        assert r.returncode == 0 and r.stdout.startswith('DownloadError could not load the Hugging Face dataset'), r.stdout + r.stderr
        assert ('offline mode is on' in r.stdout) == ('OFFLINE' in next(iter(env))), r.stdout
        assert time.monotonic() - t0 < 30
    r = run([bin_path('diffnb_train'), '--data', 'hf:someone/some-images', '--out', str(tmp_path/'run')],
            env={'HF_HOME': str(tmp_path/'cache'), 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("diffnb_train: error: could not load the Hugging Face dataset 'someone/some-images'") and 'offline mode is on' in r.stderr

def test_train_on_it_through_the_cli(saved, tmp_path):
    path, _ = saved
    out = tmp_path/'run'
    r = run([bin_path('diffnb_train'), '--data', f'hf:{path}', '--preset', 'tiny', '--steps', '3', '--batch-size', '16',
             '--samples', '0', '--workers', '0', '--no-progress', '--device', 'cpu', '--out', str(out)], env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    assert 'done: 3 steps' in r.stdout and f'hf:{path}' in r.stdout
    assert json.loads((out/'summary.json').read_text())['data'] == f'hf:{path}'
    r = run([bin_path('diffnb_train'), '--steps', '4', '--samples', '0', '--workers', '0', '--resume', '--no-progress',
             '--device', 'cpu', '--out', str(out)], env={'OMP_NUM_THREADS': '1'})      # the run's own data, found by its name
    assert r.returncode == 0 and '4 steps (1 in this run' in r.stdout, r.stdout + r.stderr
    r = run([bin_path('diffnb_train'), '--data', f'hf:{path}', '--root', 'x', '--out', str(tmp_path/'r2')])
    assert r.returncode == 2 and '--root do(es) not apply to --data hf:' in r.stderr
