"""Render the SLURM batch scripts of a whole benchmark run and the script that submits them in order.

Stages (one script each, numbered in pipeline order):

1. ``fingerprint``: array; each task fingerprints its shard of the training cases into EXP/fingerprint_cases;
2. ``plan``: one job; checks the data and merges the cached fingerprints into fingerprint.json and plans.json;
3. ``preprocess``: array over case shards;
4. ``train``: one job per fold; with several GPUs ``torchrun``, with several nodes ``srun torchrun`` with a c10d
   rendezvous on the first node of the allocation. For ``--config 3d_cascade_fullres`` the previous stage comes
   first (``preprocess_3d_lowres``, then ``train_3d_lowres`` per fold), and every cascade fold waits for all of
   its folds: their final validations write the predictions the cascade trains on; SIGTERM 5 minutes before
   the time limit (and on preemption) stops the training at a step with a checkpoint and requeues the job,
   which continues from it;
5. ``predict``: array over the cases to predict (the fold ensemble);
6. ``evaluate``: array writing per-case parts; 7. ``merge``: one job writing metrics.json and the report;
8. ``report`` (optional): PNG previews of the predictions.

Array tasks find their shard in SLURM_ARRAY_TASK_ID/COUNT/MIN (see :mod:`amos_autoseg.utils.shard`), every stage
skips finished work, so a failed task or stage is simply resubmitted. ``submit_all.sh`` chains the jobs with
``sbatch --parsable`` and ``--dependency=afterok:`` (on an array job id that waits for every task).
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from amos_autoseg.cluster.options import ARRAY_STAGES, GPU_STAGES, SlurmOptions

SUBMIT_SCRIPT = "submit_all.sh"
_SCRIPT_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.sbatch$")
_WORKERS = '--workers "$WORKERS"'
PREVIOUS_STAGE = {"3d_cascade_fullres": "3d_lowres"}  # what nnU-Net's planner writes (the plan is made in a job)
SIGNAL_LEAD_S = 300  # SIGTERM this long before a training job's time limit: time to finish a step and checkpoint


@dataclass(frozen=True)
class Job:
    """One rendered script: its stage, file name, text and the stages it waits for."""

    stage: str
    name: str
    text: str
    after: tuple[str, ...]
    variable: str  # shell variable that holds its job id in submit_all.sh


def _q(value: object) -> str:
    return shlex.quote(str(value))


def header(opts: SlurmOptions, stage: str, job_name: str, array: int | None = None) -> list[str]:
    """The ``#!`` line and the ``#SBATCH`` lines of one job."""
    res = opts.resources[stage]
    logs = Path(str(opts.out)) / "logs"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --time={res.time}",
             f"#SBATCH --cpus-per-task={res.cpus}", f"#SBATCH --mem={res.mem}"]
    if array is not None:
        limit = f"%{opts.max_parallel}" if opts.max_parallel else ""
        lines += [f"#SBATCH --array=0-{array - 1}{limit}", f"#SBATCH --output={logs}/%x_%A_%a.out"]
    else:
        lines.append(f"#SBATCH --output={logs}/%x_%j.out")
    partition = (opts.gpu_partition or opts.partition) if stage in GPU_STAGES else opts.partition
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    if stage == "train":  # SIGTERM before the time limit; the job requeues itself (see requeue_on_signal)
        lines += [f"#SBATCH --signal=B:TERM@{SIGNAL_LEAD_S}", "#SBATCH --requeue", "#SBATCH --open-mode=append"]
    if stage == "train" and opts.nodes > 1:
        lines += [f"#SBATCH --nodes={opts.nodes}", "#SBATCH --ntasks-per-node=1"]
    if stage in GPU_STAGES and res.gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{res.gpus}")
    return lines


