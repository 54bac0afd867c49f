#!/usr/bin/env python3
"""Unzipped sizes of the built Lambda artifacts against Lambda's 250 MB limit.

    python infra/package_size.py [.aws-sam/build]            report; exit 1 if over the limit
    python infra/package_size.py --prune [.aws-sam/build]    first drop what the runtime never loads
    python infra/package_size.py --check-imports PYTHON ...  then import the handlers' modules

Lambda counts a function's code plus all of its layers, unzipped, against 262,144,000 bytes
("250 MB"). The report gives the squash layer, every function's own code, the total per
function (code + its layers) and the biggest packages and shared objects inside the layers.

``--prune`` (run by ``make sam-build``) deletes from the built layer what the Lambda runtime
never imports: boto3's stack (the runtime ships boto3/botocore; aws-xray-sdk drags botocore in),
pyarrow's Flight and S3 filesystem libraries, tests, headers and Cython sources, and duplicate
copies of libarrow_python (wheels cannot hold symlinks). What stays is what
``import pyarrow, pyarrow.ipc`` maps: pyarrow.lib links libarrow, libarrow_compute, _acero,
_dataset, _substrait, libparquet and libarrow_python, so those cannot go. ``--check-imports``
runs a python3.12 with only the layer (and optionally a stand-in for the runtime's boto3) on
its path, imports the handler modules and round-trips an Arrow IPC file.

Stdlib only, so it runs with any Python >= 3.9.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 262_144_000  # Lambda: function code + layers, unzipped ("250 MB")
WARN_FRACTION = 0.9
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")

# Relative to a layer's python/ directory. Directory patterns remove the whole tree.
PRUNE_PATTERNS = [
    # In the Lambda Python runtime already; here only because aws-xray-sdk requires botocore.
    # (jmespath stays: aws-lambda-powertools imports it directly.)
    "boto3",
    "boto3-*.dist-info",
    "botocore",
    "botocore-*.dist-info",
    "s3transfer",
    "s3transfer-*.dist-info",
    "urllib3",
    "urllib3-*.dist-info",
    "dateutil",
    "python_dateutil-*.dist-info",
    "six.py",
    "six-*.dist-info",
    # pyarrow: Arrow Flight (RPC) and the S3/GCS/Azure/HDFS filesystems - squash reads S3 with
    # boto3 - plus ORC and the C++ test module. pyarrow.fs still imports without them.
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/flight.py",
    "pyarrow/libarrow_s3.so*",
    "pyarrow/_s3fs.*.so",
    "pyarrow/_gcsfs.*.so",
    "pyarrow/_azurefs.*.so",
    "pyarrow/_hdfs.*.so",
    "pyarrow/_orc.*.so",
    "pyarrow/_dataset_orc.*.so",
    "pyarrow/_pyarrow_cpp_tests.*",
    # Build-time only: headers, Cython sources, tests.
    "pyarrow/include",
    "pyarrow/includes",
    "pyarrow/src",
    "pyarrow/tests",
    "pyarrow/*.pyx",
    "pyarrow/*.pxd",
    "pyarrow/*.pxi",
    # Extension modules link libarrow_python*.so.<major>; the unversioned and full-version
    # files are byte copies of it (symlinks in a source build).
    "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*",
    "pyarrow/libarrow_python_parquet_encryption.so",
    "pyarrow/libarrow_python_parquet_encryption.so.*.*.*",
    "numpy/_core/include",
    "numpy/**/tests",
    "numpy/_pyinstaller",
]

# What the handlers import at cold start, plus an Arrow IPC round trip (pyarrow.ipc).
CHECK_SNIPPET = """
import sys
import numpy as np, pyarrow as pa, pyarrow.ipc
import aws_lambda_powertools, aws_lambda_powertools.event_handler, aws_lambda_powertools.metrics
from aws_lambda_powertools import Logger, Metrics, Tracer
import squash, squash.arrays, squash.runtime.coordinator, squash.runtime.worker
from squash.arrays import from_arrow_bytes, to_arrow_bytes
out = from_arrow_bytes(to_arrow_bytes({"a": np.arange(10, dtype=np.float32)}))
assert float(out["a"].sum()) == 45.0
v = sys.version_info
print(f"imports ok (python {v.major}.{v.minor}, numpy {np.__version__}, pyarrow {pa.__version__})")
"""


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of regular files under path, as zip would store them (symlinks followed)."""
    if path.is_file():
        return path.stat().st_size, 1
    total = files = 0
    for root, _dirs, names in os.walk(path, followlinks=True):
        for name in names:
            p = Path(root, name)
            try:
                total += p.stat().st_size
                files += 1
            except FileNotFoundError:  # dangling symlink: zip would skip it too
                pass
    return total, files


