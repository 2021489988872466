"""Write ready-to-submit SLURM scripts for a whole benchmark run on a cluster.

`amos-autoseg cluster slurm EXP --data DATA_DIR` writes into EXP/slurm (or --out) one numbered script per
stage: fingerprint (array), plan (merge), preprocess (array), train (one job per fold; torchrun over the GPUs
of a node, srun torchrun over several nodes with --nodes), predict (array), evaluate (array), merge, and with
--report PNG previews; plus submit_all.sh, which submits them with `sbatch --parsable` and
`--dependency=afterok:` so that each stage waits for the jobs it needs. Array tasks take their shard of the
sorted case list from SLURM_ARRAY_TASK_ID/COUNT; every stage skips finished work, so resubmitting continues.
Per-stage values take STAGE=VALUE (or all=VALUE), e.g. --time train=2-00:00:00 --mem all=32G.
"""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="scheduler", metavar="SCHEDULER")
    sub.required = True
    s = sub.add_parser("slurm", help="SLURM sbatch scripts (array jobs, afterok dependencies)",
                       description=__doc__, formatter_class=p.formatter_class)
    s.add_argument("exp", metavar="EXP", help="experiment folder the jobs write")
    s.add_argument("--data", required=True, metavar="DATA_DIR", help="data folder (AMOS or nnU-Net v2 layout)")
    s.add_argument("--out", default=None, metavar="DIR", help="folder for the scripts (default: EXP/slurm)")
    s.add_argument("--config", default="3d_fullres", metavar="C", help="configuration to train and predict")
    s.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="F",
                   help="folds to train (one job each) and ensemble")
    s.add_argument("--partition", default=None, help="partition of every job")
    s.add_argument("--gpu-partition", default=None, help="partition of the train and predict jobs")
    s.add_argument("--account", default=None, help="account to charge")
    s.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="shell line run first in every job, e.g. 'module load cuda' or "
                        "'source ~/venv/bin/activate' (repeatable)")
    s.add_argument("--command", default="amos-autoseg", help="how the jobs call the CLI")
    s.add_argument("--nodes", type=int, default=1, help="nodes per training job (more than 1: srun torchrun)")
    s.add_argument("--gpus-per-node", type=int, default=1, metavar="G",
                   help="GPUs per training node (more than 1: torchrun; 0: train on CPUs)")
    s.add_argument("--predict-gpus", type=int, default=1, metavar="G", help="GPUs per predict task (0: CPU)")
    s.add_argument("--port", type=int, default=29500, help="rendezvous port of multi-node training")
    s.add_argument("--array-size", type=int, default=8, metavar="N", help="tasks of every array stage")
    s.add_argument("--array", action="append", metavar="STAGE=N",
                   help="tasks of one array stage (fingerprint, preprocess, predict, evaluate)")
    s.add_argument("--max-parallel", type=int, default=None, metavar="M", help="array tasks running at once")
    s.add_argument("--time", action="append", metavar="STAGE=T", help="time limit, e.g. train=3-00:00:00")
    s.add_argument("--cpus", action="append", metavar="STAGE=N", help="CPUs per task (sets --workers)")
    s.add_argument("--mem", action="append", metavar="STAGE=M", help="memory per node, e.g. preprocess=64G")
    s.add_argument("--meta", default=None, metavar="CSV", help="CSV with case_id, modality[, phase]")
    s.add_argument("--preset", default=None, help="planner preset for `plan`")
    s.add_argument("--gpu-memory-gb", type=float, default=None, metavar="G", help="`plan --gpu-memory-gb`")
    s.add_argument("--train-args", default="", metavar="ARGS",
                   help="extra `train` arguments, e.g. --train-args='--epochs 500'")
    s.add_argument("--predict-args", default="", metavar="ARGS",
                   help="extra `predict` arguments, e.g. --predict-args=--no-tta")
    s.add_argument("--predict-input", default=None, metavar="DIR",
                   help="images to predict and evaluate (default: DATA_DIR/imagesVa)")
    s.add_argument("--predict-ref", default=None, metavar="DIR", help="their references (default: DATA_DIR/labelsVa)")
    s.add_argument("--predict-output", default=None, metavar="DIR",
                   help="predictions folder (default: EXP/<config>/validation_set/predictions)")
    s.add_argument("--metrics", default=None, metavar="METRICS_JSON",
                   help="evaluation output (default: EXP/<config>/validation_set/metrics.json)")
    s.add_argument("--report", action="store_true", help="add a last job writing PNG previews")


def options_from_args(args: argparse.Namespace):  # -> SlurmOptions (imported lazily)
    """The :class:`~amos_autoseg.cluster.options.SlurmOptions` the arguments describe, resolved and checked."""
    import shlex
    from dataclasses import replace
    from pathlib import Path

    from amos_autoseg.cluster.options import (
        ARRAY_STAGES,
        DEFAULT_RESOURCES,
        SlurmOptions,
        parse_assignments,
    )
    from amos_autoseg.errors import UsageError

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    def integer(flag: str, stage: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{flag} {stage}={text}: not an integer") from None

    resources = dict(DEFAULT_RESOURCES)
    resources["train"] = replace(resources["train"], gpus=args.gpus_per_node)
    resources["predict"] = replace(resources["predict"], gpus=args.predict_gpus)
    for stage, value in parse_assignments(args.time, "--time").items():
        resources[stage] = replace(resources[stage], time=value)
    for stage, value in parse_assignments(args.cpus, "--cpus").items():
        resources[stage] = replace(resources[stage], cpus=integer("--cpus", stage, value))
    for stage, value in parse_assignments(args.mem, "--mem").items():
        resources[stage] = replace(resources[stage], mem=value)
    arrays = {s: args.array_size for s in ARRAY_STAGES}
    for stage, value in parse_assignments(args.array, "--array", ARRAY_STAGES).items():
        arrays[stage] = integer("--array", stage, value)
    opts = SlurmOptions(
        exp=Path(args.exp), data=Path(args.data), out=path(args.out), config=args.config, folds=tuple(args.folds),
        partition=args.partition, gpu_partition=args.gpu_partition, account=args.account, setup=tuple(args.setup),
        command=args.command, nodes=args.nodes, rdzv_port=args.port, arrays=arrays, max_parallel=args.max_parallel,
        resources=resources, meta=path(args.meta), preset=args.preset, gpu_memory_gb=args.gpu_memory_gb,
        train_args=tuple(shlex.split(args.train_args)), predict_args=tuple(shlex.split(args.predict_args)),
        predict_input=path(args.predict_input), predict_ref=path(args.predict_ref),
        predict_output=path(args.predict_output), metrics=path(args.metrics), report=args.report,
    )
    return opts.resolved()


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.cluster.slurm import write_scripts

    opts = options_from_args(args)
    if not (opts.data / "dataset.json").is_file():
        log.warning("%s has no dataset.json here; make sure the jobs see the data folder at this path", opts.data)
    if not opts.predict_input.is_dir():
        log.warning("%s (images to predict) is not a folder here; set --predict-input and --predict-ref",
                    opts.predict_input)
    written = write_scripts(opts)
    log.info("wrote %d SLURM script(s) to %s; submit them with: %s", len(written) - 1, opts.out, written[-1])
    return 0
