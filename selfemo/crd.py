"""Generate the `SelfEmoRun` CustomResourceDefinition from the spec models.

Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no
`$ref`, no `anyOf` of types, `nullable` instead of `null` types, OpenAPI 3.0
boolean `exclusiveMinimum`, and `x-kubernetes-preserve-unknown-fields` only
where a free-form object is meant. Pydantic emits JSON Schema 2020-12, so this
module inlines and rewrites it. The chart's `crds/` file is this module's
output; a test fails when the two drift.
"""
from __future__ import annotations

import copy
from typing import Any

import yaml

from selfemo.spec import API_GROUP, API_VERSION, KIND, PLURAL, SelfEmoRunSpec
from selfemo.status import RunStatus

# JSON-Schema keywords Kubernetes' structural schema does not accept or need.
_DROP = {"title", "$defs", "discriminator"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every `$ref` with a copy of its definition, recursively."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)  # keep a description/default given beside the $ref
            return _inline(target, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _structural(node: Any) -> Any:
    """Rewrite JSON Schema 2020-12 idioms into Kubernetes' OpenAPI v3 dialect."""
    if isinstance(node, list):
        return [_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _structural(v) for k, v in node.items()}
    # Optional[X] comes out as anyOf: [X, {type: null}] → X + nullable.
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) != len(node["anyOf"])
        if len(options) == 1:
            merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
            if nullable:
                merged["nullable"] = True
            node = merged
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if "enum" in node and "type" not in node:
        kinds = {type(v) for v in node["enum"]}
        node["type"] = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(kinds.pop(), "string") if len(kinds) == 1 else "string"
    if node.get("additionalProperties") is False:
        # Structural schemas forbid additionalProperties beside properties;
        # the API server prunes (or, with strict field validation, rejects)
        # unknown fields anyway.
        del node["additionalProperties"]
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def openapi_schema(model: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (camelCase names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(_inline(raw, raw.get("$defs", {})))


def crd() -> dict[str, Any]:
    """The full `apiextensions.k8s.io/v1` CustomResourceDefinition."""
    spec_schema = openapi_schema(SelfEmoRunSpec)
    spec_schema["description"] = SelfEmoRunSpec.__doc__.strip()
    status_schema = openapi_schema(RunStatus)
    status_schema["description"] = RunStatus.__doc__.strip()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": KIND.lower(),
                "listKind": f"{KIND}List",
                "shortNames": ["ser"],
                "categories": ["selfemo"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Round", "type": "integer", "jsonPath": ".status.round"},
                        {"name": "Best W-F1", "type": "number", "jsonPath": ".status.bestWeightedF1"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A SELF-EMO self-evolution run: flywheel rounds of self-play generation, "
                            "selection, SELF-GRPO training and evaluation.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as YAML, exactly as the chart ships it."""
    header = "# Generated by `selfemo crd` from selfemo/spec.py and selfemo/status.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)
