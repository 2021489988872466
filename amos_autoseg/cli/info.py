"""Describe an experiment folder or a model file.

For an experiment: the plan (spacing, patch, network per configuration), the folds trained, their checkpoints and
validation means, and whether post-processing was chosen. For a model file (--model): it is verified first
(checksums, format version; a bad file exits with code 2), then its configuration, labels, folds, post-processing
and training-data summary are shown. --json prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import sys

from amos_autoseg.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp", metavar="EXP", nargs="?", help="experiment folder")
    p.add_argument("--model", default=None, help="model file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import json

    if (args.exp is None) == (args.model is None):
        raise UsageError("give either an experiment folder EXP or --model MODEL.zip")
    if args.model is not None:
        from amos_autoseg.packaging.describe import model_text
        from amos_autoseg.packaging.load import open_model

        info = open_model(args.model).info()
        text = model_text(info)
    else:
        from amos_autoseg.packaging.describe import describe_experiment, experiment_text

        info = describe_experiment(args.exp)
        text = experiment_text(info)
    sys.stdout.write((json.dumps(info, indent=2) if args.json else text) + "\n")
    return 0
