"""The Docker-free local stack: moto S3 + the Lambda router (RIE) + the HTTP API emulator.

    python infra/local/stack.py up [--dir .local] [--branching 4] [--depth 1] [--bucket squash-local]
                                   [--concurrency 4] [--idle-seconds 300]
    python infra/local/stack.py status | down | env     [--dir .local]

Each server runs detached in its own session (PID files in <dir>/pids/, logs in <dir>/logs/), on a
free port of 127.0.0.1 chosen at start; <dir>/endpoints.json says where. ``up`` on a running stack
of the same shape is a no-op; a different shape (or a half-dead stack) is restarted. ``down``
kills every process of each recorded session and checks none is left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import (
    LOOPBACK,
    free_port,
    pid_alive,
    port_open,
    proc_stat,
    session_members,
    stop_session,
    wait_for_file,
    write_atomic,
)
from rie_pool import LaunchError, find_rie

from functions import COORDINATOR, INDEX_PREFIX, dump, functions

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPONENTS = ("s3", "lambda", "api")  # start order; stopped in reverse
MARKERS = {"s3": "moto.server", "lambda": "lambda_router.py", "api": "http_api.py"}
START_TIMEOUT_S = {"s3": 20.0, "lambda": 15.0, "api": 10.0}
SHAPE_KEYS = (
    "branching",
    "depth",
    "bucket",
    "region",
    "concurrency",
    "idle_seconds",
    "timeout_s",
    "throttle_wait",
    "auth",
    "local_max_mb",
)
#: The access key the local HTTP API accepts with IAM auth (what ``stack.py env`` exports).
LOCAL_KEY = ("testing", "testing")


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says what and where to look."""


def _paths(root: Path) -> dict[str, Path]:
    return {
        "pids": root / "pids",
        "logs": root / "logs",
        "run": root / "run",
        "endpoints": root / "endpoints.json",
        "functions": root / "functions.json",
    }


def read_endpoints(root: Path = Path(".local")) -> dict | None:
    """endpoints.json of a stack, or None when there is none."""
    path = _paths(Path(root).resolve())["endpoints"]
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _recorded(root: Path) -> dict[str, int]:
    out = {}
    for name in COMPONENTS:
        with contextlib.suppress(FileNotFoundError, ValueError):
            out[name] = int((_paths(root)["pids"] / f"{name}.pid").read_text())
    return out


def _is_ours(pid: int, name: str) -> bool:
    """The PID is still the session leader we started (guards against PID reuse)."""
    stat = proc_stat(pid)
    if stat is None or stat[3] != pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return MARKERS[name] in cmdline


def _running(root: Path) -> dict[str, bool]:
    pids = _recorded(root)
    return {
        name: name in pids and pid_alive(pids[name]) and _is_ours(pids[name], name) for name in COMPONENTS
    }


def _spawn(root: Path, name: str, argv: list[str]) -> subprocess.Popen:
    paths = _paths(root)
    log_path = paths["logs"] / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # own session and process group: `down` kills the whole group
        )
    write_atomic(paths["pids"] / f"{name}.pid", f"{popen.pid}\n")
    return popen


def _fail(name: str, root: Path, why: str) -> StackError:
    log_path = _paths(root)["logs"] / f"{name}.log"
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n    ".join(log_path.read_text(errors="replace").splitlines()[-8:])
    return StackError(f"{name} did not start ({why}); see {log_path}\n    {tail}")


def _wait_http(url: str, popen: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.05)
    return False


def _wait_port_file(root: Path, name: str, popen: subprocess.Popen) -> int:
    text = wait_for_file(
        _paths(root)["run"] / f"{name}.port", START_TIMEOUT_S[name], lambda: popen.poll() is None
    )
    if text is None:
        raise _fail(name, root, "exited" if popen.poll() is not None else "timed out")
    return int(text)


def _create_bucket(endpoint: str, bucket: str, region: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, **kwargs)


