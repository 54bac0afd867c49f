"""A stored index that does not hold together answers 500 index_corrupt with the reason —
not 404 index_not_found, not an unhandled error."""

from __future__ import annotations

import json

import pytest
from conftest import BUCKET, Context, assert_error, http_event, post

from squash.build import BuildOptions, build_index


def _fresh(name: str, runtime_indexes) -> dict:
    """Build index ``name`` and return its manifest document."""
    import boto3

    build_index(runtime_indexes.base[:500], f"s3://{BUCKET}/indexes/{name}", None, BuildOptions(partitions=4))
    obj = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"indexes/{name}/manifest.json")
    return json.loads(obj["Body"].read())


def _put_manifest(name: str, doc: dict) -> None:
    import boto3

    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"indexes/{name}/manifest.json", Body=json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.__setitem__("metric", "bogus"), "metric"),
        (lambda d: d.__setitem__("dims", 17), "dims"),
        (lambda d: d.__setitem__("n", "many"), "n must be"),
        (lambda d: d["segments"].pop(), "segments"),
    ],
    ids=["metric", "dims", "n", "segments"],
)
def test_tampered_manifest_is_index_corrupt(coordinator_app, runtime_indexes, change, reason):
    name = f"tampered-{reason.split()[0]}"
    doc = _fresh(name, runtime_indexes)
    change(doc)
    _put_manifest(name, doc)
    resp = coordinator_app.handler(http_event("GET", f"/indexes/{name}"), Context())
    err = assert_error(resp["statusCode"], json.loads(resp["body"]), 500)
    assert err["code"] == "index_corrupt" and reason in err["message"]
    status, body = post(coordinator_app, name, {"vector": runtime_indexes.queries[0].tolist()})
    assert assert_error(status, body, 500)["code"] == "index_corrupt"


def test_deleted_router_is_index_corrupt_not_not_found(coordinator_app, runtime_indexes):
    import boto3

    doc = _fresh("no-router", runtime_indexes)
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=f"indexes/no-router/{doc['router']['key']}")
    resp = coordinator_app.handler(http_event("GET", "/indexes/no-router"), Context())
    err = assert_error(resp["statusCode"], json.loads(resp["body"]), 500)
    assert err["code"] == "index_corrupt" and "router.arrow" in err["message"] and "missing" in err["message"]
