"""amos_autoseg: self-configuring 3D segmentation of abdominal organs in CT and MRI (AMOS benchmark).

Stages, one package each: ``io`` (images, data folders), ``fingerprint``, ``planning``, ``preprocessing``,
``data``, ``augmentation``, ``network``, ``training``, ``inference``, ``evaluation``, ``synth`` (phantoms) and
``cli``. Importing this package is cheap: nothing heavy is imported until used.
"""
from amos_autoseg._version import __version__

__all__ = ["__version__"]