def up(
    root: Path = Path(".local"),
    branching: int = 4,
    depth: int = 1,
    bucket: str = "squash-local",
    concurrency: int = 4,
    idle_seconds: float = 300.0,
    region: str = "us-east-1",
    say=print,
    timeout_s: int = 30,
    throttle_wait: float = 3.0,
    auth: str = "iam",
    local_max_mb: int | None = None,
) -> dict:
    """Start the stack (or keep the running one when its shape matches); returns endpoints.json.

    ``timeout_s`` is every function's timeout (template.yaml's FunctionTimeout), ``throttle_wait``
    how long an invocation waits for a free process at the concurrency cap before its 429.
    ``auth="iam"`` (the default, as deployed) makes the HTTP API require SigV4 signatures by
    :data:`LOCAL_KEY`; ``"none"`` lets unsigned requests (curl) through. ``local_max_mb``: the
    coordinator searches indexes whose hot tier fits it by itself (None: the template's
    default; 0: every query goes through the worker tree).
    """
    if auth not in ("iam", "none"):
        raise StackError(f'auth must be "iam" or "none", got {auth!r}')
    root = Path(root).resolve()
    paths = _paths(root)
    shape = {
        "branching": branching,
        "depth": depth,
        "bucket": bucket,
        "region": region,
        "concurrency": concurrency,
        "idle_seconds": idle_seconds,
        "timeout_s": timeout_s,
        "throttle_wait": throttle_wait,
        "auth": auth,
        "local_max_mb": local_max_mb,
    }
    current = read_endpoints(root)
    if current and all(_running(root).values()):
        if {k: current.get(k) for k in SHAPE_KEYS} == shape:
            say(f"local stack already up ({root})")
            return current
        say("local stack is up with another shape: restarting it")
    if _recorded(root):
        down(root, say=lambda _msg: None)

    try:  # validates the tree shape before anything starts
        specs = functions(REPO, branching, depth, bucket, timeout_s=timeout_s, local_max_mb=local_max_mb)
    except Exception as exc:  # squash's InputError for a tree it refuses
        raise StackError(f"bad tree shape: {exc}") from exc
    try:
        rie = find_rie(REPO)
    except LaunchError as exc:
        raise StackError(str(exc)) from exc
    if not os.access(rie, os.X_OK):
        raise StackError(f"the RIE binary {rie} is missing or not executable (make tools, or fix SQUASH_RIE)")
    missing = sorted({s.code_dir for s in specs if not (Path(s.code_dir) / "app.py").exists()})
    for code_dir in missing:
        say(f"warning: {code_dir}/app.py does not exist yet; invoking it will fail")
    for key in ("pids", "logs", "run"):
        paths[key].mkdir(parents=True, exist_ok=True)
    for stale in paths["run"].glob("*.port"):
        stale.unlink()
    write_atomic(paths["functions"], dump(specs))

    py = sys.executable
    try:
        s3_port = free_port()
        s3 = _spawn(root, "s3", [py, "-m", "moto.server", "-H", LOOPBACK, "-p", str(s3_port)])
        s3_endpoint = f"http://{LOOPBACK}:{s3_port}"
        if not _wait_http(s3_endpoint + "/", s3, START_TIMEOUT_S["s3"]):
            raise _fail("s3", root, "exited" if s3.poll() is not None else "timed out")
        _create_bucket(s3_endpoint, bucket, region)

        router_argv = [py, str(HERE / "lambda_router.py"), "--functions", str(paths["functions"])]
        router_argv += ["--port-file", str(paths["run"] / "lambda.port"), "--rie", rie]
        router_argv += ["--log-dir", str(paths["logs"] / "lambda"), "--tmp-dir", str(root / "tmp")]
        router_argv += ["--s3-endpoint", s3_endpoint, "--region", region]
        router_argv += ["--concurrency", str(concurrency), "--idle-seconds", str(idle_seconds)]
        router_argv += ["--throttle-wait", str(throttle_wait)]
        router = _spawn(root, "lambda", router_argv)
        lambda_endpoint = f"http://{LOOPBACK}:{_wait_port_file(root, 'lambda', router)}"
        if not _wait_http(lambda_endpoint + "/_local/health", router, START_TIMEOUT_S["lambda"]):
            raise _fail("lambda", root, "no answer on /_local/health")

        api_argv = [py, str(HERE / "http_api.py"), "--lambda-endpoint", lambda_endpoint]
        api_argv += ["--function", COORDINATOR, "--port-file", str(paths["run"] / "api.port")]
        api_argv += ["--auth", auth, "--region", region]
        if auth == "iam":
            api_argv += ["--iam-key", ":".join(LOCAL_KEY)]
        api = _spawn(root, "api", api_argv)
        api_port = _wait_port_file(root, "api", api)
        if not port_open(api_port, timeout=2):
            raise _fail("api", root, "port not accepting connections")
    except BaseException:
        down(root, say=lambda _msg: None)
        raise

    endpoints = {
        "api_url": f"http://{LOOPBACK}:{api_port}",
        "lambda_endpoint": lambda_endpoint,
        "s3_endpoint": s3_endpoint,
        **shape,
        "index_prefix": INDEX_PREFIX,
        "index_uri_prefix": f"s3://{bucket}/{INDEX_PREFIX}",
        "functions": [s.name for s in specs],
        "coordinator": COORDINATOR,
        "dir": str(root),
        "logs": str(paths["logs"]),
        "pids": _recorded(root),
        "started": time.time(),
    }
    write_atomic(paths["endpoints"], json.dumps(endpoints, indent=2) + "\n")
    say(describe(endpoints))
    return endpoints


