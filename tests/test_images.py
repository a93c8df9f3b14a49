"""The container images (images/*.Dockerfile): linted, non-root, pinned, lean.

There is no Docker engine on the development machines or in CI, so nothing
is built here: hadolint lints every Dockerfile, the properties a cluster
administrator audits are read from the files, the operator's entry point is
shown to start without any ML library (its image has none), and `make
images` is shown to say clearly that it cannot build without an engine.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from support.tools import tool

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = {p.name.removesuffix(".Dockerfile"): p for p in sorted(IMAGES.glob("*.Dockerfile"))}
ML_LIBRARIES = ("torch", "transformers", "vllm", "deepspeed", "peft", "accelerate", "safetensors")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(path) if i == "ARG" and "=" in a)


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_the_three_images_exist():
    assert set(DOCKERFILES) == {"operator", "generator", "trainer"}


def test_hadolint_finds_nothing(tmp_path):
    proc = subprocess.run([tool("hadolint"), "--format", "json", *map(str, DOCKERFILES.values())],
                          capture_output=True, text=True, timeout=120)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], findings
    assert proc.returncode == 0, proc.stderr


def test_hadolint_does_fail_a_bad_dockerfile(tmp_path):
    """The lint above can fail: an unpinned base and a root user are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install kopf\n")
    proc = subprocess.run([tool("hadolint"), "--format", "json", str(bad)], capture_output=True, text=True, timeout=120)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3002", "DL3013"} <= codes and proc.returncode != 0


@pytest.mark.parametrize("name", ["operator", "generator", "trainer"])
def test_multi_stage_with_pinned_bases(name):
    path = DOCKERFILES[name]
    froms = [a for i, a in instructions(path) if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    args = build_args(path)
    for ref in froms:
        image = ref.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+\.\d+(\.\d+)?[-\w.]*", tag), f"{name}: base {image} is not pinned to a version"


@pytest.mark.parametrize("name,uid", [("operator", 10001), ("generator", 1000), ("trainer", 1000)])
def test_runs_as_a_numeric_non_root_user(name, uid):
    users = [a for i, a in final_stage(DOCKERFILES[name]) if i == "USER"]
    assert users and users[-1] == f"{uid}:{uid}", f"{name}: the last USER must be {uid}:{uid}"


def test_image_users_match_what_the_pods_run_as():
    """Children run as operator/children/common.py's USER_ID, the operator pod as the chart's runAsUser."""
    from selfemo.operator.children.common import HOME, USER_ID

    assert USER_ID == 1000
    values = yaml.safe_load((REPO / "charts" / "selfemo" / "values.yaml").read_text())
    assert values["operator"]["runAsUser"] == 10001 == values["operator"]["runAsGroup"]
    for name in ("generator", "trainer"):
        env = " ".join(a for i, a in final_stage(DOCKERFILES[name]) if i == "ENV")
        assert f"HOME={HOME}" in env  # the children's emptyDir


@pytest.mark.parametrize("name", ["operator", "generator", "trainer"])
def test_no_secrets_baked_in(name):
    path = DOCKERFILES[name]
    for word, args in instructions(path):
        if word in {"ENV", "ARG"}:
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\w*=", args, flags=re.I), args
        if word in {"COPY", "ADD"}:
            assert not re.search(r"\.env\b|credentials|\.aws|\.netrc|id_rsa", args), args
    assert "ADD" not in {w for w, _ in instructions(path)}, "COPY only: ADD can fetch URLs"


def test_build_context_keeps_what_the_images_copy():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for name, path in DOCKERFILES.items():
        for word, args in instructions(path):
            if word == "COPY" and "--from=" not in args:
                for src in args.split()[:-1]:
                    assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
                    assert src.rstrip("/").split("/")[0] not in ignored, f"{name}: {src} is in .dockerignore"
    assert {".git", ".venv", "tests"} <= ignored


def test_operator_image_entrypoint_and_healthcheck():
    stage = final_stage(DOCKERFILES["operator"])
    (entry,) = [a for i, a in stage if i == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "-m", "selfemo.operator"]
    (health,) = [a for i, a in stage if i == "HEALTHCHECK"]
    assert "/healthz" in health and "SELFEMO_OPERATOR_METRICS_PORT" in health
    env = " ".join(a for i, a in stage if i == "ENV")
    assert "SELFEMO_OPERATOR_METRICS_PORT=8080" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    (install,) = [a for i, a in instructions(DOCKERFILES["operator"]) if i == "RUN" and "pip install" in a]
    assert '".[operator]"' in install and "-c requirements/cpu-constraints.txt" in install


def test_operator_extra_has_no_ml_library():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    from images_requirements import requirement_name

    names = {requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["operator"]}
    assert not names & set(ML_LIBRARIES), names & set(ML_LIBRARIES)


def test_operator_starts_without_ml_libraries():
    """What the slim image runs: the operator's entry point with every ML library unimportable."""
    blocked = ", ".join(repr(m) for m in ML_LIBRARIES)
    code = (
        "import sys\n"
        f"for m in ({blocked}):\n    sys.modules[m] = None\n"
        "import selfemo.operator.__main__ as m, selfemo.operator.kopf_app\n"
        "assert m.parser().parse_args(['--namespace', 'a', '--peering', 'p']).peering == 'p'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_image_requirements_come_from_pyproject():
    from images_requirements import requirements

    pyproject = REPO / "pyproject.toml"
    trainer = requirements("trainer", pyproject)
    generator = requirements("generator", pyproject)
    assert "deepspeed==0.19.8" in trainer and not any(r.startswith("vllm") for r in trainer)
    assert "vllm" in generator and not any(r.startswith("deepspeed") for r in generator)
    project = tomllib.loads(pyproject.read_text())["project"]
    assert set(trainer) | set(generator) == set(project["dependencies"]) | set(project["optional-dependencies"]["gpu"])
    proc = subprocess.run([sys.executable, str(IMAGES / "requirements.py"), "evaluator"], capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown image 'evaluator'" in proc.stderr


@pytest.mark.parametrize("name", ["generator", "trainer"])
def test_gpu_images_install_their_requirements(name):
    ins = instructions(DOCKERFILES[name])
    assert any(i == "RUN" and f"images/requirements.py {name}" in a for i, a in ins)
    runs = " ".join(a for i, a in final_stage(DOCKERFILES[name]) if i == "RUN")
    assert "-r /wheels/requirements.txt" in runs and "--no-deps /wheels/selfemo-" in runs


def test_make_images_says_there_is_no_engine(tmp_path):
    """Where `docker` exists but no daemon answers (or docker is missing), nothing is built and it says why."""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["make", "-s", "images"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no Docker engine here" in proc.stderr and "nothing built" in proc.stderr


@pytest.fixture(autouse=True, scope="module")
def _images_requirements_module():
    """images/requirements.py as an importable module (images/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("images_requirements", IMAGES / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["images_requirements"] = module
    yield
    sys.modules.pop("images_requirements", None)
