"""Import-only stand-in for ``nibabel.orientations`` (see the package's docstring)."""
from benchmarks.gpubench.standins._missing import module_getattr

__getattr__ = module_getattr("nibabel.orientations")
