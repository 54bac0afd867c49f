"""A function as the local Lambda router runs it (the part of template.yaml it needs), as JSON.

Separate from the SQUASH registry (functions.py) so the router can serve any set of functions:
the SQUASH ones from ``stack.py``, toy handlers in the tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    code_dir: str  # absolute path: what /var/task holds on Lambda
    handler: str  # "module.function"
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: int = 30
    memory_mb: int = 128

    @classmethod
    def from_dict(cls, data: dict) -> FunctionSpec:
        return cls(
            name=data["name"],
            code_dir=str(data["code_dir"]),
            handler=data["handler"],
            env={str(k): str(v) for k, v in data.get("env", {}).items()},
            timeout_s=int(data.get("timeout_s", 30)),
            memory_mb=int(data.get("memory_mb", 128)),
        )


def dump(specs: list[FunctionSpec]) -> str:
    return json.dumps([asdict(s) for s in specs], indent=2) + "\n"


def load(path: Path) -> list[FunctionSpec]:
    return [FunctionSpec.from_dict(d) for d in json.loads(Path(path).read_text())]
