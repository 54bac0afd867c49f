"""Datasets for the demo, tests and benchmarks: Fashion-MNIST (real) and a synthetic
Gaussian mixture (labelled synthetic wherever it is reported)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (N, d) float32
    queries: np.ndarray  # (Q, d) float32
    attributes: pa.Table  # one row per base vector
    query_attributes: pa.Table
    synthetic: bool


def _read_idx(path: Path) -> np.ndarray:
    """IDX file (optionally gzipped) as a numpy uint8 array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _image_attributes(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """Class label plus numeric attributes derived from the pixels (for range filters)."""
    flat = images.reshape(images.shape[0], -1).astype(np.float32)
    return pa.table(
        {
            "label": pa.array([FASHION_CLASSES[i] for i in labels], pa.string()),
            "brightness": pa.array(flat.mean(axis=1) / 255.0, pa.float64()),
            "ink": pa.array((flat > 0).sum(axis=1).astype(np.int64), pa.int64()),
        }
    )


def fashion_mnist_available(root: Path = FASHION_MNIST_DIR) -> bool:
    return (root / "train-images-idx3-ubyte.gz").exists()


def load_fashion_mnist(root: Path = FASHION_MNIST_DIR, n_queries: int = 1000) -> Dataset:
    """60k train images as the base set, the first ``n_queries`` test images as queries."""
    train = _read_idx(root / "train-images-idx3-ubyte.gz")
    train_labels = _read_idx(root / "train-labels-idx1-ubyte.gz")
    test = _read_idx(root / "t10k-images-idx3-ubyte.gz")[:n_queries]
    test_labels = _read_idx(root / "t10k-labels-idx1-ubyte.gz")[:n_queries]
    return Dataset(
        name="fashion-mnist",
        base=train.reshape(train.shape[0], -1).astype(np.float32),
        queries=test.reshape(test.shape[0], -1).astype(np.float32),
        attributes=_image_attributes(train, train_labels),
        query_attributes=_image_attributes(test, test_labels),
        synthetic=False,
    )


def synthetic_mixture(
    n: int = 20000, d: int = 64, n_queries: int = 200, clusters: int = 32, seed: int = 0
) -> Dataset:
    """Gaussian mixture with a class label (its cluster), a uniform price and a boolean."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(clusters, d)).astype(np.float32)
    scales = rng.uniform(0.5, 2.0, size=(clusters, 1)).astype(np.float32)
    # A decaying spectrum makes the KLT worth having, as in real embeddings.
    spectrum = (1.0 / np.sqrt(1 + np.arange(d))).astype(np.float32)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.integers(0, clusters, size=m)
        x = centres[c] + rng.normal(size=(m, d)).astype(np.float32) * spectrum * scales[c] * 3
        return x.astype(np.float32), c

    base, labels = draw(n)
    queries, q_labels = draw(n_queries)

    def table(labels: np.ndarray) -> pa.Table:
        m = labels.shape[0]
        return pa.table(
            {
                "label": pa.array([f"c{i:02d}" for i in labels], pa.string()),
                "price": pa.array(rng.uniform(0, 100, size=m), pa.float64()),
                "in_stock": pa.array(rng.random(m) < 0.7, pa.bool_()),
            }
        )

    return Dataset("synthetic-mixture", base, queries, table(labels), table(q_labels), synthetic=True)


def fashion_filters(attrs: pa.Table) -> dict[str, tuple[dict | None, np.ndarray]]:
    """Filters at about 100 %, 50 %, 10 %, 1 % and 0.1 % selectivity on Fashion-MNIST's
    attributes, each with its exact mask (for ground truth)."""
    label = np.asarray(attrs.column("label").to_pylist())
    bright = attrs.column("brightness").to_numpy()
    ink = attrs.column("ink").to_numpy()
    median = float(np.median(bright))
    bag_ink = float(np.quantile(ink[label == "Bag"], 0.9))
    sneaker_dark = float(np.quantile(bright[label == "Sneaker"], 0.01))
    return {
        "none": (None, np.ones(label.shape[0], dtype=bool)),
        "50%": ({"brightness": {"$gte": median}}, bright >= median),
        "10%": ({"label": "Bag"}, label == "Bag"),
        "1%": ({"label": {"$in": ["Bag"]}, "ink": {"$gte": bag_ink}}, (label == "Bag") & (ink >= bag_ink)),
        "0.1%": (
            {"$and": [{"label": "Sneaker"}, {"brightness": {"$lt": sneaker_dark}}]},
            (label == "Sneaker") & (bright < sneaker_dark),
        ),
    }


def demo_dataset(n_queries: int = 1000) -> Dataset:
    """Fashion-MNIST when the Debian package is installed, else a synthetic mixture."""
    if fashion_mnist_available():
        return load_fashion_mnist(n_queries=n_queries)
    return synthetic_mixture(n=60000, d=128, n_queries=n_queries)


def sample_dataset() -> Dataset:
    """The small synthetic set (2,000 x 16) behind the sample events in ``events/``."""
    return synthetic_mixture(n=2000, d=16, n_queries=4, clusters=8, seed=7)
