"""`make demo`: build an index with the squash CLI and answer plain and filtered queries.

Uses Fashion-MNIST when the Debian package is installed, else a synthetic Gaussian mixture
(said so). Recall is measured against exact (brute-force) search on the same filter.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import squash
from squash.datasets import demo_dataset
from squash.evaluation import exact_knn, recall_at_k

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".local" / "demo"
K = 10


def main() -> int:
    ds = demo_dataset(n_queries=200)
    kind = (
        "synthetic Gaussian mixture (Fashion-MNIST not installed)" if ds.synthetic else "Fashion-MNIST (real)"
    )
    print(f"dataset      {ds.name}: {kind}, {ds.base.shape[0]:,} x {ds.base.shape[1]}")
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(WORK / "vectors.npy", ds.base)
    pq.write_table(ds.attributes, WORK / "attributes.parquet")
    uri = (WORK / "index").as_uri()
    print(f"$ squash build --vectors {WORK / 'vectors.npy'} --attributes ... --index-uri {uri}")
    subprocess.run(
        [sys.executable, "-m", "squash.cli", "build", "--vectors", str(WORK / "vectors.npy"),
         "--attributes", str(WORK / "attributes.parquet"), "--index-uri", uri],
        check=True,
    )  # fmt: skip
    index = squash.open_index(uri)
    label_col = np.asarray(ds.attributes.column("label").to_pylist())
    some_label = str(np.unique(label_col)[1])
    numeric = "brightness" if "brightness" in ds.attributes.column_names else "price"
    values = ds.attributes.column(numeric).to_numpy()
    cut = float(np.quantile(values[label_col == some_label], 0.1))
    queries = {
        "plain": (None, np.ones(len(label_col), bool)),
        f"label = {some_label}": ({"label": some_label}, label_col == some_label),
        f"label = {some_label} and {numeric} < {cut:.3f}": (
            {"label": some_label, numeric: {"$lt": cut}},
            (label_col == some_label) & (values < cut),
        ),
    }
    print(f"\n{ds.queries.shape[0]} queries, k={K}, in-process search")
    for name, (filt, mask) in queries.items():
        started = time.perf_counter()
        res = index.search(ds.queries, k=K, filter=filt)
        ms = (time.perf_counter() - started) * 1e3
        rec = recall_at_k(res.ids, exact_knn(ds.base, ds.queries, mask, K))
        s = res.stats
        print(
            f"\n[{name}]  selectivity {mask.mean():.2%}  recall@{K} {rec:.4f}  "
            f"{ms / len(ds.queries):.2f} ms/query (batch)"
        )
        print(
            "  levels (mean per query): "
            + ", ".join(
                f"{k} {np.mean(s[k]):,.0f}"
                for k in ("partitions", "l0_candidates", "exact_matches", "l2_kept", "l3_kept", "l4_scored")
            )
        )
        print(
            f"  query 0 -> ids {res.ids[0][:5].tolist()} "
            f"distances {np.round(res.distances[0][:5], 1).tolist()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
