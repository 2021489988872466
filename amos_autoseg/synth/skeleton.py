"""Unlabelled structures around the organs: muscles, heart, colon, spine and pelvis.

``arm_parts`` and ``soft_parts`` are painted before the organs (organs win over colon and heart; muscles clip organs),
``bone_parts`` and :func:`paint_spine` after them (bone wins). Vertebrae repeat every ~32 mm with a disc at
z = 0 (L1/L2), a cortical shell around marrow, the spinal canal, pedicles and laminae, spinous and (lumbar)
transverse processes; below S1 the column turns posteriorly into a broad sacrum.
"""
from __future__ import annotations

import numpy as np

from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.anatomy import Body, Part, Builder, gas_level
from amos_autoseg.synth.grid import Grid, index_box, patient_coords
from amos_autoseg.synth.shapes import Shell, Tube


def soft_parts(body: Body, rng: np.random.Generator, min_radius: float = 0.0) -> list[Part]:
    """Psoas and paraspinal muscles, heart, colon and rectum (all unlabelled in AMOS)."""
    b = Builder(body, rng, min_radius)
    ys = 40.0  # reference spine y
    parts: list[Part] = []
    for s in (-1, 1):
        parts.append(Part(T.MUSCLE, b.tube([(22 * s, ys + 4, 70), (36 * s, ys + 2, -20), (50 * s, ys - 6, -110),
                                            (78 * s, -20, -200), (86 * s, -45, -260)], [6, 15, 21, 20, 17],
                                           amp=0.05, jitter=1.5), on=T.FATTY))
        parts.append(Part(T.MUSCLE, b.tube([(30 * s, ys + 48, 300), (34 * s, ys + 50, 0), (28 * s, ys + 45, -150)],
                                           [20, 26, 18], amp=0.05, jitter=1.0), on=T.FATTY))
    parts.append(Part(T.HEART, b.ellipsoid((12, -28, 228), (68, 52, 55), rz=-25, amp=0.04),
                      on=T.CAVITY + (T.MUSCLE,)))
    colon = b.tube([(-100, -5, -110), (-104, -8, 0), (-88, -50, 28), (-30, -78, 14), (30, -76, 12),
                    (88, -50, 52), (104, 0, 70), (106, 8, 0), (100, 0, -90), (55, -30, -140), (15, 5, -165),
                    (0, 50, -185), (0, 48, -255)], [26, 24, 22, 20, 20, 20, 20, 19, 19, 17, 16, 17, 16],
                   amp=0.1, jitter=5.0)
    parts.append(Part(T.BOWEL, colon, layers=((-0.22, T.STOOL),), on=T.CAVITY,
                      gas=(T.STOOL, T.BOWEL_GAS, gas_level(colon, rng.uniform(0.15, 0.45)))))
    return parts


def arm_parts(body: Body, rng: np.random.Generator) -> list[Part]:
    """Both arms along the sides of the body (arms down, as in most abdominal MRI), painted only over air.

    Fat outside, muscle inside, a bone (humerus, then forearm bones) in the core.
    """
    parts = []
    for s in (-1, 1):
        gap = rng.uniform(3.0, 25.0)
        r = np.array([44.0, 42.0, 34.0, 28.0]) * rng.uniform(0.85, 1.15) * (1 + body.fat / 120.0)
        x = s * (body.a + gap + r)
        y = rng.uniform(-10.0, 25.0) + np.array([10.0, 0.0, -15.0, -30.0])
        z = np.array([380.0, 40.0, 0.0, -260.0]) * body.sz
        layers = ((-0.2, T.MUSCLE), (-0.74, T.BONE_CORTEX), (-0.86, T.BONE_MARROW))
        parts.append(Part(T.FAT_SUBCUT, Tube(np.stack([x, y, z], axis=1), r), layers=layers, on=(T.AIR,)))
    return parts


