"""Fault injection on the Docker-free local stack (loopback only), bounded in count and time.

    python bench/faults.py [--runs 5] [--timeout 10] [--out bench/results]   # `make bench`
    python bench/faults.py --quick                                          # ~2 min, 2 runs each

Starts its own local stack (b=2, l=1: three workers; concurrency cap 2, a short throttle
wait so the cap answers 429 quickly), builds a small index into its moto S3, computes every
query's answer in process, then injects each fault ``runs`` times and classifies every HTTP
answer:

- ``right``: 200 and the same ids as the in-process search (of either build, while the
  manifest is being replaced);
- ``explicit``: a squash error body (``{"error": {"code", "message"}}``), e.g. 504
  ``deadline_exceeded``, 503 ``worker_unavailable``, 500 ``index_corrupt``;
- ``platform``: API Gateway's own answer (``{"message": ...}``): 429 when the coordinator is
  throttled, 500 when the coordinator process died;
- ``no_answer``: nothing within the function timeout (a hang, or the emulator's bare 503
  after 30 s); must be 0;
- ``wrong``: 200 with other ids; must be 0.

Faults: worker killed mid-request (SIGKILL of its runtime), worker stalled (SIGSTOP), throttled
(concurrent bursts over the cap), segment missing / corrupt, router missing / corrupt, S3
frozen (SIGSTOP of the moto server), manifest replaced mid-query (two builds swapped under
running queries), coordinator killed mid-request. Every process stopped is resumed, and the
stack (only processes this script started) is stopped at the end.
Writes ``<out>/faults.json`` and ``<out>/faults.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "infra" / "local" / "stack.py"
RESULTS = Path(__file__).resolve().parent / "results"
INDEX = "faults"
KINDS = ("right", "explicit", "platform", "no_answer", "wrong")


def _http(method: str, url: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"{}")
        except ValueError:
            return err.code, {"raw": raw[:200].decode(errors="replace")}


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Stack:
    """A local stack of our own in a temporary folder, and the index in it."""

    def __init__(self, folder: Path, timeout_s: int, concurrency: int = 2, throttle_wait: float = 0.2):
        self.folder = folder
        self.timeout_s = timeout_s
        cmd = [sys.executable, str(STACK), "up", "--dir", str(folder), "--branching", "2", "--depth", "1"]
        cmd += ["--auth", "none"]  # raw (sometimes malformed) requests; auth is tested elsewhere
        cmd += ["--local-max-mb", "0"]  # a small index, but the faults are the tree's
        cmd += ["--concurrency", str(concurrency), "--throttle-wait", str(throttle_wait)]
        cmd += ["--timeout", str(timeout_s), "--bucket", "faults"]
        subprocess.run(cmd, check=True, timeout=180, capture_output=True)
        self.endpoints = json.loads((folder / "endpoints.json").read_text())
        self.s3_pid = int(self.endpoints["pids"]["s3"])
        self.uri = f"s3://{self.endpoints['bucket']}/indexes/{INDEX}"
        self.env = {
            "AWS_ENDPOINT_URL_S3": self.endpoints["s3_endpoint"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.endpoints["region"],
        }

    def down(self) -> None:
        self.resume_s3()
        cmd = [sys.executable, str(STACK), "down", "--dir", str(self.folder)]
        subprocess.run(cmd, timeout=60, check=False, capture_output=True)

    # -- processes -------------------------------------------------------------------------
    def functions(self) -> dict:
        code, doc = _http("GET", f"{self.endpoints['lambda_endpoint']}/_local/functions", None, 10)
        return doc if code == 200 else {}

    def runtimes(self, function: str, busy: bool | None = None) -> list[int]:
        procs = self.functions().get(function, {}).get("processes", [])
        return [
            p["runtime_pid"] for p in procs if p.get("runtime_pid") and (busy is None or p["busy"] == busy)
        ]

    def kill_all(self, function: str) -> None:
        """SIGKILL every container of ``function`` and wait until each is dead (a zombie at
        least), so the next invocation starts a new one instead of racing the dying one."""
        pids = [p["pid"] for p in self.functions().get(function, {}).get("processes", [])]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)
        until = time.monotonic() + 3
        while time.monotonic() < until and any(_running(pid) for pid in pids):
            time.sleep(0.01)

    def freeze_s3(self) -> None:
        os.kill(self.s3_pid, signal.SIGSTOP)

    def resume_s3(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.s3_pid, signal.SIGCONT)

    # -- S3 objects ----------------------------------------------------------------------------
    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL_S3"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def key(self, name: str) -> str:
        return f"indexes/{INDEX}/{name}"

    def get(self, name: str) -> bytes:
        return self.s3().get_object(Bucket=self.endpoints["bucket"], Key=self.key(name))["Body"].read()

    def put(self, name: str, data: bytes) -> None:
        self.s3().put_object(Bucket=self.endpoints["bucket"], Key=self.key(name), Body=data)

    def delete(self, name: str) -> None:
        self.s3().delete_object(Bucket=self.endpoints["bucket"], Key=self.key(name))

    # -- queries -------------------------------------------------------------------------------
    def query(self, body: dict) -> tuple[int, Any, float]:
        started = time.monotonic()
        url = f"{self.endpoints['api_url']}/indexes/{INDEX}/query"
        try:
            code, doc = _http("POST", url, json.dumps(body).encode(), timeout=self.timeout_s + 35)
        except OSError as exc:  # the client gave up: a hang
            code, doc = 0, {"raw": str(exc)}
        return code, doc, time.monotonic() - started


def classify(code: int, doc: Any, references: list[list[list[int]]]) -> tuple[str, str]:
    """(kind, detail) of one answer; ``references`` are the acceptable id lists."""
    if code == 200:
        ids = [[h["id"] for h in row] for row in doc.get("results", [])]
        return ("right", "200") if ids in references else ("wrong", "200")
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        if err.get("code") and err.get("message"):
            return "explicit", f"{code} {err['code']}"
    if code == 0 or (code == 503 and doc == {"message": "Service Unavailable"}):
        return "no_answer", str(code)
    if code in (429, 500) and isinstance(doc, dict) and set(doc) == {"message"}:
        return "platform", f"{code} {doc['message']}"
    return "wrong", f"{code} {str(doc)[:80]}"


class Suite:
    """The faults, each a function of the run number that returns the answers it produced."""

    def __init__(self, stack: Stack, seed: int = 5, second_build: bool = True):
        import squash
        from squash.build import BuildOptions, build_index
        from squash.datasets import synthetic_mixture

        self.stack = stack
        self.data = synthetic_mixture(n=4000, d=32, n_queries=40, clusters=16, seed=seed)
        build_index(self.data.base, stack.uri, self.data.attributes, BuildOptions(partitions=16, seed=3))
        self.manifest_a = stack.get("manifest.json")
        self.refs_a = self._references(squash.open_index(stack.uri))
        self.manifest_b, self.refs_b, self.manifest = (
            self.manifest_a,
            self.refs_a,
            json.loads(self.manifest_a),
        )
        self.rng = np.random.default_rng(seed)
        if not second_build:
            return
        # A second build for the manifest swap: the same rows in reverse order (so every id, hence
        # every answer, differs from the first build's: an answer mixing the two builds would be
        # neither) and another partitioning. The first build stays in storage (the build before
        # the current one always is).
        order = np.arange(self.data.base.shape[0])[::-1].copy()
        attrs = self.data.attributes.take(order) if self.data.attributes is not None else None
        build_index(
            self.data.base[order], stack.uri, attrs, BuildOptions(partitions=12, seed=9), replace=True
        )
        self.manifest_b = stack.get("manifest.json")
        self.refs_b = self._references(squash.open_index(stack.uri))
        self.manifest = json.loads(self.manifest_b)
        assert self.refs_a["batch"] != self.refs_b["batch"], "the two builds must answer differently"

    def _references(self, index) -> dict[str, list[list[int]]]:
        out = {}
        for name, body in self.bodies().items():
            vectors = np.asarray(body["vectors"], dtype=np.float32)
            res = index.search(vectors, k=body["k"], filter=body.get("filter"))
            out[name] = [[i for i in row if i >= 0] for row in res.ids.tolist()]
        return out

    def bodies(self) -> dict[str, dict]:
        q = self.data.queries
        return {
            "single": {"vectors": q[:1].tolist(), "k": 10},
            "batch": {"vectors": q.tolist(), "k": 10},
            "filtered": {"vectors": q[:8].tolist(), "k": 5, "filter": {"price": {"$lt": 40}}},
        }

    def ask(self, name: str, swapping: bool = False) -> tuple[str, str, float]:
        code, doc, took = self.stack.query(self.bodies()[name])
        refs = [self.refs_b[name]] + ([self.refs_a[name]] if swapping else [])
        kind, detail = classify(code, doc, refs)
        if swapping and kind == "right":  # which build answered (the query pinned one)
            ids = [[h["id"] for h in row] for row in doc["results"]]
            detail = "200 build B" if ids == self.refs_b[name] else "200 build A"
        return kind, detail, took

    def warm(self) -> None:
        for _ in range(2):
            self.ask("batch")

    # -- the faults ----------------------------------------------------------------------------
    def worker_killed(self, run: int) -> list:
        self.warm()
        victim = f"squash-worker-{1 + run % 2}"
        answers: list = []
        thread = threading.Thread(target=lambda: answers.append(self.ask("batch")))
        thread.start()
        killed = False
        deadline = time.monotonic() + 2
        while thread.is_alive() and time.monotonic() < deadline and not killed:
            for pid in self.stack.runtimes(victim, busy=True):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed = True
        thread.join()
        if not killed:  # the query was faster than the kill: the next one meets a dead container
            self.stack.kill_all(victim)
            answers.append(self.ask("batch"))
        return answers

    def worker_stalled(self, run: int) -> list:
        self.warm()
        # the root: every query that uses the tree invokes it (idle subtrees are skipped)
        victim = "squash-worker-0"
        pids = self.stack.runtimes(victim)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            return [self.ask("single")]
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def throttled(self, run: int, clients: int = 8) -> list:
        self.warm()
        answers: list = []
        lock = threading.Lock()

        def one(i: int) -> None:
            out = self.ask("batch" if i % 2 else "filtered")
            with lock:
                answers.append(out)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return answers

    def _file_fault(self, name: str, damage: Callable[[str], None], functions: list[str]) -> list:
        original = self.stack.get(name)
        try:
            damage(name)
            for fn in functions:  # cold containers: they must read the damaged file
                self.stack.kill_all(fn)
            return [self.ask("batch")]
        finally:
            self.stack.put(name, original)
            for fn in functions:  # no container keeps anything read while the file was damaged
                self.stack.kill_all(fn)

    def _corrupt(self, name: str) -> None:
        data = bytearray(self.stack.get(name))
        pos = int(self.rng.integers(0, len(data)))
        data[pos] ^= 0xFF
        self.stack.put(name, bytes(data))

    def segment_missing(self, run: int) -> list:
        seg = self.manifest["segments"][run % len(self.manifest["segments"])]["key"]
        return self._file_fault(seg, self.stack.delete, [f"squash-worker-{i}" for i in range(3)])

    def segment_corrupt(self, run: int) -> list:
        seg = self.manifest["segments"][run % len(self.manifest["segments"])]["key"]
        return self._file_fault(seg, self._corrupt, [f"squash-worker-{i}" for i in range(3)])

    def router_missing(self, run: int) -> list:
        return self._file_fault(self.manifest["router"]["key"], self.stack.delete, ["squash-coordinator"])

    def router_corrupt(self, run: int) -> list:
        return self._file_fault(self.manifest["router"]["key"], self._corrupt, ["squash-coordinator"])

    def s3_frozen(self, run: int) -> list:
        self.warm()
        if run % 2 == 0:  # cold workers and a due manifest check: everything must go to S3
            for i in range(3):
                self.stack.kill_all(f"squash-worker-{i}")
            time.sleep(2.1)
        self.stack.freeze_s3()
        try:
            return [self.ask("single")]
        finally:
            self.stack.resume_s3()

    def manifest_replaced(self, run: int, seconds: float = 2.5) -> list:
        self.warm()
        answers: list = []
        stop = threading.Event()

        def client(name: str) -> None:
            while not stop.is_set():
                answers.append(self.ask(name, swapping=True))

        threads = [threading.Thread(target=client, args=(n,)) for n in ("batch", "filtered")]
        for t in threads:
            t.start()
        end = time.monotonic() + seconds
        flip = run % 2
        while time.monotonic() < end:
            self.stack.put("manifest.json", self.manifest_a if flip else self.manifest_b)
            flip ^= 1
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        self.stack.put("manifest.json", self.manifest_b)
        time.sleep(2.1)  # every coordinator sees build B again
        return answers

    def coordinator_killed(self, run: int) -> list:
        self.warm()
        answers: list = []
        thread = threading.Thread(target=lambda: answers.append(self.ask("batch")))
        thread.start()
        killed = False
        deadline = time.monotonic() + 2
        while thread.is_alive() and time.monotonic() < deadline and not killed:
            for pid in self.stack.runtimes("squash-coordinator", busy=True):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed = True
        thread.join()
        if not killed:
            self.stack.kill_all("squash-coordinator")
        answers.append(self.ask("batch"))  # the client's retry reaches a new container
        return answers


FAULTS = (
    "worker_killed",
    "worker_stalled",
    "throttled",
    "segment_missing",
    "segment_corrupt",
    "router_missing",
    "router_corrupt",
    "s3_frozen",
    "manifest_replaced",
    "coordinator_killed",
)


def run_suite(runs: int = 5, timeout_s: int = 10, faults: tuple[str, ...] = FAULTS, say=print) -> dict:
    """Start a stack, inject every fault ``runs`` times, stop the stack; returns the report."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="squash-faults-") as tmp:
        stack = Stack(Path(tmp) / "stack", timeout_s)
        saved = {k: os.environ.get(k) for k in stack.env}
        os.environ.update(stack.env)
        try:
            suite = Suite(stack)
            report: dict[str, Any] = {}
            for fault in faults:
                outcomes: list = []
                t0 = time.monotonic()
                for run in range(runs):
                    outcomes += getattr(suite, fault)(run)
                times = [took for _, _, took in outcomes]
                counts = Counter(kind for kind, _, _ in outcomes)
                report[fault] = {
                    "runs": runs,
                    "answers": len(outcomes),
                    **{kind: counts.get(kind, 0) for kind in KINDS},
                    "statuses": dict(Counter(detail for _, detail, _ in outcomes)),
                    "p99_s": round(float(np.percentile(times, 99)), 3) if times else None,
                    "max_s": round(max(times), 3) if times else None,
                    "seconds": round(time.monotonic() - t0, 1),
                }
                say(f"{fault:20s} {json.dumps(report[fault])}")
        finally:
            stack.down()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "function_timeout_s": timeout_s,
        "stack": {"branching": 2, "depth": 1, "concurrency": 2, "throttle_wait_s": 0.2},
        "faults": report,
    }


