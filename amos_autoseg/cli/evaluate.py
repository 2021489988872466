"""DSC and NSD per case, organ and modality, written as metrics.json, metrics.csv and a report."""
from __future__ import annotations

import argparse

from amos_autoseg.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, help="folder of reference label maps")
    p.add_argument("--labels", default=None, metavar="DATASET_JSON", help="dataset.json giving the label set")
    p.add_argument("--nsd-tolerance-mm", default="1.0", metavar="T",
                   help="NSD tolerance in mm, or a JSON file mapping label ids to tolerances")
    p.add_argument("--out", required=True, metavar="METRICS_JSON", help="metrics.json to write")


def run(args: argparse.Namespace) -> int:
    return common.not_built("evaluate", 4)
