#!/usr/bin/env python3
"""Write the endpoints file of the SQUASH stack deployed on LocalStack.

Same format as the local stack's endpoints.json - {"api_url", "s3_endpoint", "lambda_endpoint",
"bucket", "region"} - plus the tree shape ("branching", "depth"), which
tests/integration/test_serverless.py uses to pick the matching test parameters, and a few
names for humans. Run by localstack/start.sh with the project venv (.venv: boto3 and
localstack-client, which builds the CloudFormation client; see ls_session.py).

    python localstack/endpoints.py --stack squash --out .local/localstack-endpoints.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from ls_session import endpoint_url, session

DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


def api_url(endpoint: str, api_id: str) -> str:
    """LocalStack serves an HTTP API ($default stage) at <id>.execute-api.localhost.localstack.cloud;
    that name resolves to 127.0.0.1 through public DNS."""
    url = urlparse(endpoint)
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{api_id}.execute-api.localhost.localstack.cloud{port}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", default="squash")
    ap.add_argument(
        "--endpoint",
        default=os.environ.get("LOCALSTACK_URL") or None,
        help="LocalStack's edge URL (default: $LOCALSTACK_URL, else as localstack-client resolves it: "
        "$AWS_ENDPOINT_URL, $LOCALSTACK_HOST, http://localhost:4566)",
    )
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--bundle", type=Path, default=Path(".aws-sam/localstack/bundle.json"))
    ap.add_argument("--out", type=Path, default=Path(".local/localstack-endpoints.json"))
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for the stack to complete")
    args = ap.parse_args(argv)

    endpoint = endpoint_url(args.endpoint)
    ls = session(endpoint, args.region)
    cf = ls.client("cloudformation")
    deadline = time.monotonic() + args.wait
    while True:
        stack = cf.describe_stacks(StackName=args.stack)["Stacks"][0]
        status = stack["StackStatus"]
        if status in DONE:
            break
        if status.endswith(("FAILED", "ROLLBACK_COMPLETE")) or time.monotonic() > deadline:
            print(f"endpoints: stack {args.stack} is {status}", file=sys.stderr)
            return 1
        time.sleep(2)

    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    match = re.match(r"https?://([^.]+)\.execute-api\.", outputs.get("ApiUrl", ""))
    if match:
        api_id = match.group(1)
    else:  # fall back to the physical id of the HttpApi resource
        try:
            detail = cf.describe_stack_resource(StackName=args.stack, LogicalResourceId="HttpApi")
            api_id = detail["StackResourceDetail"]["PhysicalResourceId"]
        except Exception as exc:  # any failure means the same thing here
            print(f"endpoints: stack {args.stack} has no ApiUrl output nor HttpApi: {exc}", file=sys.stderr)
            return 1
    if "IndexBucket" not in outputs:
        print(f"endpoints: stack {args.stack} has no IndexBucket output", file=sys.stderr)
        return 1
    shape = json.loads(args.bundle.read_text()) if args.bundle.is_file() else {}
    doc = {
        "api_url": api_url(endpoint, api_id),
        "s3_endpoint": ls.client("s3").meta.endpoint_url,
        "lambda_endpoint": ls.client("lambda").meta.endpoint_url,
        "bucket": outputs["IndexBucket"],
        "region": args.region,
        "branching": int(shape["BRANCHING"]) if "BRANCHING" in shape else None,
        "depth": int(shape["DEPTH"]) if "DEPTH" in shape else None,
        "stack": args.stack,
        "coordinator": outputs.get("CoordinatorFunctionName"),
        "worker_prefix": outputs.get("WorkerPrefix"),
        "provider": "localstack",
    }
    doc = {k: v for k, v in doc.items() if v is not None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".endpoints-")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, args.out)
    print(f"endpoints: {args.out}: API {doc['api_url']}, bucket {doc['bucket']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
