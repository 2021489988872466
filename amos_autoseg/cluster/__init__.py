"""Scale-out on clusters: SLURM batch scripts for every stage of a benchmark run.

Public API:
    SlurmOptions, Resources, DEFAULT_RESOURCES, STAGES, ARRAY_STAGES  (amos_autoseg.cluster.options)
    render_jobs(opts) -> [Job], submit_script(jobs) -> str, write_scripts(opts) -> [Path]  (amos_autoseg.cluster.slurm)
"""
from __future__ import annotations

from amos_autoseg.cluster.options import ARRAY_STAGES, DEFAULT_RESOURCES, STAGES, Resources, SlurmOptions
from amos_autoseg.cluster.slurm import Job, render_jobs, submit_script, write_scripts

__all__ = [
    "ARRAY_STAGES",
    "DEFAULT_RESOURCES",
    "STAGES",
    "Job",
    "Resources",
    "SlurmOptions",
    "render_jobs",
    "submit_script",
    "write_scripts",
]