def markdown(doc: dict) -> str:
    lines = [
        f"# Fault injection on the local stack ({doc['started']})",
        "",
        f"b=2, l=1 (3 workers), concurrency cap {doc['stack']['concurrency']} per function, function timeout "
        f"{doc['function_timeout_s']} s. `right` = same ids as the in-process search; `explicit` = a squash "
        "error body; `platform` = API Gateway's own 429/500; `no_answer` and `wrong` must be 0.",
        "",
        "| fault | runs | answers | right | explicit | platform | no answer | wrong | p99 s | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["faults"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        lines.append(
            f"| {name} | {r['runs']} | {r['answers']} | {r['right']} | {r['explicit']} | {r['platform']} "
            f"| {r['no_answer']} | {r['wrong']} | {r['p99_s']} | {statuses} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=10, help="function timeout of the stack, s")
    ap.add_argument("--quick", action="store_true", help="2 runs each")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    runs, timeout = (2 if args.quick else args.runs), args.timeout
    doc = run_suite(runs, timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "faults.md").write_text(markdown(doc))
    print(markdown(doc))
    bad = sum(r["wrong"] + r["no_answer"] for r in doc["faults"].values())
    late = [n for n, r in doc["faults"].items() if r["max_s"] is not None and r["max_s"] >= timeout]
    return 1 if bad or late else 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT / "shared"))
    sys.exit(main())
