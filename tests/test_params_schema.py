"""The published JSON Schema of params.yaml (docs/params.schema.json) is current and describes params.yaml."""

from __future__ import annotations

import json
from typing import Any

import yaml

from valuedrift.config.json_schema import params_json_schema, schema_text

from .conftest import ROOT


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    for alt in node.get("anyOf", []):  # an optional section: the non-null alternative
        if alt.get("type") != "null":
            return _resolve(schema, alt)
    return node


def _unknown_keys(schema: dict[str, Any], node: dict[str, Any], value: Any, key: str) -> list[str]:
    node = _resolve(schema, node)
    if not isinstance(value, dict) or "properties" not in node:
        return []
    bad = []
    for k, v in value.items():
        if k not in node["properties"]:
            if node.get("additionalProperties") is False:
                bad.append(f"{key}{k}")
            continue
        bad += _unknown_keys(schema, node["properties"][k], v, f"{key}{k}.")
    return bad


def test_committed_schema_is_up_to_date():
    committed = (ROOT / "docs" / "params.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "docs/params.schema.json is stale: run `valuedrift params-schema`"


def test_schema_describes_every_key_of_params_yaml_and_rejects_unknown_ones():
    schema = params_json_schema()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert _unknown_keys(schema, schema, params, "") == []
    assert set(schema["properties"]) >= set(params)
    typo = {**params, "sft": {**params["sft"], "learnig_rate": 1e-4}}
    assert _unknown_keys(schema, schema, typo, "") == ["sft.learnig_rate"]
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, loadable by any editor
