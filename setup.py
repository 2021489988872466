"""Packaging for amos_autoseg (console script ``amos-autoseg``)."""
from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "amos_autoseg" / "_version.py").read_text(), re.M
).group(1)

setup(
    name="amos-autoseg",
    version=VERSION,
    description="Self-configuring 3D segmentation of abdominal organs in CT and MRI (AMOS benchmark)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["amos_autoseg", "amos_autoseg.*"]),
    package_data={"amos_autoseg": ["py.typed", "resources/*.json"]},
    include_package_data=True,
    install_requires=[
        # torch is a range on purpose: install the build you want (CPU or CUDA) first.
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "scikit-image>=0.21",
        # batchgenerators: rotated-patch extents for augmentation. acvl-utils is not needed: cropping uses a
        # box-local hole fill (nnU-Net's whole-volume fill is a RAM hog), padding is numpy's.
        "batchgenerators>=0.25",
        "blosc2>=2.5",
        "matplotlib>=3.7",
        "safetensors>=0.4",
        "psutil>=5.9",
        "tqdm>=4.60",
    ],
    # No "dicom" extra: SimpleITK (GDCM) reads DICOM series, so nothing more is needed for them.
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "surface-distance>=0.1", "jsonschema>=4"],
        # TensorBoard event files of training runs (EXP/<config>/fold_<k>/tensorboard/), beside log.csv
        "tensorboard": ["tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["amos-autoseg=amos_autoseg.cli.main:console"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
