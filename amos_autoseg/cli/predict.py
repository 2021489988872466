"""Segment images with trained folds: sliding window, mirroring TTA, fold ensemble, exact export.

Every input (an image file, a folder of images, or a DICOM series folder) gets OUT/<case>.nii.gz with exactly the
input's size, spacing, origin and direction; with --save-probabilities also OUT/<case>.npz (`probabilities`,
float16, classes first, on the input grid). Folds are averaged in probability space. Cases whose outputs exist are
skipped, so an interrupted run continues where it stopped. The post-processing rules of EXP/<config>/
postprocessing.json (chosen on cross-validation) are applied unless --no-postprocessing.

Every input is checked before the first case (readable, complete, 3D, modality known); all problems are reported
at once (exit 2). With --keep-going the good cases are predicted and the bad ones listed at the end (exit 2).

A case's modality comes from its --meta CSV row, else --modality, else its AMOS id (amos_XXXX: CT below 500),
else its DICOM Modality tag, else the model when it was trained on one modality, else (with --guess-modality)
its intensities. --modality against a case's AMOS id or DICOM tag is an error of that case: a --meta row settles it.
"""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", nargs="?", help="experiment folder (or give --model)")
    p.add_argument("--model", default=None, help="model file made by `amos-autoseg export`")
    p.add_argument("--input", required=True, help="image file, folder of images, or DICOM series folder")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--folds", nargs="+", default=None, help="folds to ensemble (default: all trained)")
    common.add_config(p)
    p.add_argument("--device", default="auto", help="where to run: auto, cpu, cuda or cuda:N")
    p.add_argument("--no-tta", action="store_true", help="skip mirroring test-time augmentation")
    p.add_argument("--save-probabilities", action="store_true", help="also write OUT/<case>.npz")
    p.add_argument("--modality", default=None, choices=["CT", "MRI"],
                   help="modality of every input without a --meta row; refused for a case whose AMOS id or DICOM "
                        "tag says otherwise (not needed for a model trained on one modality)")
    p.add_argument("--guess-modality", action="store_true",
                   help="where nothing else tells a case's modality, guess it from the intensities (CT has air "
                        "at -1000 HU); each guess is logged with its reason")
    p.add_argument("--keep-going", action="store_true",
                   help="predict the good cases when some inputs are bad, list the bad ones at the end (exit 2)")
    p.add_argument("--meta", default=None, metavar="CSV",
                   help="CSV with columns case_id, modality[, phase] overriding the modality per case")
    p.add_argument("--no-postprocessing", action="store_true",
                   help="do not apply EXP/<config>/postprocessing.json")
    p.add_argument("--tile-batch-size", type=int, default=None, metavar="B",
                   help="tiles per forward pass (default: 1 on the CPU, the training batch size on CUDA)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="network arithmetic: auto = the plan's mixed precision on CUDA, bf16 on CPUs with AMX, "
                        "else fp32 (default: auto)")
    p.add_argument("--preview", action="store_true",
                   help="also write OUT/previews/<case>.png (amos-autoseg preview) for every predicted case")
    common.add_shard(p)


def run(args: argparse.Namespace) -> int:
    from amos_autoseg.errors import UsageError

    if (args.model is None) == (args.exp is None):
        raise UsageError("give either the experiment folder EXP or --model MODEL.zip")
    if args.tile_batch_size is not None and args.tile_batch_size < 1:
        raise UsageError(f"--tile-batch-size {args.tile_batch_size}: must be at least 1")
    from amos_autoseg.inference.run import PredictOptions, predict_folder

    options = PredictOptions(
        exp=args.exp or args.model, input=args.input, output=args.output, config=args.config, folds=args.folds,
        device=args.device, tta=not args.no_tta, save_probabilities=args.save_probabilities,
        modality=args.modality, meta=args.meta, postprocessing=not args.no_postprocessing,
        shard=args.shard, tile_batch_size=args.tile_batch_size, keep_going=args.keep_going,
        guess_modality=args.guess_modality, precision=args.precision,
    )
    from amos_autoseg.errors import InputErrors

    try:
        if args.model is not None:
            from amos_autoseg.packaging import predict_from_model

            predict_from_model(args.model, options)
        else:
            predict_folder(options)
    except InputErrors:
        if args.preview and args.keep_going:  # the good cases were predicted: preview them too
            _previews(args)
        raise
    if args.preview:
        _previews(args)
    return 0


def _previews(args: argparse.Namespace) -> None:
    """A preview for every case of this shard that has its prediction but no preview yet (OUT/previews/)."""
    import logging
    from pathlib import Path

    from amos_autoseg.inference.inputs import discover
    from amos_autoseg.preview import write_preview
    from amos_autoseg.utils.shard import parse_shard

    out = Path(args.output)
    for case_id, source in parse_shard(args.shard).select(discover(args.input)):
        seg, png = out / f"{case_id}.nii.gz", out / "previews" / f"{case_id}.png"
        if seg.is_file() and not png.is_file():
            write_preview(source, seg, png, modality=args.modality)
            logging.getLogger(__name__).info("preview: %s", png)
