"""Load the cached real datasets (made by make_datasets.py) as ``squash.datasets.Dataset`` and
give each a ladder of filters at about 100 %, 50 %, 10 %, 1 % and 0.1 % selectivity.

Every filter comes with its exact mask computed here with numpy, independently of squash's
filter code, so ground truth does not share a bug with the engine under test. Thresholds are
quantiles of the loaded attributes, so the ladder holds for any ``--max-docs`` cap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package, not its modules
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import cache
from squash.datasets import Dataset

Filters = dict[str, tuple[dict | None, np.ndarray]]


def available(name: str) -> bool:
    """True when ``name`` is fully built in the cache (make_datasets.py writes meta.json last)."""
    return name in cache.DATASETS and cache.is_complete(name)


def meta(name: str) -> dict:
    return json.loads((cache.dataset_dir(name) / cache.META).read_text())


def load_cached(name: str, n_queries: int | None = None) -> Dataset:
    """The cached dataset ``name``; ``n_queries`` keeps the first queries (they were shuffled
    when made, so any prefix is a fair sample). Raises FileNotFoundError when not built."""
    if not available(name):
        raise FileNotFoundError(
            f"dataset {name!r} is not in {cache.dataset_dir(name)}; make it with "
            f".venv-embed/bin/python bench/data/make_datasets.py --only {name}"
        )
    root = cache.dataset_dir(name)
    base = np.load(root / "base.npy")
    queries = np.load(root / "queries.npy")
    attributes = pq.read_table(root / "attributes.parquet")
    query_attributes = pq.read_table(root / "query_attributes.parquet")
    if attributes.num_rows != base.shape[0] or query_attributes.num_rows != queries.shape[0]:
        raise ValueError(f"dataset {name!r} in {root} is inconsistent: rebuild it with --force")
    if n_queries is not None:
        queries = queries[:n_queries]
        query_attributes = query_attributes.slice(0, queries.shape[0])
    return Dataset(
        name=name,
        base=np.ascontiguousarray(base, np.float32),
        queries=np.ascontiguousarray(queries, np.float32),
        attributes=attributes.combine_chunks(),
        query_attributes=query_attributes.combine_chunks(),
        synthetic=False,
    )


# ---------------------------------------------------------------- filters


def _strings(attrs: pa.Table, column: str) -> np.ndarray:
    return np.asarray(attrs.column(column).to_pylist(), dtype=object)


def _numbers(attrs: pa.Table, column: str) -> np.ndarray:
    return attrs.column(column).to_numpy()


def _at_least(values: np.ndarray, within: np.ndarray, want: int) -> int | float:
    """The t for which about ``want`` rows of ``within`` have ``values >= t`` (ties go over);
    a Python int for integer columns so the filter JSON keeps the column's type."""
    vals = np.sort(values[within])[::-1]
    if vals.size == 0:
        return _py(values.max() + 1) if values.size else 0
    return _py(vals[min(max(want, 1), vals.size) - 1])


def _py(v: np.generic | float) -> int | float:
    return int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else float(v)


def _fill_to(values: np.ndarray, have: np.ndarray, want: int) -> int | float:
    """The t that makes ``have | (values >= t)`` about ``want`` rows (for an ``$or``)."""
    return _at_least(values, ~have, max(want - int(have.sum()), 1))


def _packages_to(labels: np.ndarray, want: int) -> list[str]:
    """Categories, largest first, greedily packed up to ``want`` rows (ties by name)."""
    names, counts = np.unique(labels, return_counts=True)
    picked, total = [], 0
    for i in sorted(range(names.size), key=lambda i: (-counts[i], names[i])):
        if total + counts[i] <= want:
            picked.append(str(names[i]))
            total += int(counts[i])
    return picked


