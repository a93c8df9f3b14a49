"""Reading and validating run files (`SelfEmoRun` manifests).

`selfemo validate`, `selfemo run` and the operator all go through
:func:`load_runs`/:func:`check_manifest`, so a problem is reported the same
way everywhere: one line per problem, each starting with the path of the
offending field (`spec.flywheel.keepPerPrompt: …`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from selfemo.spec import SelfEmoRun

# A cross-field validator on a parent model names the field it blames at the
# start of its message ("flywheel.keepPerPrompt: ..."); fold it into the path.
_FIELD_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.\[\]]*): (.*)$", re.S)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, at a dotted field path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RunFileError(ValueError):
    """A run file that cannot be used; ``problems`` lists every issue found."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: invalid SelfEmoRun ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}")


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problem(err: dict) -> Problem:
    # Literal/enum/union errors carry the type tag as a loc part; drop those.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = _path(loc)
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; fields are camelCase)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    m = _FIELD_PREFIX.match(msg)
    if m and err["type"] == "value_error":
        path = f"{path}.{m.group(1)}" if path else m.group(1)
        msg = m.group(2)
    return Problem(path, msg)


def check_manifest(doc: Any) -> tuple[SelfEmoRun | None, list[Problem]]:
    """Validate one parsed manifest; returns the run or every problem found."""
    if not isinstance(doc, dict):
        return None, [Problem("", f"a manifest must be a mapping, got {type(doc).__name__}")]
    try:
        return SelfEmoRun.model_validate(doc), []
    except ValidationError as exc:
        return None, [_problem(e) for e in exc.errors(include_url=False)]


def parse_documents(text: str, source: str) -> list[Any]:
    """YAML documents of a run file (empty documents skipped)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise RunFileError(f"{source}{where}", [Problem("", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not docs:
        raise RunFileError(source, [Problem("", "the file holds no manifest")])
    return docs


def load_runs(path: str | Path) -> list[SelfEmoRun]:
    """Every `SelfEmoRun` in a YAML file; raises RunFileError listing all problems."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunFileError(str(p), [Problem("", f"cannot read: {exc.strerror or exc}")]) from None
    runs, problems = [], []
    docs = parse_documents(text, str(p))
    for i, doc in enumerate(docs):
        run, found = check_manifest(doc)
        prefix = f"document {i + 1}: " if len(docs) > 1 else ""
        problems += [Problem(f"{prefix}{pr.path}" if pr.path else prefix.rstrip(": "), pr.message) for pr in found]
        if run is not None:
            runs.append(run)
    if problems:
        raise RunFileError(str(p), problems)
    return runs


def load_run(path: str | Path) -> SelfEmoRun:
    """The single `SelfEmoRun` of a run file."""
    runs = load_runs(path)
    if len(runs) != 1:
        raise RunFileError(str(path), [Problem("", f"expected exactly one SelfEmoRun, found {len(runs)}")])
    return runs[0]
