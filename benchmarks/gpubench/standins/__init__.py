"""Import-only stand-ins for packages nnU-Net imports but the GPU bench never calls (SimpleITK, nibabel, cc3d).

Only :func:`benchmarks.gpubench.nnunet.standins_path` puts this folder on ``sys.path``, at its end.
"""
