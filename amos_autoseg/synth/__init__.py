"""Seeded synthetic AMOS-like data: abdominal phantoms with the 15 organs, CT phases and MRI sequences.

``write_dataset(out, n_ct, n_mri, seed, size)`` writes a data folder in the AMOS layout; ``make_spec`` and
``make_case`` generate single cases in memory. Modules: ``anatomy`` (habitus and organ shapes in patient mm),
``body`` and ``skeleton`` (body wall, lungs, bowel, muscles, bones), ``grid`` (voxel grids and directions),
``ct`` and ``mri`` (intensities), ``writer`` (files).
"""
from __future__ import annotations

from amos_autoseg.synth.case import SIZES, CaseSpec, SynthCase, make_case, make_spec
from amos_autoseg.synth.writer import write_dataset

__all__ = ["SIZES", "CaseSpec", "SynthCase", "make_case", "make_spec", "write_dataset"]
