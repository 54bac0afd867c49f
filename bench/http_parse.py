"""How long the coordinator takes to turn a 1000 x 784 query body into float32 queries:
JSON text (parse + pydantic model + numpy bulk conversion) and the packed binary wire.

    python bench/http_parse.py [--out bench/results]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import numpy as np

from squash.runtime.requests import parse_body, parse_query


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dims", type=int, default=784)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", help="write http_parse.json here")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (args.queries, args.dims)
    bodies = {
        "json_pixels": rng.integers(0, 256, shape).astype(np.float32),  # Fashion-MNIST-like
        "json_floats": rng.random(shape, dtype=np.float32) * 255,
    }
    rows = {}
    for name, q in bodies.items():
        text = json.dumps({"vectors": q.tolist(), "k": 10})
        rows[name] = {
            "body_mb": round(len(text) / 1e6, 2),
            "ms": _median_ms(lambda t=text: parse_query(parse_body(t)), args.repeats),
        }
    q = bodies["json_floats"]
    packed = {
        "dtype": "float32",
        "shape": list(q.shape),
        "data": base64.b64encode(q.astype("<f4").tobytes()).decode(),
    }
    text = json.dumps({"vectors": packed, "k": 10})
    rows["binary"] = {
        "body_mb": round(len(text) / 1e6, 2),
        "ms": _median_ms(lambda: parse_query(parse_body(text)), args.repeats),
    }
    out = {"queries": args.queries, "dims": args.dims, "parse": rows}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "http_parse.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
