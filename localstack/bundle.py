#!/usr/bin/env python3
"""Turn the `sam build` output into something CloudFormation can deploy.

Two modes, both reading .aws-sam/build/template.yaml and the built artifact folders:

``package`` (used by ``make sam-deploy``, real AWS)
    Zip every artifact folder - including the worker function inside ``Fn::ForEach`` - upload
    it to ``s3://BUCKET/PREFIX<sha256>.zip`` and write a packaged template that keeps
    ``AWS::LanguageExtensions`` (CloudFormation expands the loop and resolves the ApiAuth switch
    server-side). This replaces ``sam package``, which in SAM CLI 1.170 leaves ``CodeUri``
    inside a ``Fn::ForEach`` whose collection is a ``!Ref`` pointing at the local build folder
    (aws/aws-sam-cli#9117), so CloudFormation would reject the template.

``localstack`` (used by localstack/start.sh)
    Expand the language extensions locally for the given parameters - ``Fn::ForEach`` over
    WorkerPositions, every ``Fn::If`` on a parameter-only condition (so HttpApi Auth is plain
    again) - and drop ``AWS::LanguageExtensions`` from the transforms, because LocalStack's
    CloudFormation may not implement it. Artifacts are zipped into OUT/artifacts/ and the
    template points at ``s3://DEPLOY_BUCKET/<sha256>.zip``; the LocalStack ready hook uploads
    them with awslocal and deploys OUT/template.yaml with OUT/parameters.

Runs with the tools venv (.venv-tools: PyYAML via SAM CLI, boto3, samtranslator).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_dump, yaml_parse

ARTIFACT_PROPERTY = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}
LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"
SAM = "AWS::Serverless-2016-10-31"
FOREACH = "Fn::ForEach::"
NO_VALUE = {"Ref": "AWS::NoValue"}


class BundleError(Exception):
    pass


# --------------------------------------------------------------------------- artifacts
def zip_dir(src: Path, dest: Path) -> str:
    """Deterministic zip of src (sorted entries, fixed timestamps, modes kept); returns its sha256."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if not files:
        raise BundleError(f"{src} is empty: run make sam-build")
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(src)), date_time=(1980, 1, 1, 0, 0, 0))
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as fh:
                zf.writestr(info, fh.read())
    digest = hashlib.sha256()
    with dest.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_slots(resources: dict) -> list[tuple[dict, str]]:
    """(properties dict, property name) of every CodeUri/ContentUri, inside Fn::ForEach too."""
    slots: list[tuple[dict, str]] = []

    def visit(section: dict) -> None:
        for key, value in section.items():
            if isinstance(key, str) and key.startswith(FOREACH):
                if isinstance(value, list) and len(value) == 3 and isinstance(value[2], dict):
                    visit(value[2])
            elif isinstance(value, dict) and value.get("Type") in ARTIFACT_PROPERTY:
                props = value.setdefault("Properties", {})
                name = ARTIFACT_PROPERTY[value["Type"]]
                if name in props:
                    slots.append((props, name))

    visit(resources)
    return slots


def local_path(value: Any, build_dir: Path) -> Path | None:
    if not isinstance(value, str) or value.startswith("s3://"):
        return None
    path = (build_dir / value).resolve()
    if not path.is_dir():
        raise BundleError(f"artifact folder {path} does not exist: run make sam-build")
    return path


def replace_artifacts(template: dict, build_dir: Path, store) -> int:
    """Zip each local artifact folder once and let ``store(zip_path, sha)`` return its S3 URI."""
    cache: dict[Path, str] = {}
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for props, name in artifact_slots(template.get("Resources", {})):
            path = local_path(props[name], build_dir)
            if path is None:
                continue
            if path not in cache:
                zpath = Path(tmp) / f"{path.name}.zip"
                sha = zip_dir(path, zpath)
                cache[path] = store(zpath, sha)
                count += 1
            props[name] = cache[path]
    return count


