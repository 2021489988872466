"""Component equivalence with nnU-Net v2's own code, as one table: loss, patch sampling, initialisation.

The comparisons are those of ``tests/test_components_vs_nnunet.py`` (both use ``tests/components_anchor.py``):

* the deep-supervision Dice+CE loss and its gradients on the same logits and targets against nnU-Net's
  ``DeepSupervisionWrapper(DC_and_CE_loss(..., MemoryEfficientSoftDiceLoss))`` with nnU-Net's weights, batch Dice
  on and off, with and without all-background targets;
* foreground oversampling and class-location sampling: ``BatchSource`` against ``nnUNetDataLoader`` over many
  draws (chi-square tests of the case drawn, the class and voxel a forced crop is centred on, random crop starts);
* initialisation: our network built from a plan against dynamic_network_architectures' with ``InitWeights_He``.

nnU-Net's modules come from this environment or the benchmarks' nnU-Net venv (``benchmarks/anchor.py``).
Run: ``python benchmarks/components_vs_nnunet.py [--draws 3000]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=3000, help="batches drawn by each tool for the sampling rows")
    args = ap.parse_args()

    import components_anchor as ca
    from nnunet_anchor import nnunet_module

    start = time.perf_counter()
    rows = ca.loss_rows(nnunet_module) + ca.sampling_rows(nnunet_module, args.draws) + ca.init_rows(nnunet_module)
    print("| component | metric | ours | nnU-Net | verdict |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.component} | {r.metric} | {r.ours} | {r.nnunet} | {'equal' if r.ok else 'DIFFERENT'} |")
    print(f"\n{sum(r.ok for r in rows)}/{len(rows)} equal, {time.perf_counter() - start:.0f} s")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
