"""Data with nulls, lists, timestamps, dates and custom ids, a catalogue of filters over it,
and a reference evaluator written independently of squash (plain Python over row dicts).

Used by the unit, runtime (worker tree) and integration (HTTP on the local stack) tests.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from squash.datasets import synthetic_mixture

N, D, N_QUERIES = 6000, 32, 40
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TAGS = [f"t{i:03d}" for i in range(100)]  # > 63 values: frequent bits and hashed buckets


def dataset(seed: int = 11):
    """(base vectors, queries, attribute table) with every new kind of column."""
    ds = synthetic_mixture(n=N, d=D, n_queries=N_QUERIES, clusters=16, seed=seed)
    rng = np.random.default_rng(seed)
    n = ds.base.shape[0]

    def nulls(values: list, share: float) -> list:
        return [None if rng.random() < share else v for v in values]

    weights = 1.0 / (1 + np.arange(len(TAGS)))  # Zipf-like: a few frequent tags, a long tail
    weights /= weights.sum()
    tags = [list(rng.choice(TAGS, size=rng.integers(0, 5), replace=False, p=weights)) for _ in range(n)]
    nums = [sorted({int(v) for v in rng.integers(0, 8, size=rng.integers(0, 4))}) for _ in range(n)]
    ts = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 365 * 86400, n)]
    days = [date(2024, 1, 1) + timedelta(days=int(v)) for v in rng.integers(0, 120, n)]
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64) * 10 + 7),
            "price": pa.array(nulls(rng.uniform(0, 100, n).round(2).tolist(), 0.1), pa.float64()),
            "year": pa.array(nulls(rng.integers(1990, 2030, n).tolist(), 0.15), pa.int64()),
            "label": pa.array(nulls(rng.choice(["a", "b", "c", "d", "e"], n).tolist(), 0.1), pa.string()),
            "flag": pa.array(nulls((rng.random(n) < 0.5).tolist(), 0.2), pa.bool_()),
            "tags": pa.array(nulls(tags, 0.1), pa.list_(pa.string())),
            "nums": pa.array(nulls(nums, 0.05), pa.list_(pa.int64())),
            "ts": pa.array(nulls(ts, 0.1), pa.timestamp("ms", tz="UTC")),
            "day": pa.array(days, pa.date32()),
        }
    )
    return ds.base, ds.queries, table


def filters(table: pa.Table) -> dict[str, Any]:
    """One filter per operator and type (and their mixes), by name."""
    ids = table.column("id").to_numpy()
    some = ids[::13][:400].tolist()
    epoch = int(T0.timestamp())
    return {
        "gt-skips-nulls": {"price": {"$gt": 50}},
        "exists-false": {"price": {"$exists": False}},
        "exists-and-ne": {"price": {"$exists": True}, "label": {"$ne": "a"}},
        "nin-skips-nulls": {"label": {"$nin": ["a", "b"]}},
        "ne-or-null": {"$or": [{"label": {"$ne": "a"}}, {"label": {"$exists": False}}]},
        "not-range-keeps-nulls": {"$not": {"price": {"$lt": 30}}},
        "field-not": {"year": {"$not": {"$gte": 2000, "$lt": 2010}}},
        "list-eq-frequent": {"tags": "t003"},
        "list-in-rare": {"tags": {"$in": ["t090", "t095", "t071"]}},
        "list-all": {"tags": {"$all": ["t000", "t001"]}},
        "list-nin": {"tags": {"$nin": ["t000"]}},
        "list-null": {"tags": {"$exists": False}},
        "list-ne-and-int-list": {"tags": {"$ne": "t001"}, "nums": {"$in": [3, 4]}},
        "int-list-all": {"nums": {"$all": [1, 2]}},
        "ts-iso-range": {"ts": {"$gte": "2024-03-01T00:00:00Z", "$lt": "2024-06-01"}},
        "ts-epoch": {"ts": {"$lt": epoch + 86400 * 40}},
        "date-gt": {"day": {"$gt": "2024-02-10"}},
        "id-in": {"id": {"$in": some}},
        "id-nin": {"id": {"$nin": some}},
        "id-range": {"id": {"$gte": int(ids[len(ids) // 2])}},
        "bool-and-exists": {"flag": True, "price": {"$exists": True}},
        "bool-null": {"flag": {"$exists": False}},
        "not-list": {"$and": [{"tags": {"$exists": True}}, {"$not": {"tags": {"$in": ["t000", "t001"]}}}]},
        "absent-value": {"label": "never"},
    }


# -- the reference evaluator ------------------------------------------------------------


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def matches(filt: dict[str, Any], table_rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([_doc(filt, r) for r in table_rows], dtype=bool)


def _doc(filt: dict[str, Any], row: dict[str, Any]) -> bool:
    for key, val in filt.items():
        if key == "$and":
            ok = all(_doc(f, row) for f in val)
        elif key == "$or":
            ok = any(_doc(f, row) for f in val)
        elif key == "$not":
            ok = not _doc(val, row)
        else:
            ops = val if isinstance(val, dict) else {"$eq": val}
            ok = all(_test(row.get(key), op, operand) for op, operand in ops.items())
        if not ok:
            return False
    return True


def _instant(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC)
    if isinstance(v, str):
        if len(v) == 10:
            return _instant(date.fromisoformat(v))
        return _instant(datetime.fromisoformat(v.replace("Z", "+00:00")))
    return datetime.fromtimestamp(v, UTC)


def _test(value: Any, op: str, operand: Any) -> bool:
    if op == "$not":
        inner = operand if isinstance(operand, dict) else {"$eq": operand}
        return not all(_test(value, o, v) for o, v in inner.items())
    if op == "$exists":
        return (value is not None) == operand
    if value is None:
        return False
    if isinstance(value, list):
        if op == "$eq":
            return operand in value
        if op == "$ne":
            return operand not in value
        if op == "$in":
            return any(v in value for v in operand)
        if op == "$nin":
            return not any(v in value for v in operand)
        if op == "$all":
            return all(v in value for v in operand)
        raise AssertionError(op)
    if isinstance(value, date):  # datetime is a date too
        value = _instant(value)
        operand = [_instant(v) for v in operand] if isinstance(operand, list) else _instant(operand)
    cmp = {
        "$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b, "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
        "$in": lambda a, b: a in b, "$nin": lambda a, b: a not in b,
    }  # fmt: skip
    return cmp[op](value, operand)


def exact_topk(base: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int) -> list[list[int]]:
    """Row numbers of the k nearest matching rows of each query (float64 L2)."""
    rows_ = np.flatnonzero(mask)
    if rows_.size == 0:
        return [[] for _ in range(queries.shape[0])]
    x = base[rows_].astype(np.float64)
    q = queries.astype(np.float64)
    d = (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :]
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return [rows_[o].tolist() for o in order]


def same_value(got: Any, want: Any) -> bool:
    """Whether an attribute squash returned equals the table's value (timestamps as ISO text)."""
    if isinstance(want, date):
        return got is not None and _instant(got) == _instant(want)
    return got == want