def env_lines(endpoints: dict) -> list[str]:
    """The shell exports that point boto3 / the squash CLI at the stack."""
    return [
        f"export AWS_ENDPOINT_URL_S3={endpoints['s3_endpoint']}",
        f"export AWS_ENDPOINT_URL_LAMBDA={endpoints['lambda_endpoint']}",
        f"export AWS_ACCESS_KEY_ID={LOCAL_KEY[0]} AWS_SECRET_ACCESS_KEY={LOCAL_KEY[1]}",
        f"export AWS_DEFAULT_REGION={endpoints['region']}",
    ]


def describe(e: dict) -> str:
    workers = len(e["functions"]) - 1
    lines = [
        f"local stack up ({e['dir']})",
        f"  HTTP API  {e['api_url']}  -> {e['coordinator']}  (auth {e.get('auth', 'none')})",
        f"  Lambda    {e['lambda_endpoint']}  {e['coordinator']} + {workers} workers "
        f"(b={e['branching']}, l={e['depth']}; {e['concurrency']} processes max each)",
        f"  S3 (moto) {e['s3_endpoint']}  bucket {e['bucket']}",
        f"  logs      {e['logs']}/",
        "",
        'Point a shell at it (or: eval "$(.venv/bin/python infra/local/stack.py env)"):',
        *(f"  {line}" for line in env_lines(e)),
        f"  .venv/bin/squash build --vectors V.npy --index-uri {e['index_uri_prefix']}NAME",
    ]
    return "\n".join(lines)


def down(root: Path = Path(".local"), say=print) -> None:
    """Stop every process of the stack; idempotent. Raises StackError if one survives SIGKILL."""
    root = Path(root).resolve()
    paths = _paths(root)
    pids = _recorded(root)
    if not pids:
        say(f"local stack not running ({root})")
    left: dict[str, list[int]] = {}
    for name in reversed(COMPONENTS):
        if name not in pids:
            continue
        sid = pids[name]
        # the session outlives its leader (e.g. RIEs of a SIGKILLed router), so look at the session
        if (pid_alive(sid) and _is_ours(sid, name)) or (not pid_alive(sid) and session_members(sid)):
            survivors = stop_session(sid)
            if survivors:
                left[name] = survivors
    if left:
        raise StackError(f"processes survived SIGKILL: {left}")
    for path in [*paths["pids"].glob("*.pid"), *paths["run"].glob("*.port"), paths["endpoints"]]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if pids:
        say(f"local stack stopped ({root}); logs kept in {paths['logs']}/")


