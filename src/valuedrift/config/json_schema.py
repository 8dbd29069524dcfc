"""The JSON Schema of ``params.yaml``, generated from the schema dataclasses (pydantic ``TypeAdapter``).

Published as ``docs/params.schema.json`` (``valuedrift params-schema``) so that editors validate and
complete params files; a test checks the committed file is up to date. Every object is closed
(``additionalProperties: false``), as the parser rejects unknown keys. The parser
(:mod:`valuedrift.config.load`) stays the authority: ranges and cross-checks live there and in the
section ``validate`` methods, with errors that name the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from valuedrift.config.schema.params import Params

SCHEMA_ID = "https://valuedrift.local/params.schema.json"


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for v in node.values():
            _close_objects(v)
    elif isinstance(node, list):
        for v in node:
            _close_objects(v)


def params_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a params file."""
    schema = TypeAdapter(Params).json_schema()
    _close_objects(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "valuedrift params.yaml", **schema}


def schema_text() -> str:
    return json.dumps(params_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(schema_text(), encoding="utf-8")
    return Path(path)