def preamble(opts: SlurmOptions, stage: str) -> list[str]:
    """Shell setup of every job: strict mode, the user's setup lines, the CLI command, the worker count (the
    job's CPUs; with one CPU the work runs serially in the job's own process)."""
    lines = ["", "set -eo pipefail"]
    lines += list(opts.setup)
    lines += ["set -u", f"AMOS=({opts.command})",
              f'WORKERS="${{SLURM_CPUS_PER_TASK:-{opts.resources[stage].cpus}}}"',
              'if [ "$WORKERS" -le 1 ]; then WORKERS=0; fi',
              'echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-local} task ${SLURM_ARRAY_TASK_ID:--} on $(hostname)"']
    return lines


def _join(words: list[str]) -> str:
    return " ".join(words)


def _device(opts: SlurmOptions, stage: str) -> str:
    return "cuda" if opts.resources[stage].gpus > 0 else "cpu"


def stage_commands(opts: SlurmOptions, stage: str, fold: int | None = None) -> list[str]:
    """The shell lines that run ``stage`` (for ``train``: of ``fold``)."""
    exp, data, meta = _q(opts.exp), _q(opts.data), [] if opts.meta is None else ["--meta", _q(opts.meta)]
    amos = '"${AMOS[@]}"'
    if stage == "fingerprint":
        return [_join([amos, "fingerprint", data, "--exp", exp, _WORKERS, *meta])]
    if stage == "plan":
        extra = [] if opts.preset is None else ["--preset", _q(opts.preset)]
        if opts.gpu_memory_gb is not None:
            extra += ["--gpu-memory-gb", _q(f"{opts.gpu_memory_gb:g}")]
        return [_join([amos, "plan", data, "--exp", exp, _WORKERS, *meta, *extra])]
    if stage == "preprocess":
        return [_join([amos, "preprocess", exp, "--config", _q(opts.config), _WORKERS])]
    if stage == "train":
        assert fold is not None
        return train_commands(opts, fold)
    if stage == "predict":
        folds = [str(f) for f in opts.folds]
        return [_join([amos, "predict", exp, "--input", _q(opts.predict_input), "--output",
                       _q(opts.predict_output), "--folds", *folds, "--config", _q(opts.config), "--device",
                       _device(opts, stage), *meta, *map(_q, opts.predict_args)])]
    evaluate = [amos, "evaluate", "--pred", _q(opts.predict_output), "--ref", _q(opts.predict_ref), "--labels",
                _q(opts.data / "dataset.json"), "--out", _q(opts.metrics), _WORKERS, *meta]
    if stage == "evaluate":
        return [_join(evaluate)]
    if stage == "merge":
        return [_join([*evaluate, "--merge"])]
    if stage == "report":
        assert opts.metrics is not None
        return [_join([amos, "preview", "--image", _q(opts.predict_input), "--seg", _q(opts.predict_output),
                       "--ref", _q(opts.predict_ref), "--out", _q(opts.metrics.parent / "preview")])]
    raise ValueError(f"unknown stage {stage!r}")


def train_commands(opts: SlurmOptions, fold: int) -> list[str]:
    """One fold's training: plain, ``torchrun --standalone`` on one node, or ``srun torchrun`` over nodes.

    A fold whose final checkpoint and validation metrics exist is skipped; otherwise training resumes from
    checkpoint_latest.pt when there is one (``--resume`` starts afresh without it).
    """
    res = opts.resources["train"]
    gpus = max(res.gpus, 1)
    loaders = res.cpus // gpus  # data-loading processes per rank; with one CPU each, load in the rank itself
    fold_dir = opts.exp / opts.config / f"fold_{fold}"
    args = ["train", _q(opts.exp), "--fold", str(fold), "--config", _q(opts.config), "--device",
            _device(opts, "train"), "--resume", "--workers", str(loaders if loaders > 1 else 0),
            *map(_q, opts.train_args)]
    lines = [f"if [ -f {_q(fold_dir / 'checkpoint_final.pt')} ] && [ -f {_q(fold_dir / 'validation/metrics.json')} ]; "
             f"then echo 'fold {fold} is trained already'; exit 0; fi"]
    if opts.nodes > 1:
        lines += [
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"MASTER_PORT={opts.rdzv_port}",
            "export MASTER_ADDR MASTER_PORT",
            _join(["srun", "--nodes", '"$SLURM_NNODES"', "--ntasks-per-node", "1", "torchrun", "--nnodes",
                   '"$SLURM_NNODES"', "--nproc-per-node", str(gpus), "--rdzv-id", '"$SLURM_JOB_ID"',
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", '"$MASTER_ADDR:$MASTER_PORT"', "-m", "amos_autoseg",
                   *args]),
        ]
    elif res.gpus > 1:
        lines.append(_join(["torchrun", "--standalone", "--nproc-per-node", str(gpus), "-m", "amos_autoseg", *args]))
    else:
        lines.append(_join(['"${AMOS[@]}"', *args]))
    return lines[:-1] + requeue_on_signal(lines[-1])