def mb(n: int) -> str:
    return f"{n / 1e6:8.1f} MB"


# --------------------------------------------------------------------------- template
def load_template(build_dir: Path) -> dict:
    """The built template (YAML or JSON). Uses PyYAML when present, else a tiny subset parser
    that is enough to find resource types and CodeUri/ContentUri/Layers."""
    text = (build_dir / "template.yaml").read_text()
    try:
        import yaml  # type: ignore[import-untyped]

        class Loader(yaml.SafeLoader):
            pass

        def any_tag(loader, suffix, node):
            if isinstance(node, yaml.ScalarNode):
                return {suffix: loader.construct_scalar(node)}
            if isinstance(node, yaml.SequenceNode):
                return {suffix: loader.construct_sequence(node, deep=True)}
            return {suffix: loader.construct_mapping(node, deep=True)}

        Loader.add_multi_constructor("!", any_tag)
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    except ImportError:
        return json.loads(text)  # sam build writes YAML; JSON templates also work


def artifacts(build_dir: Path) -> tuple[dict[str, Path], dict[str, Path], dict[str, list[str]]]:
    """Layers and functions (logical id -> built dir) and each function's layer logical ids.

    Functions generated by Fn::ForEach share one body in the template; sam build gives each
    expanded logical id its own directory (Worker0, Worker1, ...), so directories that are not
    a layer are functions."""
    tpl = load_template(build_dir)
    resources = tpl.get("Resources", {})
    layers: dict[str, Path] = {}
    for lid, res in resources.items():
        if isinstance(res, dict) and res.get("Type") in LAYER_TYPES:
            props = res.get("Properties", {})
            uri = props.get("ContentUri") or props.get("Content")
            if isinstance(uri, str) and (build_dir / uri).is_dir():
                layers[lid] = build_dir / uri
    default_layers = [
        ref["Ref"]
        for ref in tpl.get("Globals", {}).get("Function", {}).get("Layers", [])
        if isinstance(ref, dict) and "Ref" in ref
    ]

    def function_layers(props: dict) -> list[str]:
        own = [r["Ref"] for r in props.get("Layers", []) if isinstance(r, dict) and "Ref" in r]
        return default_layers + own  # SAM appends Globals layers to the function's own

    functions: dict[str, Path] = {}
    uses: dict[str, list[str]] = {}
    foreach_layers: list[str] | None = None
    for lid, res in resources.items():
        if lid.startswith("Fn::ForEach::") and isinstance(res, list) and len(res) == 3:
            for body in res[2].values():
                if isinstance(body, dict) and body.get("Type") == "AWS::Serverless::Function":
                    foreach_layers = function_layers(body.get("Properties", {}))
        elif isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function":
            functions[lid] = build_dir / lid
            uses[lid] = function_layers(res.get("Properties", {}))
    layer_dirs = {p.resolve() for p in layers.values()}
    for d in sorted(build_dir.iterdir()):
        if d.is_dir() and d.resolve() not in layer_dirs and d.name not in functions:
            functions[d.name] = d  # an Fn::ForEach expansion (or a function sam renamed)
            uses[d.name] = foreach_layers if foreach_layers is not None else default_layers
    functions = {k: v for k, v in functions.items() if v.is_dir()}
    return layers, functions, uses


