"""Every route the coordinator serves (its committed OpenAPI document) is routed by the SAM
template's HTTP API, so no endpoint exists only in the handler (upsert and delete once did)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _template_routes() -> set[tuple[str, str]]:
    text = (ROOT / "template.yaml").read_text()
    pairs = re.findall(r"Path: (/\S*)\s*\n\s*Method: (\w+)", text)
    return {(path, method.lower()) for path, method in pairs}


def test_every_openapi_route_is_in_the_template():
    spec = json.loads((ROOT / "functions" / "coordinator" / "openapi.json").read_text())
    served = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    missing = served - _template_routes()
    assert not missing, f"routes the handler serves but template.yaml does not route: {sorted(missing)}"
    assert ("/indexes/{index}/upsert", "post") in served