def requeue_on_signal(command: str) -> list[str]:
    """Run ``command`` (the training) so that a SIGTERM to the batch shell stops it gracefully and requeues the job.

    SLURM sends SIGTERM to the batch shell :data:`SIGNAL_LEAD_S` seconds before the time limit
    (``--signal=B:TERM@...``), and to every process on preemption. The shell passes it on to the training, which
    finishes its step, writes checkpoint_latest.pt and exits (143; torchrun reports its own code); the job is then
    requeued (``scontrol requeue``, ``--requeue``), keeps its id (so jobs waiting on it with afterok keep
    waiting), runs this script again and continues from the checkpoint. A run that ends for any other reason exits
    with its own code.
    """
    return [
        'stopping=0 pid=""',
        "trap 'stopping=1; echo \"$(date -u +%FT%TZ) SIGTERM: the training stops at its next step\"; "
        "kill -TERM \"$pid\" 2>/dev/null || true' TERM",
        "set +e",
        f"{command} &",
        "pid=$!",
        'wait "$pid"; code=$?',
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; code=$?; done  # a trapped signal interrupts wait',
        "set -e",
        'if [ "$stopping" = 1 ] && [ "$code" -ne 0 ] && [ -n "${SLURM_JOB_ID:-}" ]; then',
        '  echo "$(date -u +%FT%TZ) requeueing job $SLURM_JOB_ID: it continues from the checkpoint"',
        '  scontrol requeue "$SLURM_JOB_ID" || true',
        "  exit 0",
        "fi",
        'exit "$code"',
    ]


def render_jobs(opts: SlurmOptions) -> list[Job]:
    """Every job of the pipeline in submission order (``opts`` from :meth:`SlurmOptions.resolved`)."""
    jobs: list[Job] = []
    number = 0

    def add(stage: str, after: tuple[str, ...], fold: int | None = None, config: str | None = None) -> None:
        nonlocal number
        number += 1 if fold is None or fold == opts.folds[0] else 0
        suffix = "" if fold is None else f"_fold{fold}"
        array = opts.arrays[stage] if stage in ARRAY_STAGES else None
        tag = stage if config is None else f"{stage}_{config}"  # a previous stage's jobs: own names and ids
        job_opts = opts if config is None else replace(opts, config=config)
        job_name = f"amos-{tag}{suffix}"
        lines = (header(job_opts, stage, job_name, array) + preamble(job_opts, stage)
                 + stage_commands(job_opts, stage, fold))
        variable = f"{tag}{suffix}"
        jobs.append(Job(tag, f"{number:02d}_{tag}{suffix}.sbatch", "\n".join(lines) + "\n", after, variable))

    add("fingerprint", ())
    add("plan", ("fingerprint",))
    add("preprocess", ("plan",))
    previous = PREVIOUS_STAGE.get(opts.config)
    waits: tuple[str, ...] = ("preprocess",)
    if previous is not None:
        add("preprocess", ("plan",), config=previous)
        for fold in opts.folds:
            add("train", (f"preprocess_{previous}",), fold, config=previous)
        waits += (f"train_{previous}",)
    for fold in opts.folds:
        add("train", waits, fold)
    trains = tuple(f"train_fold{f}" for f in opts.folds)
    add("predict", trains)
    add("evaluate", ("predict",))
    add("merge", ("evaluate",))
    if opts.report:
        add("report", ("merge",))
    return jobs


