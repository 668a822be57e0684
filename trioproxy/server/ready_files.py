"""The workers' state files (``readiness.py``), without Trio: ``serve``'s supervisor removes a
dead worker's file (``runner.py``) and imports no event loop."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

ENV_RUN_DIR = "TRIOPROXY_RUN_DIR"


@dataclass(frozen=True, slots=True)
class WorkerState:
    pid: int
    ready: bool
    detail: str
    """Why it is not ready (down services, starting or draining), else empty."""
    in_flight: int


class ReadyDir:
    """``<run dir>/ready``: one JSON file per data-plane worker (blocking calls: run them
    in a thread)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "ready"

    def write(self, state: WorkerState) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{state.pid}.tmp"
        tmp.write_bytes(orjson.dumps(
            {"ready": state.ready, "detail": state.detail, "in_flight": state.in_flight}
        ))  # fmt: skip
        os.replace(tmp, self.path / str(state.pid))

    def remove(self, pid: int) -> None:
        (self.path / str(pid)).unlink(missing_ok=True)

    def read(self) -> list[WorkerState]:
        try:
            names = sorted(p for p in os.listdir(self.path) if p.isdigit())
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                data = orjson.loads((self.path / name).read_bytes())
                out.append(WorkerState(int(name), bool(data["ready"]), str(data["detail"]),
                                       int(data["in_flight"])))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile (the worker stopped)
        return out


__all__ = ["ENV_RUN_DIR", "ReadyDir", "WorkerState"]
