"""Retrain the digit classifier that ships with diffnb (`diffnb/assets/mnist_classifier.pt`): a maintainer's command.

Every FID, KID and class accuracy in the course is measured in the feature space of this classifier
(`diffnb.evaluation.load_classifier`), so replacing it changes every score: rerun the scored tables afterwards
(chapter 9 with `FULL_RUN = True`, `bench/formulations.py`, `bench/peers.py`, `bench/fast_sampling.py`) and
commit them with the new file. The classifier trains on `bundled_mnist('train')` only (4,000 digits) -- never on
the held-out digits that every score compares with -- with `train_classifier`'s defaults (8 epochs, seed 0), in
about a minute on two cores; the script prints its accuracy on the 1,000 held-out digits and records it in the
file. Weights trained by the same code and seed differ slightly with the number of threads, so state it:

    OMP_NUM_THREADS=1 python tools/train_classifier.py                    # writes diffnb/assets/mnist_classifier.pt
    OMP_NUM_THREADS=1 python tools/train_classifier.py --out runs/clf.pt  # or anywhere else, to compare first

Chapter 9 never writes into the package: its `FULL_RUN` demonstration trains a classifier into its own runs/ folder.
"""
import argparse
from pathlib import Path
import torch

def main():
    from diffnb.data import ASSETS, bundled_mnist
    from diffnb.evaluation import train_classifier, save_classifier, class_accuracy
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=str(ASSETS/'mnist_classifier.pt'), help='where to write the classifier')
    p.add_argument('--epochs', type=int, default=8, help='passes over the 4,000 training digits')
    p.add_argument('--seed', type=int, default=0, help='seed of initialisation, order and augmentation')
    a = p.parse_args()
    train_part, held_out = bundled_mnist('train'), bundled_mnist('heldout')
    clf = train_classifier(train_part, epochs=a.epochs, seed=a.seed)
    acc = class_accuracy(clf, held_out.images, held_out.labels)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(clf, out, dict(heldout_accuracy=acc, trained_on="bundled_mnist('train'), 4,000 digits", epochs=a.epochs,
                                   seed=a.seed, threads=torch.get_num_threads()))
    print(f'accuracy on the 1,000 held-out digits: {acc:.1%}; written to {out}')

if __name__ == '__main__': main()