def submit_script(jobs: list[Job]) -> str:
    """``submit_all.sh [FIRST_STAGE]``: submit every job (from FIRST_STAGE on) with afterok dependencies."""
    stages = " ".join(dict.fromkeys(j.stage for j in jobs))
    lines = [
        "#!/bin/bash",
        "# Submit the benchmark's jobs in order, each waiting for the ones it needs (afterok).",
        "# Usage: ./submit_all.sh [FIRST_STAGE]   stages: " + stages,
        "# From FIRST_STAGE on, earlier stages are assumed done. Every stage skips finished work, so a failed",
        "# run is continued by submitting again from the stage that failed. SBATCH overrides the sbatch command.",
        "set -euo pipefail",
        'cd "$(dirname "${BASH_SOURCE[0]}")"',
        'SBATCH="${SBATCH:-sbatch}"',
        'STAGES=(' + stages + ')',
        'FIRST="${1:-' + jobs[0].stage + '}"',
        'start=-1',
        'for i in "${!STAGES[@]}"; do [ "${STAGES[$i]}" = "$FIRST" ] && start=$i; done',
        'if [ "$start" -lt 0 ]; then echo "unknown stage $FIRST; stages: ${STAGES[*]}" >&2; exit 2; fi',
        "",
        "wanted() {  # wanted STAGE: whether STAGE is at or after FIRST",
        '  local i',
        '  for i in "${!STAGES[@]}"; do [ "${STAGES[$i]}" = "$1" ] && [ "$i" -ge "$start" ] && return 0; done',
        '  return 1',
        "}",
        "",
        "submit() {  # submit SCRIPT [JOB_ID...]: print the new job's id (ids left empty are not waited for)",
        '  local script=$1 dep="" id out',
        "  shift",
        '  for id in "$@"; do [ -n "$id" ] && dep="${dep:+$dep:}$id"; done',
        '  if [ -n "$dep" ]; then',
        '    out=$($SBATCH --parsable --dependency="afterok:$dep" "$script")',
        "  else",
        '    out=$($SBATCH --parsable "$script")',
        "  fi",
        '  echo "${out%%;*}"  # --parsable prints ID or ID;CLUSTER',
        "}",
        "",
    ]
    for job in jobs:
        deps = " ".join(f'"${v}"' for a in job.after for v in _variables(jobs, a))
        lines += [f"{job.variable}=''",
                  f"if wanted {job.stage}; then",
                  f"  {job.variable}=$(submit {job.name}{' ' + deps if deps else ''})",
                  f'  echo "{job.variable}: job ${job.variable} ({job.name})"',
                  "fi"]
    return "\n".join(lines) + "\n"


def _variables(jobs: list[Job], after: str) -> list[str]:
    """Shell variables holding the ids of the jobs ``after`` names (a stage, or one fold's variable)."""
    return [j.variable for j in jobs if after in (j.stage, j.variable)]


def write_scripts(opts: SlurmOptions) -> list[Path]:
    """Write every job script and ``submit_all.sh`` into ``opts.out`` (atomically) and create ``logs/``.

    Scripts of an earlier rendering that this one no longer has (e.g. a fold left out) are removed, so the
    folder always holds one consistent pipeline.

    Args:
        opts: options from :meth:`SlurmOptions.resolved`.

    Returns:
        The written files, ``submit_all.sh`` last.
    """
    from amos_autoseg.utils.atomic import write_text

    assert opts.out is not None
    out = Path(opts.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    jobs = render_jobs(opts)
    names = {j.name for j in jobs}
    for old in out.iterdir():
        if _SCRIPT_NAME.match(old.name) and old.name not in names:
            old.unlink()
    written = []
    for name, text in [(j.name, j.text) for j in jobs] + [(SUBMIT_SCRIPT, submit_script(jobs))]:
        write_text(out / name, text)
        os.chmod(out / name, 0o755)
        written.append(out / name)
    return written
