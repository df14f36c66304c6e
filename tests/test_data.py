"Loaders, tested offline on data made here: torchvision's file formats, image folders, FakeData."
import gzip, struct
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from diffnb.data import (torchvision_images, image_folder, load_dataset, ConvertedImages, TensorImages, bundled_mnist,
                         save_images, image_grid)

def write_idx(path, arr):
    "Write an array in the IDX format MNIST uses (gzipped, as the download is)"
    dims = arr.shape
    header = struct.pack('>I', 0x0800 + len(dims)) + b''.join(struct.pack('>I', d) for d in dims)
    with gzip.open(path, 'wb') as f: f.write(header + arr.astype(np.uint8).tobytes())

@pytest.mark.parametrize('name,folder', [('mnist', 'MNIST'), ('fashion_mnist', 'FashionMNIST')])
def test_torchvision_loader_offline(tmp_path, name, folder):
    raw = tmp_path/folder/'raw'; raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in [('train', 12), ('t10k', 4)]:
        write_idx(raw/f'{split}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw/f'{split}-labels-idx1-ubyte.gz', rng.integers(0, 10, (n,)))
        for suffix in ('images-idx3-ubyte', 'labels-idx1-ubyte'):   # torchvision reads the unpacked files
            with gzip.open(raw/f'{split}-{suffix}.gz') as f: (raw/f'{split}-{suffix}').write_bytes(f.read())
    ds = torchvision_images(name, root=tmp_path, download=False)
    assert len(ds) == 12 and ds.shape == (1, 28, 28) and ds.n_classes == 10
    x, y = ds[3]
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1 and 0 <= y < 10
    xb, yb = ds.get_batch([0, 1, 2])
    assert xb.shape == (3, 1, 28, 28) and yb.dtype == torch.long
    assert torchvision_images(name, root=tmp_path, train=False, download=False, size=16).shape == (1, 16, 16)

def test_cifar_like_via_fakedata():
    from torchvision.datasets import FakeData
    ds = ConvertedImages(FakeData(size=5, image_size=(3, 32, 32), num_classes=10), classes=[str(i) for i in range(10)], name='fake')
    assert ds.shape == (3, 32, 32) and ds.get_batch([0, 4])[0].shape == (2, 3, 32, 32)
    grey = ConvertedImages(FakeData(size=2, image_size=(3, 32, 32)), channels=1, classes=['a'])
    assert grey.shape == (1, 32, 32)

def test_image_folder(tmp_path):
    for cls, colour in [('cats', (255, 0, 0)), ('dogs', (0, 0, 255))]:
        (tmp_path/cls).mkdir()
        for i in range(3): Image.new('RGB', (50, 40), colour).save(tmp_path/cls/f'{i}.png')
    ds = load_dataset(str(tmp_path), size=24)
    assert ds.classes == ['cats', 'dogs'] and ds.shape == (3, 24, 24) and len(ds) == 6
    x, y = ds[0]
    assert y == 0 and x[0].mean() > 0.9 and x[2].mean() < -0.9   # red, in [-1, 1]
    with pytest.raises(FileNotFoundError, match='image folder not found'): image_folder(tmp_path/'none')

def test_bad_names_and_tensors():
    with pytest.raises(ValueError, match='dataset must be'): load_dataset('imagenet')
    with pytest.raises(ValueError, match='name must be one of'): torchvision_images('svhn', download=False)
    with pytest.raises(ValueError, match=r'images must have shape \(N, C, H, W\)'): TensorImages(torch.zeros(3, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match='labels must have shape'): TensorImages(torch.zeros(3, 1, 2, 2), torch.zeros(4))

def test_save_images(tmp_path):
    x = bundled_mnist().images[:12]
    p = save_images(x, tmp_path/'g.png', nrow=4, scale=2)
    img = Image.open(p)
    g = image_grid(x, nrow=4)
    assert img.size == (g.shape[1] * 2, g.shape[0] * 2)

def test_read_image_bit_depths_and_damage(tmp_path):
    from diffnb.data import read_image, ImageReadError
    Image.fromarray(np.full((5, 4), 1000, dtype=np.uint16)).save(tmp_path/'deep.png')
    assert torch.allclose(read_image(tmp_path/'deep.png'), torch.full((1, 5, 4), 1000 / 65535))
    Image.fromarray(np.full((5, 4), 200, dtype=np.uint8)).save(tmp_path/'grey.png')
    assert torch.allclose(read_image(tmp_path/'grey.png', channels=3), torch.full((3, 5, 4), 200 / 255))
    Image.fromarray(np.zeros((5, 4), dtype=np.float32)).save(tmp_path/'float.tiff')
    with pytest.raises(ImageReadError, match='floating-point images are not supported'): read_image(tmp_path/'float.tiff')
    (tmp_path/'text.png').write_text('not an image')
    with pytest.raises(ImageReadError, match=f"cannot read the image {tmp_path/'text.png'}"): read_image(tmp_path/'text.png')

def test_damaged_file_in_a_folder_read_by_workers(tmp_path):
    "An ImageReadError raised in a DataLoader worker comes back with its own one-line message"
    from diffnb.data import ImageReadError
    (tmp_path/'a').mkdir()
    for i in range(4): Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path/'a'/f'{i}.png')
    (tmp_path/'a'/'3.png').write_bytes((tmp_path/'a'/'3.png').read_bytes()[:100])
    ds = image_folder(tmp_path, size=8)
    with pytest.raises(ImageReadError) as e:
        for _ in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2): pass
    assert str(e.value).startswith(f"cannot read the image {tmp_path/'a'/'3.png'}") and '\n' not in str(e.value)

def test_atomic_write(tmp_path):
    from diffnb.data import atomic_write, clean_stale_temps
    p = atomic_write(tmp_path/'f.bin', lambda f: f.write(b'one'))
    def full_disk(f): f.write(b'tw'); raise OSError(28, 'No space left on device')
    with pytest.raises(OSError, match=f'cannot write {p}: No space left on device'): atomic_write(p, full_disk)
    with pytest.raises(TypeError): atomic_write(p, lambda f: (f.write(b'tw'), f.write(1)))     # any failure halfway
    assert p.read_bytes() == b'one' and sorted(q.name for q in tmp_path.iterdir()) == ['f.bin']
    (tmp_path/'.f.bin.999999999.tmp').write_bytes(b'dead writer'); (tmp_path/f'.f.bin.{__import__("os").getpid()}.tmp').write_bytes(b'me')
    assert [q.name for q in clean_stale_temps(p)] == ['.f.bin.999999999.tmp']

def test_download_gives_up(tmp_path, monkeypatch):
    "A server that accepts and never answers: DownloadError after the timeout, not a hang"
    import socket, time, torchvision.datasets as D
    from diffnb.data import DownloadError
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(4)
    monkeypatch.setattr(D.MNIST, 'mirrors', [f'http://127.0.0.1:{s.getsockname()[1]}/'])
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match='no answer within 0.5 s'): torchvision_images('mnist', root=tmp_path, timeout=0.5)
    assert time.monotonic() - t0 < 30        # 0.5 s for each of the few requests it tries, not a hang
    s.close()
    with pytest.raises(FileNotFoundError, match='mnist is not in'): torchvision_images('mnist', root=tmp_path/'empty', download=False)
