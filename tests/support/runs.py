"""Run files for tests: the quickstart with its data and store moved to
places the test controls."""
from __future__ import annotations

from pathlib import Path

import yaml

from selfemo.runfile import check_manifest

REPO = Path(__file__).resolve().parents[2]


def quickstart_run(tmp_path: Path, erc_dir: Path, *, model: str | None = None, **spec_overrides):
    """examples/quickstart.yaml with absolute data paths, a store under tmp_path
    and optional top-level spec sections replaced (merged one level deep)."""
    run, _ = _quickstart(tmp_path, erc_dir, model, spec_overrides)
    return run


def write_quickstart(tmp_path: Path, erc_dir: Path, *, model: str | None = None, **spec_overrides) -> Path:
    """The same run as `quickstart_run`, written to tmp_path/run.yaml (for commands that read a file)."""
    _, doc = _quickstart(tmp_path, erc_dir, model, spec_overrides)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _quickstart(tmp_path: Path, erc_dir: Path, model: str | None, spec_overrides: dict):
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    for group in ("train", "eval"):
        for ref in spec["datasets"][group]:
            ref["uri"] = str(erc_dir / Path(ref["uri"]).name)
    spec["storage"] = {"uri": f"file://{tmp_path}/runs"}
    if model:
        spec["model"]["base"] = model
    for key, value in spec_overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    run, problems = check_manifest(doc)
    assert run is not None, problems
    return run, doc
