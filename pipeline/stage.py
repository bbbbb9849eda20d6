"""What a stage is: a declaration (its name, the files it reads and writes, the settings it
reads, its gates) and a function from a `Context` to a `Result`. The runner (pipeline/runner.py)
does everything around that function; `results/<stage>.json` holds what each one measured,
which the report reads.

Adding a stage: a module with its function and one `Stage(...)` in `STAGES` (pipeline/build.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import BuildConfig, stage_reads
from .errors import PipelineError
from .gates import Gate, of_stage
from .util import log, write_json

RESULTS = "results"


@dataclass
class Result:
    """What a stage measured (recorded as results/<stage>.json, with the seconds it took), the
    line(s) the runner logs once it is recorded (given the recorded values) and notes after them."""

    values: dict[str, Any]
    summary: Callable[[dict[str, Any]], str] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    """A stage's view of the build: its settings (after training, the model's own from model.pt,
    with the stage's settings from this run), the checkpoint, and its progress log."""

    stage: str
    cfg: BuildConfig
    ckpt: dict[str, Any] | None = None

    @property
    def out(self) -> Path:
        return self.cfg.out_dir

    def log(self, message: str) -> None:
        log(f"{self.stage}: {message}")


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Result | None]  # (Context, **options) -> Result; None: nothing to record (DDP rank > 0)
    help: str
    inputs: tuple[str, ...] = ()  # files in OUT that an earlier stage writes
    outputs: tuple[str, ...] = ()  # files in OUT that this stage writes (put in place together)
    from_checkpoint: bool = True  # takes the model's settings from model.pt
    record: bool = True  # writes results/<name>.json

    @property
    def reads(self) -> tuple[str, ...]:
        """The settings it reads (pipeline/config.py says which stages read each)."""
        return stage_reads(self.name)

    @property
    def gates(self) -> tuple[Gate, ...]:
        return of_stage(self.name)


def record(out: Path, stage: str, result: dict[str, Any]) -> dict[str, Any]:
    write_json(out / RESULTS / f"{stage}.json", result)
    return result


def load_result(out: Path, stage: str) -> dict[str, Any] | None:
    p = out / RESULTS / f"{stage}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def require(path: Path, stage: str) -> Path:
    """An input a previous stage writes, or a PipelineError naming the stage to run first."""
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `python -m pipeline {stage}` first")
    return path
