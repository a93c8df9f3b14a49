"""Render the run-spec reference (docs/run-spec.md) from the spec models, so
the documentation of every field is the same text `kubectl explain` shows and
cannot drift from the code (a test compares the file with this output)."""
from __future__ import annotations

from typing import Any

from selfemo.crd import openapi_schema
from selfemo.spec import SelfEmoRunSpec


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    t = node.get("type", "")
    if t == "array":
        return f"list of {_type(node.get('items', {}))}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return t


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    v = node["default"]
    if v is None:
        return "unset"
    if isinstance(v, bool):
        v = str(v).lower()
    return f"`{v}`" if v != "" else '`""`'


def _rows(node: dict[str, Any], path: str, required: set[str]) -> list[str]:
    rows = []
    for name, prop in node.get("properties", {}).items():
        p = f"{path}.{name}" if path else name
        desc = " ".join(prop.get("description", "").split()).replace("|", "\\|")
        req = " (required)" if name in required else ""
        rows.append(f"| `{p}` | {_type(prop)} | {_default(prop)} | {desc}{req} |")
        if "properties" in prop:
            rows += _rows(prop, p, set(prop.get("required", [])))
        elif prop.get("type") == "array" and "properties" in prop.get("items", {}):
            rows += _rows(prop["items"], f"{p}[]", set(prop["items"].get("required", [])))
    return rows


def render() -> str:
    schema = openapi_schema(SelfEmoRunSpec)
    lines = [
        "# Run spec reference",
        "",
        "Every field of a `SelfEmoRun`'s `spec` (apiVersion `selfemo.dev/v1alpha1`). Generated from",
        "`selfemo/spec.py` by `python -m selfemo.specdoc > docs/run-spec.md`; a test fails when it drifts.",
        "Only `model.base` is required; lists and maps without a default shown default to empty",
        "(`datasets.train`/`datasets.eval` default to MELD at `../shared/erc/meld`).",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
        *_rows(schema, "", set(schema.get("required", []))),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
