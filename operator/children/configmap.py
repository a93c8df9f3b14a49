"""The run config ConfigMap `{run}-config`: the manifest every child reads.

Children get the run as a file (`--run-config /etc/selfemo/run.yaml`), the
same file `selfemo run` passes locally. It holds the validated spec with
defaults filled in (so every child sees the same values even if a default
changes between images) and only the identifying metadata: status, uid,
resourceVersion and annotations would churn the ConfigMap without meaning
anything to a child.
"""
from __future__ import annotations

import yaml

from selfemo.spec import SelfEmoRun

from .common import CONFIG_KEY, config_map_name, owner_reference
from ..labels import child_labels


def run_config_yaml(run: SelfEmoRun) -> str:
    meta = {"name": run.metadata.name, "namespace": run.metadata.namespace}
    if run.metadata.labels:
        meta["labels"] = dict(run.metadata.labels)
    doc = {
        "apiVersion": run.api_version,
        "kind": run.kind,
        "metadata": meta,
        "spec": run.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def build_config_map(run: SelfEmoRun) -> dict:
    labels = child_labels(run.metadata.name, 0, "config")
    labels.pop("selfemo.dev/round")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(run),
            "namespace": run.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(run)],
        },
        "data": {CONFIG_KEY: run_config_yaml(run)},
    }