# --------------------------------------------------------------------------- prune
def prune_layer(layer_dir: Path) -> int:
    """Delete PRUNE_PATTERNS under <layer>/python; returns bytes removed."""
    root = layer_dir / "python"
    if not root.is_dir():
        return 0
    removed = 0
    for pattern in PRUNE_PATTERNS:
        for path in sorted(set(root.glob(pattern)), key=lambda p: len(p.parts), reverse=True):
            if not path.exists() and not path.is_symlink():
                continue
            size, _ = tree_size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += size
    return removed


def distinct_code_dirs(functions: dict[str, Path]) -> dict[str, Path]:
    """One function per distinct code tree (the Fn::ForEach workers are all the same)."""
    seen: dict[tuple, str] = {}
    for lid, d in sorted(functions.items(), key=lambda kv: (len(kv[0]), kv[0])):
        key = tuple(sorted((str(p.relative_to(d)), p.stat().st_size) for p in d.rglob("*") if p.is_file()))
        seen.setdefault(key, lid)
    return {lid: functions[lid] for lid in seen.values()}


# What the Lambda Python runtime provides besides the standard library.
RUNTIME_PROVIDED = ["boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six", "jmespath"]


def runtime_standin(dest: Path) -> str:
    """A directory holding only boto3 and its dependencies (pure Python), linked from the
    interpreter running this script: the modules the Lambda runtime adds to sys.path."""
    import importlib.util

    dest.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        src = Path(spec.origin)
        src = src.parent if src.name == "__init__.py" else src
        link = dest / src.name
        if not link.exists():
            link.symlink_to(src)
    return str(dest)


def check_imports(
    python: str, layer_dirs: list[Path], runtime_site: str | None, functions: dict[str, Path]
) -> int:
    """For each distinct function: a fresh ``python -I -S`` whose sys.path is the function code,
    the layers and (optionally) the runtime stand-in, as on Lambda; import ``app`` (the handler
    module) and the squash runtime, and round-trip an Arrow IPC file."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "squash",
        "SQUASH_INDEX_BUCKET": "import-check",
        "SQUASH_INDEX_PREFIX": "indexes/",
        "SQUASH_WORKER_PREFIX": "import-check",
        "SQUASH_TREE_BRANCHING": "4",
        "SQUASH_TREE_DEPTH": "1",
    }
    failed = 0
    for lid, code_dir in distinct_code_dirs(functions).items():
        paths = [str(code_dir)] + [str(d / "python") for d in layer_dirs]
        if runtime_site:
            paths.append(runtime_site)
        code = f"import sys; sys.path[:0] = {paths!r}\n"
        if (code_dir / "app.py").is_file():
            code += "import app; assert callable(app.handler)\n"
        code += CHECK_SNIPPET
        proc = subprocess.run([python, "-I", "-S", "-B", "-c", code], env=env, capture_output=True, text=True)
        print(f"{lid}: {proc.stdout.strip() or 'import check failed'}", flush=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            sys.stderr.flush()
            print(f"package_size: import check of {lid} FAILED with {python}", file=sys.stderr)
            failed = 1
    return failed


# --------------------------------------------------------------------------- report
def biggest(root: Path, top: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Top-level entries (packages) and single shared objects by size."""
    entries = sorted(((p.name, tree_size(p)[0]) for p in root.iterdir()), key=lambda x: -x[1])
    sos = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if ".so" in name:
                p = Path(dirpath, name)
                sos.append((str(p.relative_to(root)), p.stat().st_size))
    sos.sort(key=lambda x: -x[1])
    return entries[:top], sos[:top]


