"""Data of the VAE tasks: scikit-learn's bundled 8x8 digits, binarised, or a local
binarised MNIST.

``digits`` (the default, no download): the 1,797 images of
:func:`sklearn.datasets.load_digits` (pixels 0..16), binarised as ``pixel > 8``, split by a
fixed permutation (``numpy.random.RandomState(0)``) into 1,437 training and 360 test
images of 64 pixels.

A local MNIST (``--data PATH``) in either of two simple formats:

- a ``.npz`` file with arrays ``train`` and ``test`` (``valid`` is ignored), each of shape
  ``[N, 784]`` or ``[N, 28, 28]``.  Values in ``{0, 1}`` are used as they are; other
  values (grey levels in ``[0, 1]`` or ``0..255``) are binarised deterministically at half
  the array's maximum;
- a folder with the text files of the standard binarised MNIST of Larochelle & Murray
  (2011), ``binarized_mnist_train.amat`` and ``binarized_mnist_test.amat``: one image a line,
  784 space-separated ``0``/``1`` values (a ``.amat`` file path may be given for the
  training file; its ``_test`` sibling is used for testing).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["load_dataset", "load_digits_binary", "load_digits_labelled", "load_mnist"]


def load_dataset(data: str) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` float32 arrays of 0/1 pixels, shape ``[N, D]``."""
    if data == "digits":
        return load_digits_binary()
    return load_mnist(data)


@lru_cache(maxsize=1)
def load_digits_binary() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, binarised (``pixel > 8``), fixed 1437/360 split."""
    x = (_digits_pixels() > 8).astype(np.float32)
    perm = np.random.RandomState(0).permutation(len(x))
    n_test = 360
    return x[perm[n_test:]], x[perm[:n_test]]


def _digits_pixels() -> np.ndarray:
    """The 1,797 x 64 pixel values (0..16) of scikit-learn's bundled digits."""
    return _digits_table()[:, :-1]


@lru_cache(maxsize=1)
def _digits_table() -> np.ndarray:
    """The 1,797 x 65 table of scikit-learn's bundled ``digits.csv.gz`` (64 pixels, then the
    digit), read directly when the file is found (importing :mod:`sklearn.datasets` costs
    seconds), else through :func:`sklearn.datasets.load_digits`; the values are the same."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            if data.shape == (1797, 65):
                return data
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.concatenate([digits.data, digits.target[:, None]], axis=1)


@lru_cache(maxsize=1)
def load_digits_labelled() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits for classification: ``(x_train, y_train, x_test, y_test)``
    with pixels scaled to ``[0, 1]`` (float32) and integer digits (int64), the same fixed
    1437/360 split as :func:`load_digits_binary`."""
    table = _digits_table()
    x, y = (table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64)
    perm = np.random.RandomState(0).permutation(len(x))
    n_test = 360
    return x[perm[n_test:]], y[perm[n_test:]], x[perm[:n_test]], y[perm[:n_test]]


def _binarise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    x = x.reshape(len(x), -1)
    if x.size and np.isin(x, (0, 1)).all():
        return x.astype(np.float32)
    top = float(x.max()) if x.size else 1.0
    return (x > top / 2).astype(np.float32)


def _read_amat(path: Path) -> np.ndarray:
    x = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"{path}: expected 0/1 values")
    return x


def load_mnist(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A local binarised MNIST as ``(train, test)``; see the module docstring for formats."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no data at {path}")
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as f:
            missing = [k for k in ("train", "test") if k not in f.files]
            if missing:
                raise ValueError(f"{path}: the .npz needs arrays 'train' and 'test' (missing {missing})")
            train, test = _binarise(f["train"]), _binarise(f["test"])
    else:
        if path.is_dir():
            train_path = path / "binarized_mnist_train.amat"
        else:
            train_path = path
        test_path = train_path.with_name(train_path.name.replace("_train", "_test"))
        if not train_path.is_file() or not test_path.is_file() or train_path == test_path:
            raise ValueError(
                f"{path}: expected a .npz file or binarized_mnist_train.amat and binarized_mnist_test.amat"
            )
        train, test = _read_amat(train_path), _read_amat(test_path)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"{path}: train and test have {train.shape[1]} and {test.shape[1]} pixels")
    return train, test
