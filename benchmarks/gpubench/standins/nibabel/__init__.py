"""Import-only stand-in for ``nibabel``, for nnU-Net on the GPU bench machine (see benchmarks/README.md).

nnU-Net imports ``nibabel`` at module level in code the bench never calls (file readers and writers, connected
components): the bench feeds nnU-Net TIFF files (its ``Tiff3DIO``) and numpy arrays. This folder is appended to
the END of ``sys.path`` only for nnU-Net's processes, so an installed nibabel always wins. Any use raises.
"""
from benchmarks.gpubench.standins._missing import module_getattr

__getattr__ = module_getattr("nibabel")