def _manpages_filters(attrs: pa.Table) -> Filters:
    n = attrs.num_rows
    section = _strings(attrs, "section")
    heading = _strings(attrs, "heading")
    length = _numbers(attrs, "length")
    position = _numbers(attrs, "position")
    year = _numbers(attrs, "year")
    sys_lib = np.isin(section, ["2", "3"])
    t50 = _fill_to(length, sys_lib, n // 2)
    files_admin = np.isin(section, ["5", "8"])
    # position <= t is -position >= -t
    t10 = -_at_least(-position, files_admin, n // 10)
    examples = heading == "EXAMPLES"
    t1 = _at_least(length, examples, n // 100)
    dated_old = (year > 0) & (year < 2010)
    t01 = _at_least(length, dated_old, max(n // 1000, 1))
    return {
        "none": (None, np.ones(n, dtype=bool)),
        "50%": (
            {"$or": [{"section": {"$in": ["2", "3"]}}, {"length": {"$gte": t50}}]},
            sys_lib | (length >= t50),
        ),
        "10%": (
            {"section": {"$in": ["5", "8"]}, "position": {"$lte": t10}},
            files_admin & (position <= t10),
        ),
        "1%": ({"heading": "EXAMPLES", "length": {"$gte": t1}}, examples & (length >= t1)),
        "0.1%": (
            {"$and": [{"year": {"$gt": 0, "$lt": 2010}}, {"length": {"$gte": t01}}]},
            dated_old & (length >= t01),
        ),
    }


def _docstrings_filters(attrs: pa.Table) -> Filters:
    n = attrs.num_rows
    package = _strings(attrs, "package")
    origin = _strings(attrs, "origin")
    kind = _strings(attrs, "kind")
    length = _numbers(attrs, "length")
    lineno = _numbers(attrs, "lineno")
    function = kind == "function"
    # lineno < t is -lineno >= -t + 1 on integers: take t one past the threshold row.
    t50 = -_fill_to(-lineno, function, n // 2) + 1
    packages = _packages_to(package[~np.isin(package, ["sympy"])], n // 10)
    stdlib_class = (origin == "stdlib") & (kind == "class")
    t1 = _at_least(length, stdlib_class, n // 100)
    module = kind == "module"
    t01 = _at_least(length, module, max(n // 1000, 1))
    return {
        "none": (None, np.ones(n, dtype=bool)),
        "50%": ({"$or": [{"kind": "function"}, {"lineno": {"$lt": t50}}]}, function | (lineno < t50)),
        "10%": ({"package": {"$in": packages}}, np.isin(package, packages)),
        "1%": (
            {"origin": "stdlib", "kind": "class", "length": {"$gte": t1}},
            stdlib_class & (length >= t1),
        ),
        "0.1%": ({"kind": {"$in": ["module"]}, "length": {"$gte": t01}}, module & (length >= t01)),
    }


def _mnist_filters(attrs: pa.Table) -> Filters:
    n = attrs.num_rows
    label = _strings(attrs, "label")
    bright = _numbers(attrs, "brightness")
    ink = _numbers(attrs, "ink")
    median = float(np.median(bright))
    zero, eight, one = label == "0", label == "8", label == "1"
    t0 = _at_least(ink, zero, n // 200)
    t8 = _at_least(ink, eight, n // 200)
    t01 = _at_least(bright, one, max(n // 1000, 1))
    return {
        "none": (None, np.ones(n, dtype=bool)),
        "50%": ({"brightness": {"$gte": median}}, bright >= median),
        "10%": ({"label": "7"}, label == "7"),
        "1%": (
            {"$or": [{"label": "0", "ink": {"$gte": t0}}, {"label": "8", "ink": {"$gte": t8}}]},
            (zero & (ink >= t0)) | (eight & (ink >= t8)),
        ),
        "0.1%": ({"$and": [{"label": "1"}, {"brightness": {"$gte": t01}}]}, one & (bright >= t01)),
    }


_FILTERS = {"manpages": _manpages_filters, "docstrings": _docstrings_filters, "mnist": _mnist_filters}


def filters_for(name: str, attrs: pa.Table) -> Filters:
    """Filters at about 100 %, 50 %, 10 %, 1 % and 0.1 % selectivity on dataset ``name``'s
    attributes, each with its exact boolean mask (ground truth for filtered recall)."""
    if name not in _FILTERS:
        raise KeyError(f"no filters for dataset {name!r}; known: {', '.join(_FILTERS)}")
    return _FILTERS[name](attrs)


def main() -> int:
    """Print each available dataset's shape and its filters' actual selectivities."""
    for name in cache.DATASETS:
        if not available(name):
            print(f"{name}: not built")
            continue
        ds = load_cached(name)
        cols = ", ".join(ds.attributes.column_names)
        print(f"{name}: base {ds.base.shape}, queries {ds.queries.shape}, attributes: {cols}")
        for label, (filt, mask) in filters_for(name, ds.attributes).items():
            print(f"  {label:>5}: {mask.mean():8.4%} ({int(mask.sum())} rows)  {json.dumps(filt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