def report(build_dir: Path, top: int, as_json: Path | None) -> int:
    layers, functions, uses = artifacts(build_dir)
    if not functions and not layers:
        print(f"package_size: nothing built in {build_dir} (run make sam-build)", file=sys.stderr)
        return 2
    layer_sizes = {lid: tree_size(d) for lid, d in layers.items()}
    out: dict = {"limit_bytes": LIMIT_BYTES, "layers": {}, "functions": {}}

    print(f"Unzipped sizes in {build_dir} (limit: code + layers <= {LIMIT_BYTES:,} bytes per function)\n")
    for lid, (size, files) in layer_sizes.items():
        print(f"layer    {lid:<28} {mb(size)}  {size:>13,} B  {files:>6} files")
        pkgs, sos = biggest(layers[lid] / "python", top) if (layers[lid] / "python").is_dir() else ([], [])
        out["layers"][lid] = {
            "bytes": size,
            "files": files,
            "packages": dict(pkgs),
            "shared_objects": dict(sos),
        }
        if pkgs:
            print("  biggest packages:")
            for name, s in pkgs:
                print(f"    {name:<40} {mb(s)}")
            print("  biggest shared objects:")
            for name, s in sos:
                print(f"    {name:<60} {mb(s)}")
    print()

    worst = 0
    groups: dict[tuple, list[str]] = {}
    for lid, d in sorted(functions.items(), key=lambda kv: (len(kv[0]), kv[0])):
        code, files = tree_size(d)
        total = code + sum(layer_sizes[layer][0] for layer in uses[lid] if layer in layer_sizes)
        worst = max(worst, total)
        out["functions"][lid] = {
            "code_bytes": code,
            "files": files,
            "layers": uses[lid],
            "total_bytes": total,
        }
        groups.setdefault((code, total, tuple(uses[lid])), []).append(lid)
    for (code, total, _layers), names in groups.items():
        label = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)})"
        flag = "OVER" if total > LIMIT_BYTES else ("near" if total > WARN_FRACTION * LIMIT_BYTES else "ok")
        print(
            f"function {label:<28} code {code:>11,} B  + layers = {mb(total)}  "
            f"({100 * total / LIMIT_BYTES:5.1f} % of limit) {flag}"
        )

    out["max_total_bytes"] = worst
    out["headroom_bytes"] = LIMIT_BYTES - worst
    print(
        f"\nlargest function + layers: {worst:,} B ({worst / 2**20:.1f} MiB) of {LIMIT_BYTES:,} B; "
        f"headroom {(LIMIT_BYTES - worst) / 1e6:.1f} MB"
    )
    if as_json:
        as_json.parent.mkdir(parents=True, exist_ok=True)
        as_json.write_text(json.dumps(out, indent=1) + "\n")
    if worst > LIMIT_BYTES:
        print("package_size: OVER Lambda's 250 MB unzipped limit", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir", nargs="?", default=".aws-sam/build", type=Path)
    ap.add_argument("--prune", action="store_true", help="drop what the runtime never loads from the layers")
    ap.add_argument("--check-imports", metavar="PYTHON", help="python3.12 to import the handler modules with")
    ap.add_argument(
        "--runtime-site",
        help="directory standing in for the Lambda runtime's boto3 (default: boto3 & deps linked "
        "from the Python running this script; 'none' for the layer alone)",
    )
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = ap.parse_args(argv)

    if not (args.build_dir / "template.yaml").is_file():
        print(f"package_size: {args.build_dir}/template.yaml not found (run make sam-build)", file=sys.stderr)
        return 2
    layers, functions, _uses = artifacts(args.build_dir)
    if args.prune:
        for lid, d in layers.items():
            freed = prune_layer(d)
            print(f"package_size: pruned {freed / 1e6:.1f} MB from layer {lid}")
    if args.check_imports:
        runtime_site = args.runtime_site
        if runtime_site is None:
            runtime_site = runtime_standin(args.build_dir.parent / "runtime-standin")
        elif runtime_site == "none":
            runtime_site = None
        rc = check_imports(args.check_imports, list(layers.values()), runtime_site, functions)
        if rc:
            return rc
    if args.no_report:
        return 0
    return report(args.build_dir, args.top, args.json)


if __name__ == "__main__":
    sys.exit(main())
