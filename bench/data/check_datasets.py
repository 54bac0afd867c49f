"""Sanity report on the cached datasets, run in the project venv:

    .venv/bin/python bench/data/check_datasets.py [--only manpages,docstrings,mnist]

For each dataset: shapes, every filter's selectivity with its numpy mask checked against
squash's own exact filter evaluation (so both parse and agree), exact duplicate vectors, and
how far queries sit from the documents compared with documents from each other (median
nearest-neighbour distance), which shows whether the queries are out of distribution.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package, not its modules
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json

import numpy as np

from bench.data import cache, loaders
from squash.attribute_build import quantize_attributes
from squash.filter_eval import evaluate, schema_of
from squash.filters import parse_filter


def nearest_distances(
    x: np.ndarray, base: np.ndarray, k: int = 10, skip_self: np.ndarray | None = None
) -> np.ndarray:
    """(len(x), k) ascending L2 distances from each row of ``x`` to its k nearest rows of
    ``base`` (float64, chunked); ``skip_self`` names, per row of x, a base row to ignore."""
    base64 = base.astype(np.float64)
    base_sq = np.einsum("ij,ij->i", base64, base64)
    out = np.empty((x.shape[0], k))
    for start in range(0, x.shape[0], 256):
        q = x[start : start + 256].astype(np.float64)
        d = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ base64.T) + base_sq[None, :]
        if skip_self is not None:
            d[np.arange(q.shape[0]), skip_self[start : start + q.shape[0]]] = np.inf
        part = np.partition(d, k - 1, axis=1)[:, :k]
        out[start : start + q.shape[0]] = np.sqrt(np.maximum(np.sort(part, axis=1), 0.0))
    return out


def check(name: str, sample: int = 2000, seed: int = 0) -> dict:
    ds = loaders.load_cached(name)
    n = ds.base.shape[0]
    print(f"{name}: base {ds.base.shape} {ds.base.dtype}, queries {ds.queries.shape}")
    cols = quantize_attributes(ds.attributes, n)
    report: dict = {"n": n, "queries": int(ds.queries.shape[0]), "filters": {}}
    for label, (filt, mask) in loaders.filters_for(name, ds.attributes).items():
        theirs = evaluate(
            parse_filter(filt, cols.specs, cols.dictionaries), cols.table(), schema_of(cols.specs), "exact"
        )
        agree = bool(np.array_equal(theirs, mask))
        report["filters"][label] = {
            "filter": filt,
            "selectivity": float(mask.mean()),
            "rows": int(mask.sum()),
        }
        rows_s = f"{int(mask.sum()):>5} rows"
        print(f"  {label:>5}: {mask.mean():8.4%} ({rows_s}) squash agrees: {agree}  {json.dumps(filt)}")
        if not agree:
            raise SystemExit(f"{name} {label}: numpy mask and squash's exact evaluation differ")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    doc_nn = nearest_distances(ds.base[rows], ds.base, skip_self=rows)
    q_nn = nearest_distances(ds.queries, ds.base)
    dupes = int((doc_nn[:, 0] < 1e-6).sum())
    mean_d, mean_q = ds.base.mean(axis=0), ds.queries.mean(axis=0)
    spread = float(np.sqrt(((ds.base - mean_d) ** 2).sum(axis=1).mean()))
    report |= {
        "sample": int(rows.size),
        "query_nn1_quantiles_10_50_90": np.quantile(q_nn[:, 0], [0.1, 0.5, 0.9]).round(4).tolist(),
        "doc_nn1_quantiles_10_50_90": np.quantile(doc_nn[:, 0], [0.1, 0.5, 0.9]).round(4).tolist(),
        "query_nn10_median": round(float(np.median(q_nn[:, -1])), 4),
        "doc_nn10_median": round(float(np.median(doc_nn[:, -1])), 4),
        "mean_shift_over_spread": round(float(np.linalg.norm(mean_q - mean_d)) / spread, 4),
        "sampled_docs_with_exact_twin": dupes,
    }
    q_med, d_med = float(np.median(q_nn[:, 0])), float(np.median(doc_nn[:, 0]))
    print(
        f"  median nearest-doc distance: query {q_med:.4f}, doc (to another doc) {d_med:.4f}, "
        f"ratio {q_med / d_med:.2f}; 10th-neighbour {report['query_nn10_median']:.4f} vs "
        f"{report['doc_nn10_median']:.4f}"
    )
    print(
        f"  quantiles 10/50/90 query {report['query_nn1_quantiles_10_50_90']} doc "
        f"{report['doc_nn1_quantiles_10_50_90']}; "
        f"|mean shift| / spread {report['mean_shift_over_spread']:.3f}; "
        f"{dupes} of {rows.size} sampled docs have an exact twin"
    )
    if "kind" in ds.query_attributes.column_names:
        kinds = np.asarray(ds.query_attributes.column("kind").to_pylist())
        per = {str(k): round(float(np.median(q_nn[kinds == k, 0])), 4) for k in np.unique(kinds)}
        report["query_nn1_median_by_kind"] = per
        print(f"  median nearest-doc distance by query kind: {per}")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(cache.DATASETS))
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    out = {}
    for name in (s.strip() for s in args.only.split(",") if s.strip()):
        if not loaders.available(name):
            print(f"{name}: not built (.venv-embed/bin/python bench/data/make_datasets.py --only {name})")
            continue
        out[name] = check(name)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