# --------------------------------------------------------------------------- language extensions
def parameter_values(template: dict, overrides: dict[str, str]) -> dict[str, Any]:
    params = template.get("Parameters", {})
    unknown = set(overrides) - set(params)
    if unknown:
        raise BundleError(f"unknown template parameters: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, spec in params.items():
        raw = overrides.get(name, spec.get("Default"))
        if raw is None:
            raise BundleError(f"parameter {name} has no default: pass {name}=VALUE")
        raw = str(raw)
        allowed = spec.get("AllowedValues")
        if allowed and raw not in [str(a) for a in allowed]:
            raise BundleError(f"{name}={raw!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern and spec.get("Type") == "String" and not re.fullmatch(pattern, raw):
            raise BundleError(f"{name}={raw!r} does not match {pattern}")
        if spec.get("Type") == "CommaDelimitedList":
            values[name] = [item.strip() for item in raw.split(",")]
        else:
            values[name] = raw
    return values


def substitute(node: Any, ident: str, value: str) -> Any:
    """Fn::ForEach substitution: ${ident} and &{ident} in every string, {"Ref": ident}."""
    if isinstance(node, str):
        plain = re.sub(r"[^A-Za-z0-9]", "", value)
        return node.replace("${" + ident + "}", value).replace("&{" + ident + "}", plain)
    if isinstance(node, list):
        return [substitute(item, ident, value) for item in node]
    if isinstance(node, dict):
        if node == {"Ref": ident}:
            return value
        return {substitute(k, ident, value): substitute(v, ident, value) for k, v in node.items()}
    return node


def expand_foreach(section: dict, params: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in section.items():
        if not (isinstance(key, str) and key.startswith(FOREACH)):
            if key in out:
                raise BundleError(f"duplicate key {key} after Fn::ForEach expansion")
            out[key] = value
            continue
        ident, collection, body = value
        if isinstance(collection, dict) and set(collection) == {"Ref"}:
            collection = params[collection["Ref"]]
        if not isinstance(collection, list) or not collection:
            raise BundleError(f"{key}: the collection must be a non-empty list or a CommaDelimitedList Ref")
        for item in collection:
            for k, v in expand_foreach(substitute(body, ident, str(item)), params).items():
                if k in out:
                    raise BundleError(f"duplicate key {k} after expanding {key}")
                out[k] = v
    return out


def evaluate(cond: Any, conditions: dict, params: dict[str, Any], seen: tuple = ()) -> Any:
    """Value of a condition expression over parameters (and literals)."""
    if isinstance(cond, (str, int, float, bool)):
        return str(cond)
    if isinstance(cond, dict) and len(cond) == 1:
        ((fn, arg),) = cond.items()
        if fn == "Ref":
            if arg not in params:
                raise BundleError(f"condition refers to {arg}, which is not a parameter")
            return params[arg]
        if fn == "Condition":
            if arg in seen:
                raise BundleError(f"circular condition {arg}")
            return evaluate(conditions[arg], conditions, params, (*seen, arg))
        if fn == "Fn::Equals":
            a, b = (evaluate(x, conditions, params, seen) for x in arg)
            return a == b
        if fn == "Fn::Not":
            return not evaluate(arg[0], conditions, params, seen)
        if fn == "Fn::And":
            return all(evaluate(x, conditions, params, seen) for x in arg)
        if fn == "Fn::Or":
            return any(evaluate(x, conditions, params, seen) for x in arg)
    raise BundleError(f"cannot evaluate condition {cond!r} locally")


def resolve_if(node: Any, truth: dict[str, bool]) -> Any:
    """Replace every Fn::If by its branch; AWS::NoValue removes the key or list item."""
    if isinstance(node, list):
        items = [resolve_if(item, truth) for item in node]
        return [item for item in items if item != NO_VALUE]
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return resolve_if(yes if truth[name] else no, truth)
        out = {}
        for key, value in node.items():
            value = resolve_if(value, truth)
            if value != NO_VALUE:
                out[key] = value
        return out
    return node


def leftover_extensions(node: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and (
                key.startswith(FOREACH) or key in ("Fn::Length", "Fn::ToJsonString")
            ):
                found.append(f"{where}/{key}")
            found += leftover_extensions(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += leftover_extensions(item, f"{where}/{i}")
    return found


def expand_language_extensions(template: dict, overrides: dict[str, str]) -> tuple[dict, dict[str, Any]]:
    tpl = copy.deepcopy(template)
    params = parameter_values(tpl, overrides)
    for section in ("Conditions", "Resources", "Outputs"):
        if section in tpl:
            tpl[section] = expand_foreach(tpl[section], params)
    conditions = tpl.get("Conditions", {})
    truth = {name: bool(evaluate(expr, conditions, params, (name,))) for name, expr in conditions.items()}
    for section in ("Globals", "Resources", "Outputs"):
        if section in tpl:
            tpl[section] = resolve_if(tpl[section], truth)
    left = leftover_extensions(tpl)
    if left:
        raise BundleError("language extensions this expander does not implement: " + ", ".join(left))
    transforms = tpl.get("Transform", [])
    transforms = [transforms] if isinstance(transforms, str) else list(transforms)
    tpl["Transform"] = [t for t in transforms if t != LANGUAGE_EXTENSIONS] or SAM
    return tpl, params


def sam_translate(template: dict, params: dict[str, Any]) -> dict:
    """Run the SAM transform locally (no AWS calls) to prove the expanded template is valid."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    values = {k: (",".join(v) if isinstance(v, list) else v) for k, v in params.items()}
    values.update({"AWS::Region": "us-east-1", "AWS::AccountId": "000000000000", "AWS::Partition": "aws"})
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="offline", aws_secret_access_key="offline"
    )
    return Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session).translate(
        copy.deepcopy(template), parameter_values=values, get_managed_policy_map=lambda: {}
    )


def tree_positions(branching: int, depth: int) -> list[int]:
    return list(range(sum(branching**i for i in range(depth + 1))))


# --------------------------------------------------------------------------- modes
def cmd_package(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import ClientError

    template = yaml_parse((args.build_dir / "template.yaml").read_text())
    s3 = boto3.client("s3")
    prefix = args.s3_prefix.strip("/") + "/" if args.s3_prefix.strip("/") else ""

    def store(zpath: Path, sha: str) -> str:
        key = f"{prefix}{sha}.zip"
        try:
            s3.head_object(Bucket=args.s3_bucket, Key=key)
            print(f"bundle: s3://{args.s3_bucket}/{key} already uploaded")
        except ClientError:
            print(f"bundle: uploading {zpath.stat().st_size / 1e6:.1f} MB to s3://{args.s3_bucket}/{key}")
            s3.upload_file(str(zpath), args.s3_bucket, key)
        return f"s3://{args.s3_bucket}/{key}"

    n = replace_artifacts(template, args.build_dir, store)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(yaml_dump(template))
    print(f"bundle: {n} artifacts; packaged template {args.output}")
    return 0


def cmd_localstack(args: argparse.Namespace) -> int:
    template = yaml_parse((args.build_dir / "template.yaml").read_text())
    positions = ",".join(str(p) for p in tree_positions(args.branching, args.depth))
    overrides = {
        "ApiAuth": "NONE",  # LocalStack does not check SigV4 on HTTP APIs; the tests send plain HTTP
        "TreeBranching": str(args.branching),
        "TreeDepth": str(args.depth),
        "WorkerPositions": positions,
        "IndexBucketName": args.index_bucket,
        "IndexPrefix": args.index_prefix,
        "LogLevel": args.log_level,
    }
    expanded, params = expand_language_extensions(template, overrides)
    out: Path = args.out
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*.zip"):
        old.unlink()

    def store(zpath: Path, sha: str) -> str:
        zpath.replace(artifacts / f"{sha}.zip")
        return f"s3://{args.deploy_bucket}/{sha}.zip"

    n = replace_artifacts(expanded, args.build_dir, store)
    if not args.no_check:
        translated = sam_translate(expanded, params)
        kinds: dict[str, int] = {}
        for res in translated["Resources"].values():
            kinds[res["Type"]] = kinds.get(res["Type"], 0) + 1
        print("bundle: SAM transform ok: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
    (out / "template.yaml").write_text(yaml_dump(expanded))
    (out / "parameters").write_text("".join(f"{k}={v}\n" for k, v in overrides.items()))
    env = {
        "STACK": args.stack,
        "INDEX_BUCKET": args.index_bucket,
        "DEPLOY_BUCKET": args.deploy_bucket,
        "BRANCHING": str(args.branching),
        "DEPTH": str(args.depth),
    }
    (out / "bundle.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (out / "bundle.json").write_text(json.dumps(env | {"positions": positions}, indent=1) + "\n")
    status = out / "status"
    if status.exists():
        status.unlink()
    print(f"bundle: {n} artifacts, {len(tree_positions(args.branching, args.depth))} workers -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)

    pk = sub.add_parser("package", help="upload artifacts and write a packaged template (real AWS)")
    pk.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    pk.add_argument("--s3-bucket", required=True)
    pk.add_argument("--s3-prefix", default="squash-artifacts/")
    pk.add_argument("--output", type=Path, default=Path(".aws-sam/packaged.yaml"))

    ls = sub.add_parser("localstack", help="expand for LocalStack and stage the artifacts")
    ls.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    ls.add_argument("--out", type=Path, default=Path(".aws-sam/localstack"))
    ls.add_argument("--stack", default="squash")
    ls.add_argument("--branching", type=int, default=4)
    ls.add_argument("--depth", type=int, default=1)
    ls.add_argument("--index-bucket", default="squash-index")
    ls.add_argument("--index-prefix", default="indexes/")
    ls.add_argument("--deploy-bucket", default="squash-deploy")
    ls.add_argument("--log-level", default="INFO")
    ls.add_argument("--no-check", action="store_true", help="skip the local SAM transform check")

    args = ap.parse_args(argv)
    if not (args.build_dir / "template.yaml").is_file():
        print(f"bundle: {args.build_dir}/template.yaml not found: run make sam-build", file=sys.stderr)
        return 2
    try:
        return cmd_package(args) if args.mode == "package" else cmd_localstack(args)
    except BundleError as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
