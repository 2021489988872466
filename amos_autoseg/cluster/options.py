"""What the SLURM scripts of a benchmark run need: paths, resources per stage, array sizes, scheduler options.

Only the standard library is imported here (the CLI builds these options before anything heavy loads).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from amos_autoseg.errors import UsageError

# Pipeline order. Array stages run one task per shard of the sorted case list; train runs one job per fold.
STAGES: tuple[str, ...] = ("fingerprint", "plan", "preprocess", "train", "predict", "evaluate", "merge", "report")
ARRAY_STAGES: tuple[str, ...] = ("fingerprint", "preprocess", "predict", "evaluate")
GPU_STAGES: tuple[str, ...] = ("train", "predict")

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_MEM = re.compile(r"^\d+[KMGT]?$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+=/-]+$")  # one token on an #SBATCH line


@dataclass(frozen=True)
class Resources:
    """What one job (or one array task) of a stage asks for.

    Attributes:
        time: wall-clock limit in a SLURM format (``HH:MM:SS``, ``D-HH:MM:SS``, minutes).
        cpus: CPUs per task; the stage's ``--workers`` follows it.
        mem: memory per node (``64G``).
        gpus: GPUs per node (train: per node of a multi-node job).
    """

    time: str
    cpus: int
    mem: str
    gpus: int = 0

    def check(self, stage: str) -> None:
        """Raise :class:`UsageError` naming the stage and the bad value."""
        if not _TIME.match(self.time):
            raise UsageError(f"time limit of {stage} {self.time!r}: use HH:MM:SS, D-HH:MM:SS or minutes")
        if not _MEM.match(self.mem):
            raise UsageError(f"memory of {stage} {self.mem!r}: use a number with K, M, G or T, e.g. 64G")
        if self.cpus < 1:
            raise UsageError(f"CPUs of {stage}: {self.cpus}, need at least 1")
        if self.gpus < 0:
            raise UsageError(f"GPUs of {stage}: {self.gpus}, need 0 or more")


DEFAULT_RESOURCES: dict[str, Resources] = {
    "fingerprint": Resources("02:00:00", 4, "16G"),
    "plan": Resources("02:00:00", 8, "32G"),
    "preprocess": Resources("06:00:00", 8, "64G"),
    "train": Resources("3-00:00:00", 12, "96G", gpus=1),
    "predict": Resources("06:00:00", 8, "64G", gpus=1),
    "evaluate": Resources("02:00:00", 4, "16G"),
    "merge": Resources("01:00:00", 4, "16G"),
    "report": Resources("01:00:00", 2, "8G"),
}
DEFAULT_ARRAY_SIZE = 8


@dataclass(frozen=True)
class SlurmOptions:
    """Everything the rendered scripts depend on (paths are made absolute by :meth:`resolved`).

    Attributes:
        exp: experiment folder.
        data: data folder.
        out: folder for the scripts and ``logs/``.
        config: configuration to preprocess, train, predict with.
        folds: folds to train, one job each; predict ensembles them.
        partition: partition of every job unless ``gpu_partition`` applies.
        gpu_partition: partition of the GPU stages (train, predict); default ``partition``.
        account: account to charge.
        setup: shell lines run first in every job (``module load ...``, ``source venv/bin/activate``).
        command: how to call the CLI in the jobs.
        nodes: nodes per training job; more than one starts ``srun torchrun`` with c10d rendezvous.
        rdzv_port: port of the rendezvous on the first node of a multi-node training job.
        arrays: tasks of each array stage.
        max_parallel: at most this many tasks of an array at once (``--array=0-7%M``); ``None``: no limit.
        resources: per stage.
        meta: metadata CSV for fingerprint, plan, predict and evaluate.
        preset: planner preset of ``plan``; ``gpu_memory_gb``: its ``--gpu-memory-gb``.
        train_args / predict_args: extra arguments, appended as given.
        predict_input / predict_ref: images to predict and their references (default the AMOS validation set,
            DATA/imagesVa and DATA/labelsVa).
        predict_output: predictions folder; ``metrics``: metrics.json of the evaluation.
        report: add the report stage (PNG previews of the predictions with ``amos-autoseg preview``).
    """

    exp: Path
    data: Path
    out: Path | None = None
    config: str = "3d_fullres"
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    partition: str | None = None
    gpu_partition: str | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()
    command: str = "amos-autoseg"
    nodes: int = 1
    rdzv_port: int = 29500
    arrays: Mapping[str, int] = field(default_factory=lambda: {s: DEFAULT_ARRAY_SIZE for s in ARRAY_STAGES})
    max_parallel: int | None = None
    resources: Mapping[str, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    meta: Path | None = None
    preset: str | None = None
    gpu_memory_gb: float | None = None
    train_args: tuple[str, ...] = ()
    predict_args: tuple[str, ...] = ()
    predict_input: Path | None = None
    predict_ref: Path | None = None
    predict_output: Path | None = None
    metrics: Path | None = None
    report: bool = False

    def resolved(self) -> SlurmOptions:
        """Absolute paths with the defaults filled in, every value checked.

        Raises:
            UsageError: a value the scheduler or the pipeline would reject.
        """
        exp, data = self.exp.resolve(), self.data.resolve()
        validation = exp / self.config / "validation_set"
        opts = replace(
            self,
            exp=exp,
            data=data,
            out=(self.out or exp / "slurm").resolve(),
            meta=None if self.meta is None else self.meta.resolve(),
            predict_input=(self.predict_input or data / "imagesVa").resolve(),
            predict_ref=(self.predict_ref or data / "labelsVa").resolve(),
            predict_output=(self.predict_output or validation / "predictions").resolve(),
            metrics=(self.metrics or validation / "metrics.json").resolve(),
            arrays={s: int(self.arrays.get(s, DEFAULT_ARRAY_SIZE)) for s in ARRAY_STAGES},
            resources={s: self.resources.get(s, DEFAULT_RESOURCES[s]) for s in STAGES},
        )
        opts._check()
        return opts

    def _check(self) -> None:
        if not self.folds or len(set(self.folds)) != len(self.folds) or min(self.folds) < 0:
            raise UsageError(f"--folds {' '.join(map(str, self.folds))}: need distinct folds 0 or more")
        if self.nodes < 1:
            raise UsageError(f"--nodes {self.nodes}: need at least 1")
        if not 1 <= self.rdzv_port <= 65535:
            raise UsageError(f"--port {self.rdzv_port}: not a TCP port")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UsageError(f"--max-parallel {self.max_parallel}: need at least 1")
        for stage, n in self.arrays.items():
            if n < 1:
                raise UsageError(f"array size of {stage}: {n}, need at least 1")
        for stage, res in self.resources.items():
            res.check(stage)
        if self.nodes > 1 and self.resources["train"].gpus < 1:
            raise UsageError(f"--nodes {self.nodes}: multi-node training needs GPUs (--gpus-per-node)")
        for name in ("partition", "gpu_partition", "account"):
            value = getattr(self, name)
            if value is not None and not _WORD.match(value):
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: not a valid SLURM name")
        if any(c.isspace() for c in str(self.out)):
            raise UsageError(f"--out {self.out}: #SBATCH --output cannot name a folder with spaces; choose another")
        for line in self.setup:
            if "\n" in line:
                raise UsageError("--setup: give one shell line per --setup")


def parse_assignments(items: list[str] | None, flag: str, stages: tuple[str, ...] = STAGES) -> dict[str, str]:
    """``["train=2-00:00:00", ...]`` -> ``{"train": "2-00:00:00"}``; ``all=`` sets every stage.

    Raises:
        UsageError: an item without ``=`` or with an unknown stage.
    """
    out: dict[str, str] = {}
    for item in items or []:
        stage, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"{flag} {item!r}: expected STAGE=VALUE, stages: all, {', '.join(stages)}")
        if stage == "all":
            out.update({s: value for s in stages})
        elif stage in stages:
            out[stage] = value
        else:
            raise UsageError(f"{flag} {item!r}: unknown stage {stage!r}; stages: all, {', '.join(stages)}")
    return out