def status(root: Path = Path(".local")) -> dict:
    """Which components run, their endpoints and, from the router, per-function process counts."""
    root = Path(root).resolve()
    pids, running = _recorded(root), _running(root)
    out: dict = {"dir": str(root), "components": {}, "endpoints": read_endpoints(root), "functions": None}
    for name in COMPONENTS:
        out["components"][name] = {"pid": pids.get(name), "running": running[name]}
    endpoints = out["endpoints"]
    if endpoints and running["lambda"]:
        with contextlib.suppress(OSError, ValueError):
            url = endpoints["lambda_endpoint"] + "/_local/functions"
            with urllib.request.urlopen(url, timeout=2) as resp:
                out["functions"] = json.loads(resp.read())
    return out


def _print_status(st: dict) -> bool:
    comps = st["components"]
    if not any(c["pid"] for c in comps.values()):
        print(f"local stack not running ({st['dir']})")
        return False
    e = st["endpoints"] or {}
    urls = {"s3": e.get("s3_endpoint"), "lambda": e.get("lambda_endpoint"), "api": e.get("api_url")}
    for name, c in comps.items():
        state = "running" if c["running"] else "DEAD"
        print(f"{name:7s} pid {c['pid']!s:8s} {state:8s} {urls.get(name) or ''}")
    for fn in (st["functions"] or {}).values():
        procs = fn["processes"]
        busy = sum(p["busy"] for p in procs)
        print(
            f"  {fn['name']:24s} invocations {fn['invocations']:5d}  cold starts {fn['cold_starts']:3d}"
            f"  processes {len(procs)} ({busy} busy)  errors {fn['errors']}  throttles {fn['throttles']}"
        )
    return all(c["running"] for c in comps.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "env"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, default=Path(os.environ.get("LOCAL_DIR", ".local")))
        if name == "up":
            p.add_argument("--branching", type=int, default=4)
            p.add_argument("--depth", type=int, default=1)
            p.add_argument("--bucket", default="squash-local")
            p.add_argument("--concurrency", type=int, default=4, help="max processes per function")
            p.add_argument("--idle-seconds", type=float, default=300.0, help="reap idle processes after")
            p.add_argument("--region", default="us-east-1")
            p.add_argument("--timeout", type=int, default=30, help="function timeout, s")
            p.add_argument("--throttle-wait", type=float, default=3.0, help="wait at the cap before a 429")
            p.add_argument(
                "--auth", choices=("iam", "none"), default="iam", help="HTTP API auth (none: unsigned curl)"
            )
            p.add_argument(
                "--local-max-mb",
                type=int,
                default=None,
                help="coordinator alone serves indexes with a hot tier up to this (0: always the tree)",
            )
    args = ap.parse_args(argv)
    try:
        if args.command == "up":
            up(
                args.dir,
                args.branching,
                args.depth,
                args.bucket,
                args.concurrency,
                args.idle_seconds,
                args.region,
                timeout_s=args.timeout,
                throttle_wait=args.throttle_wait,
                auth=args.auth,
                local_max_mb=args.local_max_mb,
            )
        elif args.command == "down":
            down(args.dir)
        elif args.command == "status":
            return 0 if _print_status(status(args.dir)) else 1
        else:
            endpoints = read_endpoints(args.dir)
            if endpoints is None:
                print(f"local stack not running ({Path(args.dir).resolve()})", file=sys.stderr)
                return 1
            print("\n".join(env_lines(endpoints)))
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