def bone_parts(body: Body, rng: np.random.Generator, min_radius: float = 0.0) -> list[Part]:
    """Iliac wings, acetabula with femoral heads and necks, femoral shafts, pubic and ischial rami."""
    b = Builder(body, rng, min_radius)
    parts: list[Part] = []
    marrow = ((-0.35, T.BONE_MARROW),)
    for s in (-1, 1):
        wing = b.ellipsoid((42 * s, 12, -128), (58, 52, 52), rz=-20 * s, amp=0.03, jitter=3.0)
        parts.append(Part(T.BONE_CORTEX, Shell(wing, thickness=max(9.0, 2 * min_radius), axis=0, side=s, cut=0.3),
                          layers=marrow, on=T.BODY))  # iliac wing: a plate curving around the iliac fossa
        parts.append(Part(T.BONE_CORTEX, b.ellipsoid((94 * s, -12, -238), (24, 24, 24), amp=0.0, jitter=3.0),
                          layers=marrow, on=T.BODY))
        parts.append(Part(T.BONE_CORTEX, b.tube([(96 * s, -12, -238), (124 * s, -6, -262), (122 * s, -4, -420)],
                                                [15, 15, 14], amp=0.0, jitter=2.0), layers=marrow, on=T.BODY))
        parts.append(Part(T.BONE_CORTEX, b.tube([(86 * s, -30, -232), (12 * s, -78, -246)], [10, 9],
                                                amp=0.0, jitter=2.0), layers=marrow, on=T.BODY))
        parts.append(Part(T.BONE_CORTEX, b.tube([(88 * s, 0, -240), (60 * s, 22, -290)], [13, 11],
                                                amp=0.0, jitter=2.0), layers=marrow, on=T.BODY))
    parts.append(Part(T.BONE_CORTEX, b.tube([(0, -96, 150), (0, -100, 300)], [9, 12], amp=0.0, jitter=1.0),
                      layers=marrow, on=T.BODY))  # xiphoid and sternum
    return parts


def paint_spine(tissue: np.ndarray, grid: Grid, body: Body) -> None:
    """Paint the vertebral column and sacrum (over anything inside the body)."""
    sx, sy, sz = body.sx, body.sy, body.sz
    lo = np.array([-60.0 * sx, body.spine_y - 35.0 * sy, -280.0 * sz])
    hi = np.array([60.0 * sx, body.spine_y + 105.0 * sy, 600.0])
    box = index_box(grid, lo, hi)
    if box is None:
        return
    x, y, z = patient_coords(grid, *box)
    block = tissue[box]
    inside_body = block != T.AIR
    s1 = np.float32(-130.0 * sz)
    sacral = z < s1
    # centre line: lumbar lordosis, then the sacrum curving posteriorly
    yc = (np.float32(body.spine_y) - np.float32(8.0 * sy) * np.exp(-((z + 60.0 * sz) / (60.0 * sz)) ** 2)
          + np.where(sacral, np.float32(0.55) * (s1 - z), np.float32(0.0)))
    rx = np.float32(21.0 * sx) + np.float32(5.0 * sx) * np.clip((60.0 - z) / 150.0, 0.0, 1.0)
    rx = np.where(sacral, np.float32(28.0 * sx) + np.clip(s1 - z, 0, 40) * np.float32(0.6 * sx)
                  - np.clip(s1 - z - 60, 0, 60) * np.float32(0.6 * sx), rx)
    ry = np.where(sacral, np.float32(15.0 * sy), rx * np.float32(0.76 * sy / sx))
    pitch = np.float32(32.0 * sz)
    u = z / pitch - np.floor(z / pitch)  # position within a vertebral level; disc at u < 0.22
    disc = (u < np.float32(0.22)) & ~sacral
    rho = np.sqrt((x / rx) ** 2 + ((y - yc) / ry) ** 2)
    vb = (rho <= 1.0) & inside_body & (z > np.float32(-260.0 * sz))
    shell = (rho > 0.8) | (((u < 0.28) | (u > 0.94)) & ~sacral)  # endplates above the sacrum
    block[vb & ~disc & shell] = T.BONE_CORTEX
    block[vb & ~disc & ~shell] = T.BONE_MARROW
    block[vb & disc] = T.DISC
    # canal, arch and processes (above the sacrum)
    cy = yc + ry + np.float32(11.0 * sy)
    dist = np.sqrt(x * x + (y - cy) ** 2)
    arch_level = (u > 0.2) & (u < 0.85) & ~sacral & inside_body
    block[(dist > 9.0) & (dist < 15.0) & arch_level] = T.BONE_CORTEX
    block[(dist <= 9.0) & ~sacral & inside_body] = T.CSF
    spinous = (np.abs(x) < 5.0) & (y > cy + 12.0) & (y < cy + np.float32(45.0 * sy)) & (u > 0.35) & (u < 0.97)
    block[spinous & ~sacral & inside_body] = T.BONE_CORTEX
    transverse = ((np.abs(x) > 15.0) & (np.abs(x) < np.float32(48.0 * sx)) & (np.abs(y - cy + 6.0) < 6.0)
                  & (u > 0.45) & (u < 0.75) & (z < np.float32(40.0 * sz)))
    block[transverse & ~sacral & inside_body] = T.BONE_CORTEX

