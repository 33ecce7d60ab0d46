"""The embedded cohort: a synthetic multi-vendor spine CE-T1 MRI study with known truth.

Each patient is one continuous 3D phantom in world coordinates (millimetres): a curved spine
segment (vertebral bodies with cortical rim and marrow, discs, neural arches with spinous and
transverse processes, canal and cord, paraspinal muscles, subcutaneous fat, lungs or psoas and
aorta) with fat-suppressed post-contrast T1 intensities, and 1-3 lesions in vertebral bodies.
Three DICOM series (sagittal, coronal and an oblique axial stack following the index
vertebra's endplate) are rendered by sampling that same phantom at each series' voxel centres,
averaged over the slice profile, so the views are geometrically consistent the way a real exam
is. The cohort imitates the study of Chen et al. 2022 (Front. Oncol. 12:981769): its three
scanners (1.5 T Siemens, 1.5 T GE, 3.0 T Philips), its Table 1 (age, sex, vertebral site,
tumour size by class), its class counts and its two radiologists' accuracy.

Coordinate frames: the phantom is defined in the DICOM patient frame (LPS, mm), which is what
ImagePositionPatient and ImageOrientationPatient are written in; everything this module
reports (truth lesion centres, mask affines, the ``marker_ras`` knob) is world RAS+ mm, the
NIfTI convention, ``ras = diag(-1, -1, 1) @ lps``.

Mask convention (what a correct DICOM-to-NIfTI conversion of the sagittal series gives, and what
ITK-SNAP saves on it): data ``[i, j, k]`` with ``i`` = DICOM column index, ``j`` = row index,
``k`` = slice index in order of increasing position along ``row cosines x column cosines``;
the affine maps ``(i, j, k)`` to RAS+ mm. Label value ``n`` marks the patient's lesion ``n``.

Layout written by :func:`make_cohort`::

    out_dir/manifest/   patients.csv lesions.csv series.csv readers.csv   (data_manifest schema)
                        dicom/<patient>/<series>/*.dcm   masks/<patient>_sagittal.nii.gz
    out_dir/truth/      truth.json  identity.csv  lesions.csv  series.csv
                        masks/<patient>_{sagittal,coronal,axial}.nii.gz   (checks only)

Difficulty: every lesion has a latent "metastasis-likeness" ``m ~ N(+-separability * 1.2, 1)``
(metastasis +, myeloma -); its enhancement pattern (homogeneous vs heterogeneous or rim),
margin irregularity and posterior-element and soft-tissue involvement are noisy functions of
``m``; size follows Table 1 and multiplicity the paper's lesion counts. ``separability=0`` makes
the classes indistinguishable in the images.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.spatial import ConvexHull, QhullError
from scipy.special import ndtri

__all__ = [
    "PAPER_CLASS_COUNTS",
    "POSITIONS",
    "VENDORS",
    "Truth",
    "load_truth",
    "make_cohort",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# Chen et al. 2022, Methods and Table 1: patients and lesions per class (label 1 = myeloma).
PAPER_CLASS_COUNTS: dict[int, tuple[int, int]] = {1: (79, 81), 0: (138, 188)}
_TABLE1 = {
    # label: (age mean, age sd, male count, female count, sites C/T/L/S, size mean cm, size sd)
    1: (58.57, 11.17, 53, 26, (12, 40, 21, 6), 4.03, 1.17),
    0: (56.64, 12.98, 74, 64, (35, 61, 35, 7), 3.85, 1.65),
}
_SIZE_OFFSET_CM = {1: 0.3, 0: -0.5}
SITES = ("cervical", "thoracic", "lumbar", "sacrococcygeal")
# Table 2 of the paper: radiologists' accuracy, AUC and F1 (myeloma positive).
_READERS = {"reader1": (0.6544, 0.6417, 0.5562), "reader2": (0.6912, 0.7085, 0.6455)}

POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL")
_POSITION_WEIGHTS = (0.72, 0.10, 0.08, 0.02, 0.04, 0.04)
# patient LPS -> scanner (gantry) axes; HFS is the identity by definition of the DICOM frame.
_POSITION_MATRIX = {
    "HFS": np.eye(3),
    "FFS": np.diag([-1.0, 1.0, -1.0]),
    "HFP": np.diag([-1.0, -1.0, 1.0]),
    "FFP": np.diag([1.0, -1.0, -1.0]),
    "HFDR": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "HFDL": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


@dataclass(frozen=True)
class _SeriesSpec:
    thickness: float  # mm
    gap: float  # mm between slabs (SpacingBetweenSlices = thickness + gap)
    pixel: float  # mm, square pixels
    rows: int
    cols: int
    tr: float
    te: float
    description: str


@dataclass(frozen=True)
class _Vendor:
    """One scanner of the paper's three, with the habits that matter to a reader."""

    key: str
    manufacturer: str
    model: str
    field_t: float
    software: str
    station: str
    institution: str
    patient_oriented: bool  # in-plane axes follow the patient (True) or the magnet
    noise: float  # Rician sigma relative to marrow-lesion contrast ~ 1
    fat_residual: float  # fat-suppression leftovers (relative signal)
    bits_stored: int
    stored_target: float  # stored value of the 99.5th percentile
    rescale: str  # "absent" | "unit" | "philips"
    numbering: str  # instance-number habit: "interleaved" | "reversed" | "random"
    file_pattern: str
    private_creator: str
    series: dict[str, _SeriesSpec] = field(default_factory=dict)


VENDORS: dict[str, _Vendor] = {
    "siemens": _Vendor(
        key="siemens", manufacturer="SIEMENS", model="Avanto", field_t=1.5,
        software="syngo MR B17", station="MRC25476", institution="LAKESIDE UNIV HOSPITAL",
        patient_oriented=True, noise=0.030, fat_residual=0.12, bits_stored=12,
        stored_target=1100.0, rescale="absent", numbering="interleaved",
        file_pattern="IM-0001-{n:04d}.dcm", private_creator="SIEMENS MR HEADER",
        series={
            "sagittal": _SeriesSpec(3.5, 0.35, 0.75, 240, 240, 520.0, 9.8, "t1_tse_sag_fs_post"),
            "coronal": _SeriesSpec(3.5, 0.35, 0.9375, 192, 192, 560.0, 9.8, "t1_tse_cor_fs_post"),
            "axial": _SeriesSpec(4.0, 0.4, 0.9, 160, 160, 600.0, 11.0, "t1_tse_tra_fs_post"),
        },
    ),
    "ge": _Vendor(
        key="ge", manufacturer="GE MEDICAL SYSTEMS", model="Signa HDxt", field_t=1.5,
        software="15\\LX\\MR Software release:15.0_M4_0910.a", station="GEMR1OC0",
        institution="Lakeside University Hospital", patient_oriented=False, noise=0.036,
        fat_residual=0.16, bits_stored=16, stored_target=2400.0, rescale="unit",
        numbering="reversed", file_pattern="I{n}.dcm", private_creator="GEMS_PARM_01",
        series={
            "sagittal": _SeriesSpec(4.0, 0.5, 0.76, 224, 224, 480.0, 10.4, "SAG T1 FS +C"),
            "coronal": _SeriesSpec(4.0, 0.5, 0.9375, 208, 176, 500.0, 10.4, "COR T1 FS +C"),
            "axial": _SeriesSpec(4.0, 1.0, 0.898, 160, 176, 520.0, 11.2, "AX T1 FS +C"),
        },
    ),
    "philips": _Vendor(
        key="philips", manufacturer="Philips Medical Systems", model="Achieva", field_t=3.0,
        software="3.2.3\\3.2.3.1", station="PHILIPS-7KQ2M9", institution="LAKESIDE UH MR3T",
        patient_oriented=False, noise=0.020, fat_residual=0.08, bits_stored=12,
        stored_target=1500.0, rescale="philips", numbering="random", file_pattern="IM_{n:04d}",
        private_creator="Philips MR Imaging DD 001",
        series={
            "sagittal": _SeriesSpec(3.5, 0.35, 0.70, 240, 240, 550.0, 8.0, "T1W_TSE_SPIR_SAG+C"),
            "coronal": _SeriesSpec(3.5, 0.35, 0.9, 192, 192, 550.0, 8.0, "T1W_TSE_SPIR_COR+C"),
            "axial": _SeriesSpec(3.5, 0.5, 0.82, 176, 176, 600.0, 8.0, "T1W_TSE_SPIR_TRA+C"),
        },
    ),
}
_VENDOR_WEIGHTS = {"siemens": 0.36, "ge": 0.34, "philips": 0.30}

# Intensities of fat-suppressed post-contrast T1 (relative units, enhancing lesion ~ 0.8).
_INTENSITY = {
    "marrow": 0.26, "cortex": 0.05, "disc": 0.17, "nucleus": 0.24, "csf": 0.07, "cord": 0.33,
    "arch": 0.22, "muscle": 0.30, "deep": 0.37, "lung": 0.03, "aorta": 0.92, "foramen": 0.30,
}

# Vertebral levels and their sizes (mm): body height, disc below, body depth (AP), body width.
_LEVELS = (
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)] + [f"S{i}" for i in range(1, 6)]
)


def _level_dims(level: str) -> tuple[float, float, float, float]:
    region, n = level[0], int(level[1:])
    if region == "C":
        f = (n - 1) / 6
        return 13.5 + 1.5 * f, 5.0, 15.5 + 2.0 * f, 19.0 + 5.0 * f
    if region == "T":
        f = (n - 1) / 11
        return 17.0 + 7.0 * f, 4.0 + 3.0 * f, 18.0 + 12.0 * f, 25.0 + 12.0 * f
    if region == "L":
        f = (n - 1) / 4
        return 25.0 + 2.0 * f, 9.0 + 2.5 * f, 31.0 + 3.0 * f, 40.0 + 8.0 * f
    f = (n - 1) / 4  # sacrum: fused, shrinking caudally
    return 24.0 - 11.0 * f, 1.6, 32.0 - 16.0 * f, 46.0 - 24.0 * f


_SITE_LEVELS = {
    "cervical": [f"C{i}" for i in range(3, 8)],
    "thoracic": [f"T{i}" for i in range(2, 13)],
    "lumbar": [f"L{i}" for i in range(1, 6)],
    "sacrococcygeal": ["S1", "S2", "S3"],
}
_SITE_BODY = {
    # canal radii (AP, LR), cord radii or None, spinous length,
    # body outline (centre u, AP and LR semi-axes), subcutaneous fat thickness range
    "cervical": ((6.5, 12.0), (3.8, 6.0), 16.0, (14.0, 60.0, 56.0), (5.0, 12.0)),
    "thoracic": ((7.5, 8.0), (4.2, 4.8), 28.0, (38.0, 112.0, 160.0), (8.0, 22.0)),
    "lumbar": ((8.0, 11.0), None, 28.0, (42.0, 138.0, 165.0), (10.0, 30.0)),
    "sacrococcygeal": ((5.5, 12.0), None, 12.0, (40.0, 112.0, 170.0), (10.0, 30.0)),
}

_NAME_SURNAMES = (
    "WANG", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO", "ZHOU", "XU", "SUN", "ZHU", "GUO",
    "LUO", "LIANG", "SONG", "ZHENG", "XIE", "HAN", "TANG", "FENG", "DENG", "CAO", "PENG", "ZENG",
)
_NAME_GIVEN = (
    "XIUYING", "GUOQIANG", "JIANHUA", "MEILING", "ZHIWEI", "HAIYAN", "LIJUAN", "YUFENG",
    "SHUFEN", "WEIDONG", "GUIYING", "JIANGUO", "XIAOMING", "YONGMEI", "DEHUA", "CHUNLAN",
    "WENBIN", "HONGXIA", "ZHENGANG", "YULAN", "SHAOHUA", "LIHONG", "MINGHUI", "FENGYING",
)


# ----------------------------------------------------------------------------------------------
# knobs and cohort plan


@dataclass(frozen=True)
class _Knobs:
    separability: float = 1.0
    class_counts: dict[int, tuple[int, int]] | None = None
    vendors: tuple[str, ...] | None = None
    positions: tuple[str, ...] | None = None
    marker_ras: tuple[float, float, float] | None = None
    noise: bool = True
    n_jobs: int = -1
    progress: bool = True
    overwrite: bool = False


def _parse_knobs(knobs: Mapping[str, Any]) -> _Knobs:
    known = {f for f in _Knobs.__dataclass_fields__}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise TypeError(f"make_cohort: unknown knob(s) {unknown}; known: {sorted(known)}")
    k = dict(knobs)
    if "separability" in k and not (isinstance(k["separability"], int | float)
                                    and k["separability"] >= 0):
        raise ValueError(f"separability must be a number >= 0, got {k['separability']!r}")
    for name, allowed in (("vendors", VENDORS), ("positions", POSITIONS)):
        if k.get(name) is not None:
            values = (k[name],) if isinstance(k[name], str) else tuple(k[name])
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name}: {bad or values!r} not among {list(allowed)}")
            k[name] = values
    if k.get("marker_ras") is not None:
        marker = tuple(float(x) for x in k["marker_ras"])
        if len(marker) != 3:
            raise ValueError("marker_ras must be three world RAS+ coordinates in mm")
        k["marker_ras"] = marker
    if k.get("class_counts") is not None:
        counts = {int(lab): (int(p), int(les)) for lab, (p, les) in k["class_counts"].items()}
        if set(counts) != {0, 1}:
            raise ValueError("class_counts needs labels 0 and 1: {label: (patients, lesions)}")
        for lab, (p, les) in counts.items():
            if p < 0 or not p <= les <= 3 * p:
                raise ValueError(
                    f"class_counts[{lab}] = ({p}, {les}): each patient has 1-3 lesions"
                )
        k["class_counts"] = counts
    return _Knobs(**k)


def _class_counts(n_patients: int, knobs: _Knobs) -> dict[int, tuple[int, int]]:
    if knobs.class_counts is not None:
        total = sum(p for p, _ in knobs.class_counts.values())
        if total != n_patients:
            raise ValueError(f"class_counts has {total} patients but n_patients={n_patients}")
        return knobs.class_counts
    paper_patients = sum(p for p, _ in PAPER_CLASS_COUNTS.values())
    n_mm = round(n_patients * PAPER_CLASS_COUNTS[1][0] / paper_patients)
    if n_patients >= 2:
        n_mm = min(max(n_mm, 1), n_patients - 1)
    counts = {}
    for label, n in ((1, n_mm), (0, n_patients - n_mm)):
        p, les = PAPER_CLASS_COUNTS[label]
        counts[label] = (n, min(3 * n, max(n, round(n * les / p))))
    return counts


def _allocate(n: int, weights: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """``n`` category indices in proportion to ``weights`` (largest remainder), shuffled."""
    w = np.asarray(weights, float) / np.sum(weights)
    base = np.floor(w * n).astype(int)
    rest = n - base.sum()
    order = np.argsort(-(w * n - base), kind="stable")
    base[order[:rest]] += 1
    out = np.repeat(np.arange(len(w)), base)
    return rng.permutation(out)


def _plan(n_patients: int, seed: int, knobs: _Knobs) -> list[dict[str, Any]]:
    """Cohort-level draws: class, demographics, site, scanner, position, lesion counts."""
    root = np.random.SeedSequence(seed)
    cohort_seq, *patient_seqs = root.spawn(n_patients + 1)
    rng = np.random.default_rng(cohort_seq)
    counts = _class_counts(n_patients, knobs)
    labels = rng.permutation(np.repeat([1, 0], [counts[1][0], counts[0][0]]))
    plans: list[dict[str, Any]] = [{} for _ in range(n_patients)]
    for label in (1, 0):
        idx = np.flatnonzero(labels == label)
        n, n_les = counts[label]
        age_m, age_sd, male, female, sites, _, _ = _TABLE1[label]
        sex = _allocate(len(idx), (male, female), rng)
        site = _allocate(len(idx), sites, rng)
        ages = np.clip(np.round(rng.normal(age_m, age_sd, len(idx))), 17, 86)
        extra = np.zeros(len(idx), int)
        for _ in range(n_les - n):  # extra lesions, at most 3 per patient
            free = np.flatnonzero(extra < 2)
            extra[rng.choice(free)] += 1
        for j, i in enumerate(idx):
            plans[i].update(label=int(label), age=int(ages[j]), sex="MF"[sex[j]],
                            site=SITES[site[j]], n_lesions=int(1 + extra[j]))
    vendor_keys = list(_VENDOR_WEIGHTS)
    vendors = rng.choice(vendor_keys, size=n_patients, p=list(_VENDOR_WEIGHTS.values()))
    positions = rng.choice(POSITIONS, size=n_patients, p=_POSITION_WEIGHTS)
    for i, plan in enumerate(plans):
        plan["patient_id"] = f"P{i + 1:03d}"
        plan["vendor"] = knobs.vendors[i % len(knobs.vendors)] if knobs.vendors else vendors[i]
        plan["position"] = (knobs.positions[i % len(knobs.positions)] if knobs.positions
                            else str(positions[i]))
        plan["seed_seq"] = patient_seqs[i]
        plan["vendor"] = str(plan["vendor"])
    return plans


# ----------------------------------------------------------------------------------------------
# the phantom


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class _Phantom:
    """One patient's spine in world LPS mm; :meth:`render` samples it at arbitrary points.

    Internally the spine is straightened: a point maps to ``(s, u, v)`` = arc length along a
    circular centreline (superior +), offset along the local anterior normal, and lateral
    offset (patient left +); the index vertebra's body centre is ``(0, 0, 0)``.
    """

    def __init__(self, plan: dict[str, Any], rng: np.random.Generator, knobs: _Knobs) -> None:
        self.site = plan["site"]
        site = self.site
        canal, cord, spinous, outline, fat_range = _SITE_BODY[site]
        scale = rng.uniform(0.92, 1.08)
        levels = _SITE_LEVELS[site]
        index_level = levels[rng.integers(len(levels))]
        i0 = _LEVELS.index(index_level)
        ks = np.arange(-3, 4)
        # k = +1 is the vertebra above (superior); clamp to real levels at the column's ends
        names = [_LEVELS[min(max(i0 - k, 0), len(_LEVELS) - 1)] for k in ks]
        dims = np.array([_level_dims(n) for n in names]) * scale
        self.levels = names
        self.k_index = ks
        self.height, self.disc, depth, width = dims.T
        self.a_u, self.a_v = depth / 2, width / 2
        # body centres along s: k = 0 at 0, neighbours one pitch (half bodies + disc) away
        centres = np.zeros(len(ks))
        for j in range(4, len(ks)):  # superior
            centres[j] = centres[j - 1] + self.height[j - 1] / 2 + self.disc[j] + self.height[j] / 2
        for j in range(2, -1, -1):  # inferior; disc j sits below body j
            centres[j] = centres[j + 1] - self.height[j + 1] / 2 - self.disc[j] - self.height[j] / 2
        self.centres = centres
        self.bounds = (centres[1:] + centres[:-1]) / 2  # mid-disc planes
        self.canal = (canal[0] * scale, canal[1] * scale)
        self.cord = None if cord is None else (cord[0] * scale, cord[1] * scale)
        self.u_canal = -(self.a_u[3] + self.canal[0] + 1.0)
        self.ring = 5.0 * scale  # neural-arch thickness
        self.spinous = spinous * scale
        self.outline = outline
        self.fat = rng.uniform(*fat_range)
        # curvature: lordosis (< 0) in the neck and low back, kyphosis (> 0) elsewhere
        radius = {"cervical": (150, 260), "thoracic": (260, 420), "lumbar": (200, 340),
                  "sacrococcygeal": (110, 170)}[site]
        sign = -1.0 if site in ("cervical", "lumbar") else 1.0
        self.kappa = sign / rng.uniform(*radius)
        tilt = rng.uniform(22, 32) if site == "sacrococcygeal" else rng.uniform(-17, 17)
        self.phi0 = math.radians(tilt)
        # local (left, anterior, superior) -> LPS, with a few degrees of roll and yaw
        base = np.diag([1.0, -1.0, 1.0])
        jitter = _rot(1, math.radians(rng.normal(0, 2.5))) @ _rot(2, math.radians(rng.normal(0, 3)))
        self.B = jitter @ base
        # index vertebral body centre in LPS: spine lies posterior of the isocentre
        self.origin = np.array([rng.uniform(-12, 12), rng.uniform(25, 60), rng.uniform(-35, 35)])
        self.fat_residual = VENDORS[plan["vendor"]].fat_residual
        # bias field: receive coil under the patient's back (scanner +Y), weaker far from it
        self.position = plan["position"]
        self.bias_decay = rng.uniform(0.25, 0.45)  # log-intensity drop per 100 mm from the coil
        self.bias_poly = rng.normal(0, 0.06, 3)
        self.marker_lps = (None if knobs.marker_ras is None
                           else LPS_TO_RAS @ np.asarray(knobs.marker_ras, float))
        self.lesions: list[dict[str, Any]] = []

    # ---- geometry helpers
    def to_local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local Cartesian (left, anterior, superior; float32) -> straightened ``(s, u, v)``."""
        k = self.kappa
        sigma = np.float32(-1.0 if k > 0 else 1.0)
        cy, cz = math.cos(self.phi0) / k, -math.sin(self.phi0) / k
        wy, wz = y - np.float32(cy), z - np.float32(cz)
        rho = np.sqrt(wy * wy + wz * wz)
        # float32 arctan2 is vectorised; the segment never reaches the branch cut (|phi| < pi)
        phi = np.arctan2(-sigma * wz, sigma * wy)
        s = (phi - np.float32(self.phi0)) * np.float32(1.0 / k)
        u = np.float32(1.0 / k) + sigma * rho
        return s, u, x

    def local_grid(self, base: np.ndarray, step_r: np.ndarray, step_c: np.ndarray, rows: int,
                   cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local Cartesian coordinates (flattened float32, C order ``[row, col]``) of the LPS
        grid ``base + r * step_r + c * step_c``."""
        b = (base - self.origin) @ self.B
        dr, dc = step_r @ self.B, step_c @ self.B
        r = np.arange(rows, dtype=np.float32)[:, None]
        c = np.arange(cols, dtype=np.float32)[None, :]
        return tuple((np.float32(b[a]) + r * np.float32(dr[a]) + c * np.float32(dc[a])).ravel()
                     for a in range(3))

    def to_world(self, s: float, u: float, v: float) -> np.ndarray:
        """Straightened ``(s, u, v)`` -> LPS point (3,)."""
        k = self.kappa
        phi = self.phi0 + k * s
        n0 = np.array([math.cos(self.phi0), -math.sin(self.phi0)])
        n = np.array([math.cos(phi), -math.sin(phi)])
        yz = n0 / k + (u - 1.0 / k) * n
        return self.origin + self.B @ np.array([v, yz[0], yz[1]])

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World unit vectors (left, anterior, superior tangent) of the spine at ``s``."""
        phi = self.phi0 + self.kappa * s
        left = self.B @ np.array([1.0, 0.0, 0.0])
        ant = self.B @ np.array([0.0, math.cos(phi), -math.sin(phi)])
        sup = self.B @ np.array([0.0, math.sin(phi), math.cos(phi)])
        return left, ant, sup

    def bias(self, base: np.ndarray, step_r: np.ndarray, step_c: np.ndarray, rows: int,
             cols: int) -> np.ndarray:
        """Smooth receive-coil sensitivity (multiplicative, ~1 at the spine) on an LPS grid
        ``base + r * step_r + c * step_c``, shape ``(rows, cols)``."""
        m = _POSITION_MATRIX[self.position]
        r = np.arange(rows, dtype=np.float64)[:, None]
        c = np.arange(cols, dtype=np.float64)[None, :]
        q0, qr, qc = m @ (base - self.origin), m @ step_r, m @ step_c  # scanner axes
        qx, qy, qz = (q0[a] + r * qr[a] + c * qc[a] for a in range(3))
        # receive coil under the patient (scanner +Y): signal falls with distance from it
        log_b = self.bias_decay * qy / 100.0
        log_b = log_b + self.bias_poly[0] * qz / 100 + self.bias_poly[1] * qx / 100
        log_b = log_b + self.bias_poly[2] * (qz / 100) ** 2
        return np.exp(log_b).astype(np.float32)

    # ---- anatomy
    def anatomy(self, s: np.ndarray, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
        """Tissue intensity and the fields lesions need, at straightened points."""
        f32 = np.float32
        val = np.zeros(s.shape, f32)
        # body outline with a subcutaneous fat rim, deep tissue inside
        uo, ao, wo = self.outline
        e_out = np.sqrt(((u - f32(uo)) / f32(ao)) ** 2 + (v / f32(wo)) ** 2)
        inside = e_out <= 1
        val[inside] = self.fat_residual
        deep = e_out <= 1 - self.fat / min(ao, wo)
        val[deep] = _INTENSITY["deep"]
        if self.site == "thoracic":
            for side in (-1.0, 1.0):
                e_l = np.sqrt(((u - f32(self.a_u[3] + 55)) / f32(70)) ** 2
                              + ((v - f32(side * (self.a_v[3] + 62))) / f32(52)) ** 2)
                val[e_l <= 1] = _INTENSITY["lung"]
        if self.site in ("thoracic", "lumbar"):
            e_a = np.sqrt(((u - f32(self.a_u[3] + 12)) / 11) ** 2
                          + ((v - f32(0.45 * self.a_v[3] + 6)) / 11) ** 2)
            val[e_a <= 1] = _INTENSITY["aorta"]
        if self.site == "lumbar":
            for side in (-1.0, 1.0):
                e_p = np.sqrt((u / f32(15)) ** 2 + ((v - f32(side * (self.a_v[3] + 15))) / 16) ** 2)
                val[e_p <= 1] = _INTENSITY["muscle"]
        # paraspinal muscles around the spinous process
        um = self.u_canal - self.canal[0] - self.spinous * 0.55
        for side in (-1.0, 1.0):
            e_m = np.sqrt(((u - f32(um)) / f32(self.spinous * 0.75 + 6)) ** 2
                          + ((v - f32(side * (self.canal[1] + 14))) / f32(self.canal[1] + 12)) ** 2)
            val[(e_m <= 1) & deep] = _INTENSITY["muscle"]
        # per-vertebra quantities
        k = np.searchsorted(self.bounds, s).astype(np.int8)
        s_v = s - self.centres[k].astype(f32)
        half_h = (self.height[k] / 2).astype(f32)
        a_u = self.a_u[k].astype(f32)
        a_v = self.a_v[k].astype(f32)
        # neural arch: ring around the canal, shorter than the body (foramina between)
        cu, cv = self.canal
        e_c = np.sqrt(((u - f32(self.u_canal)) / f32(cu)) ** 2 + (v / f32(cv)) ** 2)
        ring_e = 1 + self.ring / min(cu, cv)
        arch_s = np.abs(s_v) <= 0.75 * half_h
        arch = (e_c > 1) & (e_c <= ring_e) & arch_s & (u < -a_u * 0.6)
        # spinous process slopes caudally with depth; transverse processes laterally
        depth = f32(self.u_canal - cu - self.ring * 0.6) - u
        spin = ((depth >= 0) & (depth <= f32(self.spinous)) & (np.abs(v) <= 3.0)
                & (np.abs(s_v + 0.35 * depth) <= 0.3 * half_h + 1.5))
        trans = ((np.abs(u - f32(self.u_canal)) <= 4.5) & (np.abs(v) >= cv)
                 & (np.abs(v) <= cv + self.ring + 14.0) & (np.abs(s_v) <= 0.22 * half_h + 1.5)
                 & (self.site != "sacrococcygeal"))
        arch_all = arch | spin | trans
        val[arch_all] = _INTENSITY["arch"]
        val[(e_c <= ring_e) & ~arch_all & (e_c > 1) & (u < -a_u * 0.6)] = _INTENSITY["foramen"]
        # canal and cord
        canal = e_c <= 1
        val[canal] = _INTENSITY["csf"]
        if self.cord is not None:
            e_cord = np.sqrt(((u - f32(self.u_canal)) / f32(self.cord[0])) ** 2
                             + (v / f32(self.cord[1])) ** 2)
            val[e_cord <= 1] = _INTENSITY["cord"]
        # bodies and discs: signed distance (mm, negative inside) of a rounded cylinder
        e_b = np.sqrt((u / a_u) ** 2 + (v / a_v) ** 2)
        d_xy = (e_b - 1) * np.minimum(a_u, a_v)
        d_s = np.abs(s_v) - half_h
        d_body = np.maximum(d_xy, d_s)
        disc = (d_s > 0) & (d_xy <= 0.6)
        val[disc] = _INTENSITY["disc"]
        val[disc & (e_b < 0.55)] = _INTENSITY["nucleus"]
        body = d_body <= 0
        val[body] = _INTENSITY["cortex"]
        val[d_body <= -1.3] = _INTENSITY["marrow"]
        return {"val": val, "k": k, "d_body": d_body, "arch": arch | trans, "s_v": s_v}

    # ---- lesions
    def add_lesion(self, rng: np.random.Generator, *, label: int, k: int, m: float,
                   diameter_cm: float, lesion_id: str, number: int) -> None:
        j = int(np.flatnonzero(self.k_index == k)[0])
        h, a_u, a_v = self.height[j], self.a_u[j], self.a_v[j]
        centre = np.array([self.centres[j] + rng.uniform(-0.15, 0.15) * h,
                           rng.uniform(-0.25, 0.2) * a_u, rng.uniform(-0.3, 0.3) * a_v])
        r = diameter_cm * 10 / 2
        radii = r * np.array([rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)])
        radii = np.maximum(radii, 4.0)
        strength = _sigmoid(1.7 * (m + rng.normal(0, 0.45)))
        kind = "rim" if m + rng.normal(0, 0.8) > 0.6 else "heterogeneous"
        pattern = "homogeneous" if strength < 0.35 else kind
        irregularity = 0.03 + 0.27 * _sigmoid(1.6 * (m + rng.normal(0, 0.5)))
        posterior = bool(rng.random() < _sigmoid(1.6 * m - 0.6))
        soft = bool(rng.random() < _sigmoid(1.6 * m - 1.3))
        lobes = []
        if posterior:
            side = rng.choice([-1.0, 1.0])
            lobes.append({"kind": "posterior", "centre": np.array(
                [self.centres[j], self.u_canal + 0.2 * self.canal[0],
                 side * (self.canal[1] + self.ring * 0.5)]),
                "radii": np.array([0.45 * h, 9.0, 6.0 + 4 * rng.random()])})
        if soft:
            angle = rng.choice([0.0, 0.7, -0.7, math.pi])  # anterior, antero-lateral, epidural
            direction = np.array([0.0, math.cos(angle), math.sin(angle)])
            reach = (a_u if angle != math.pi else a_u) + 2.0
            rad = rng.uniform(6.0, 13.0)
            lobes.append({"kind": "soft tissue", "centre": np.array(
                [centre[0], reach * direction[1], reach * direction[2] * a_v / a_u])
                + direction * rad * 0.4, "radii": np.array([rad * 1.3, rad, rad])})
        # random low-frequency directions for the margin and a texture field (world-fixed)
        n_dir = 7
        dirs = rng.normal(size=(n_dir, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freq = rng.uniform(2.0, 5.0 + 4.0 * irregularity / 0.3, n_dir)
        phase = rng.uniform(0, 2 * np.pi, n_dir)
        amp = rng.normal(0, 1, n_dir)
        amp /= np.sqrt(np.sum(amp ** 2) / 2) + 1e-9
        n_tex = 16
        wave = rng.normal(size=(n_tex, 3))
        wave *= (2 * np.pi / rng.uniform(2.5, 12.0, n_tex) / np.linalg.norm(wave, axis=1))[:, None]
        # straightened bounding box of everything the lesion can occupy (for the prescriptions)
        breach = 1.0 + 0.9 * max(0.0, float(radii.max()) - max(a_u, h / 2))
        reach = radii * (1 + irregularity)
        cap = np.array([h / 2, a_u, a_v]) + breach
        mid = np.array([self.centres[j], 0.0, 0.0])
        lo = np.maximum(centre - reach, mid - cap)
        hi = np.minimum(centre + reach, mid + cap)
        for lobe in lobes:
            lo = np.minimum(lo, lobe["centre"] - lobe["radii"] * 1.2)
            hi = np.maximum(hi, lobe["centre"] + lobe["radii"] * 1.2)
        self.lesions.append({
            "extent": (lo, hi), "breach": breach,
            "kind": kind, "lesion_id": lesion_id, "number": number, "label": label, "k": k, "level":
            self.levels[j], "m": m, "centre": centre, "radii": radii, "pattern": pattern,
            "strength": strength, "irregularity": irregularity, "posterior": posterior,
            "soft_tissue": soft, "lobes": lobes, "dirs": dirs.astype(np.float32),
            "freq": freq, "phase": phase, "amp": amp, "wave": wave.astype(np.float32),
            "tex_phase": rng.uniform(0, 2 * np.pi, n_tex), "enhancement":
            float(np.clip(rng.normal(0.80, 0.07), 0.6, 0.98)), "diameter_nominal_cm": diameter_cm,
        })

    def _lesion(self, les: dict[str, Any], s: np.ndarray, u: np.ndarray, v: np.ndarray,
                ana: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, occupancy in [0, 1], intensity) of one lesion at straightened points."""
        f32 = np.float32
        ext = max(les["radii"].max() * 1.35, 1.0)
        boxes = [(les["centre"], np.full(3, ext))]
        for lobe in les["lobes"]:
            boxes.append((lobe["centre"], lobe["radii"] * 1.1 + 1))
        sel = np.zeros(s.shape, bool)
        for c, half in boxes:
            sel |= ((np.abs(s - f32(c[0])) <= half[0]) & (np.abs(u - f32(c[1])) <= half[1])
                    & (np.abs(v - f32(c[2])) <= half[2]))
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            return idx, np.zeros(0, f32), np.zeros(0, f32)
        ss, uu, vv = s[idx], u[idx], v[idx]
        c, r = les["centre"], les["radii"]
        ds = (ss - f32(c[0])) / f32(r[0])
        du = (uu - f32(c[1])) / f32(r[1])
        dv = (vv - f32(c[2])) / f32(r[2])
        rho = np.sqrt(ds * ds + du * du + dv * dv) + f32(1e-6)
        unit = np.stack([ds / rho, du / rho, dv / rho], axis=1)
        g = np.zeros(idx.size, f32)
        for d, fr, ph, a in zip(les["dirs"], les["freq"], les["phase"], les["amp"], strict=True):
            g += f32(a) * np.cos(f32(fr) * (unit @ d) + f32(ph))
        boundary = 1 + f32(les["irregularity"]) * g / f32(1.6)
        mean_r = f32(r.mean())
        occ = np.clip(0.5 + (boundary - rho) * mean_r / f32(0.7), 0, 1)
        # confined to its own vertebral body; lesions larger than the body expand through
        # the cortex (les["breach"] mm), as large myeloma and metastatic deposits do
        own = ana["k"][idx] == np.flatnonzero(self.k_index == les["k"])[0]
        occ *= np.clip(0.5 - (ana["d_body"][idx] - f32(les["breach"])) / f32(0.7), 0, 1) * own
        r_norm = rho / boundary
        for lobe in les["lobes"]:
            lc, lr = lobe["centre"], lobe["radii"]
            rl = np.sqrt(((ss - f32(lc[0])) / f32(lr[0])) ** 2
                         + ((uu - f32(lc[1])) / f32(lr[1])) ** 2
                         + ((vv - f32(lc[2])) / f32(lr[2])) ** 2)
            rl = rl / (1 + f32(0.5 * les["irregularity"]) * g / f32(1.6))
            o = np.clip(0.5 + (1 - rl) * f32(lr.mean()) / f32(0.7), 0, 1)
            if lobe["kind"] == "posterior":
                o *= (ana["arch"][idx] | (ana["d_body"][idx] <= 1.0)) & own
            else:  # soft tissue: not into another vertebra's bone
                o *= (ana["d_body"][idx] > 0) | own
            # one outline for the union, so a rim runs around the whole lesion
            r_norm = np.where(o > 0, np.minimum(r_norm, rl), r_norm)
            occ = np.maximum(occ, o)
        # enhancement: homogeneous, heterogeneous (textured, necrotic patches) or rim
        pts = np.stack([ss, uu, vv], axis=1)
        tex = np.zeros(idx.size, f32)
        for w, ph in zip(les["wave"], les["tex_phase"], strict=True):
            tex += np.cos(pts @ w + f32(ph))
        tex *= f32(math.sqrt(2.0 / len(les["wave"])))
        h = les["strength"]
        base = f32(les["enhancement"])
        if les["kind"] == "rim":  # weak strength: a faint rim, labelled homogeneous
            centre_level = 1 - 0.7 * h
            edge = np.clip((r_norm - (1 - 0.38)) / 0.16, 0, 1)
            profile = f32(centre_level) + f32(1 - centre_level) * edge * edge * (3 - 2 * edge)
            inten = base * profile * (1 + f32(0.08 + 0.1 * h) * tex)
        else:
            amp = 0.06 + 0.5 * h
            inten = base * (1 + f32(amp) * tex)
            inten = np.where(tex < -0.7, inten * f32(1 - 0.55 * h), inten)
        return idx, occ.astype(f32), inten.astype(f32)

    def render(self, x: np.ndarray, y: np.ndarray, z: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Intensity (N,) and per-lesion occupancy (L, N), float32, at local Cartesian points."""
        s, u, v = self.to_local(x, y, z)
        ana = self.anatomy(s, u, v)
        val = ana["val"]
        occ_all = np.zeros((len(self.lesions), s.size), np.float32)
        for n, les in enumerate(self.lesions):
            idx, occ, inten = self._lesion(les, s, u, v, ana)
            if idx.size:
                occ_all[n, idx] = occ
                val[idx] = val[idx] * (1 - occ) + inten * occ
        if self.marker_lps is not None:
            mk = (self.marker_lps - self.origin) @ self.B
            d2 = ((x - np.float32(mk[0])) ** 2 + (y - np.float32(mk[1])) ** 2
                  + (z - np.float32(mk[2])) ** 2)
            # a Gaussian blob, wide enough that the slab nearest to it is always the brightest
            near = d2 < 16.0
            val[near] += np.float32(60.0) * np.exp(-d2[near] / np.float32(2 * 0.6 ** 2))
        return val, occ_all


# ----------------------------------------------------------------------------------------------
# series geometry and rendering


@dataclass
class _Geometry:
    """A stack of slices: LPS origin of voxel (row 0, col 0, slice 0), unit axes, spacings."""

    origin: np.ndarray
    row_dir: np.ndarray  # along a row (increasing column index), IOP[0:3]
    col_dir: np.ndarray  # down a column (increasing row index), IOP[3:6]
    normal: np.ndarray  # row_dir x col_dir, slice k at origin + k * spacing * normal
    pixel: tuple[float, float]  # (row spacing, column spacing) = DICOM PixelSpacing
    spacing: float
    thickness: float
    rows: int
    cols: int
    n_slices: int

    def affine_lps(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, 0] = self.row_dir * self.pixel[1]
        a[:3, 1] = self.col_dir * self.pixel[0]
        a[:3, 2] = self.normal * self.spacing
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """Voxel ``(i = column, j = row, k = slice)`` -> world RAS+ mm."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()


def _inplane_axes(normal: np.ndarray, position: str, patient_oriented: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cosines (LPS) a scanner writes for a slice with this normal.

    Scanners pick in-plane axes by display convention (sagittal: anterior left, head up;
    coronal: patient right on the left, head up; axial: right on the left, anterior up). Some
    vendors apply it in the patient frame, others in the magnet's frame, so for a prone or
    decubitus patient the latter write rotated or flipped cosines.
    """
    m = np.eye(3) if patient_oriented else _POSITION_MATRIX[position]
    n = m @ normal
    dom = int(np.argmax(np.abs(n)))
    pref_row, pref_col = {0: ((0, 1, 0), (0, 0, -1)), 1: ((1, 0, 0), (0, 0, -1)),
                          2: ((1, 0, 0), (0, 1, 0))}[dom]
    r = np.asarray(pref_row, float)
    r = r - (r @ n) * n
    r /= np.linalg.norm(r)
    c = np.asarray(pref_col, float)
    c = c - (c @ n) * n - (c @ r) * r
    c /= np.linalg.norm(c)
    return m.T @ r, m.T @ c


def _stack(centre: np.ndarray, normal: np.ndarray, spec: _SeriesSpec, n_slices: int,
           position: str, patient_oriented: bool, rng: np.random.Generator) -> _Geometry:
    row_dir, col_dir = _inplane_axes(normal, position, patient_oriented)
    nrm = np.cross(row_dir, col_dir)
    pixel = spec.pixel * rng.uniform(0.96, 1.04)
    pixel = round(pixel, 4)
    spacing = spec.thickness + spec.gap
    origin = (centre - (n_slices - 1) / 2 * spacing * nrm
              - (spec.cols - 1) / 2 * pixel * row_dir - (spec.rows - 1) / 2 * pixel * col_dir)
    return _Geometry(origin=origin, row_dir=row_dir, col_dir=col_dir, normal=nrm,
                     pixel=(pixel, pixel), spacing=spacing, thickness=spec.thickness,
                     rows=spec.rows, cols=spec.cols, n_slices=n_slices)


def _tilt_towards(normal: np.ndarray, axis: np.ndarray, max_deg: float) -> tuple[np.ndarray, float]:
    """Limit the angle between ``normal`` and ``axis`` to ``max_deg`` (radiographers tilt
    axial stacks at most this far); returns the normal and the resulting angle in degrees."""
    if normal @ axis < 0:
        normal = -normal
    angle = math.degrees(math.acos(min(1.0, float(normal @ axis))))
    if angle <= max_deg:
        return normal, angle
    perp = normal - (normal @ axis) * axis
    perp /= np.linalg.norm(perp)
    t = math.radians(max_deg)
    return math.cos(t) * axis + math.sin(t) * perp, max_deg


def _prescribe(ph: _Phantom, vendor: _Vendor, rng: np.random.Generator,
               marker_lps: np.ndarray | None) -> dict[str, _Geometry]:
    """Sagittal, coronal and oblique axial stacks covering the lesions, as a radiographer
    sets them (each stack covers every lesion whole)."""
    lo = np.min([les["extent"][0] for les in ph.lesions], axis=0)  # (s, u, v) mm
    hi = np.max([les["extent"][1] for les in ph.lesions], axis=0)
    les_s = np.array([les["centre"][0] for les in ph.lesions])
    s_mid = float((lo[0] + hi[0]) / 2)
    j0 = 3
    a_u, a_v = ph.a_u[j0], ph.a_v[j0]
    u_mid = -(a_u * 0.3 + ph.canal[0])
    geoms: dict[str, _Geometry] = {}
    # sagittal: normal ~ patient left with a few degrees of double obliquity
    left, ant, _ = ph.frame(s_mid)
    tilt = _rot(2, math.radians(rng.normal(0, 2))) @ _rot(1, math.radians(rng.normal(0, 2)))
    spec = vendor.series["sagittal"]
    spacing = spec.thickness + spec.gap
    half = max(a_v + 6.0, -lo[2] + 1.0, hi[2] + 1.0)
    n_sag = int(math.ceil(2 * half / spacing)) + 1
    centre = ph.to_world(s_mid + rng.uniform(-12, 12), u_mid + rng.uniform(-5, 5), 0.0)
    geoms["sagittal"] = _stack(centre, tilt @ left, spec, n_sag, ph.position,
                               vendor.patient_oriented, rng)
    # coronal: follows the segment's mean tangent, covers bodies, canal and the lesions
    spec = vendor.series["coronal"]
    spacing = spec.thickness + spec.gap
    u_lo = min(-(a_u + 2 * ph.canal[0] + 2.0), lo[1] - 1.0)
    u_hi = max(a_u + 4.0, hi[1] + 1.0)
    n_cor = int(math.ceil((u_hi - u_lo) / spacing)) + 1
    centre = ph.to_world(s_mid + rng.uniform(-10, 10), (u_lo + u_hi) / 2, rng.uniform(-3, 3))
    geoms["coronal"] = _stack(centre, ant, spec, n_cor, ph.position, vendor.patient_oriented, rng)
    # axial: perpendicular to the index vertebra's tangent (endplate), tilt limited to 20 deg;
    # the tilted slab must still hold the lesions' whole extent along the spine
    spec = vendor.series["axial"]
    spacing = spec.thickness + spec.gap
    _, _, sup0 = ph.frame(float(les_s.mean()))
    normal, _ = _tilt_towards(sup0, np.array([0.0, 0.0, 1.0]), 20.0)
    normal = _rot(1, math.radians(rng.normal(0, 1.5))) @ normal
    normal /= np.linalg.norm(normal)
    corners = [ph.to_world(s, u, v) for s in (lo[0], hi[0]) for u in (lo[1], hi[1])
               for v in (lo[2], hi[2])]
    along = np.array(corners) @ normal
    centre = ph.to_world(s_mid, u_mid + rng.uniform(-5, 5), rng.uniform(-3, 3))
    centre = centre + ((along.max() + along.min()) / 2 - centre @ normal) * normal
    n_ax = int(math.ceil((along.max() - along.min() + 6.0) / spacing)) + 1
    geoms["axial"] = _stack(centre, normal, spec, n_ax, ph.position, vendor.patient_oriented, rng)
    if marker_lps is not None:
        for view, g in geoms.items():
            geoms[view] = _cover(g, marker_lps)
    return geoms


def _cover(g: _Geometry, point: np.ndarray) -> _Geometry:
    """Extend a stack by whole slices, or shift it in-plane, so ``point`` lies at least one
    slice and 10 mm inside; orientation and the existing slices are kept."""
    inv = np.linalg.inv(g.affine_lps())
    col, row, k = (inv @ np.append(point, 1.0))[:3]
    origin, n_slices = g.origin.copy(), g.n_slices
    for idx, n, step, axis in ((col, g.cols, g.pixel[1], g.row_dir),
                               (row, g.rows, g.pixel[0], g.col_dir)):
        lo, hi = 10 / step, n - 1 - 10 / step
        if idx < lo:
            origin += (idx - lo) * step * axis
        elif idx > hi:
            origin += (idx - hi) * step * axis
    if k < 1:
        extra = int(math.ceil(1 - k))
        origin -= extra * g.spacing * g.normal
        n_slices += extra
    elif k > n_slices - 2:
        n_slices += int(math.ceil(k - (n_slices - 2)))
    return _Geometry(**{**g.__dict__, "origin": origin, "n_slices": n_slices})


def _render_series(ph: _Phantom, g: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Image ``[slice, row, col]`` float32 and lesion occupancy ``[lesion, slice, row, col]``,
    averaged over the slice profile (three samples across the slab, trapezoid-like weights)."""
    offsets = (-g.thickness / 3, 0.0, g.thickness / 3)
    weights = (0.3, 0.4, 0.3)
    n_les = len(ph.lesions)
    img = np.zeros((g.n_slices, g.rows * g.cols), np.float32)
    occ = np.zeros((n_les, g.n_slices, g.rows * g.cols), np.float32)
    step_r, step_c = g.col_dir * g.pixel[0], g.row_dir * g.pixel[1]
    for k in range(g.n_slices):
        centre = g.origin + k * g.spacing * g.normal
        for off, w in zip(offsets, weights, strict=True):
            xyz = ph.local_grid(centre + off * g.normal, step_r, step_c, g.rows, g.cols)
            val, o = ph.render(*xyz)
            img[k] += np.float32(w) * val
            occ[:, k] += np.float32(w) * o
        img[k] *= ph.bias(centre, step_r, step_c, g.rows, g.cols).ravel()
    return (img.reshape(g.n_slices, g.rows, g.cols),
            occ.reshape(n_les, g.n_slices, g.rows, g.cols))


# ----------------------------------------------------------------------------------------------
# DICOM writing


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _identity(rng: np.random.Generator, plan: dict[str, Any], vendor: _Vendor) -> dict[str, str]:
    """Identity data the way a hospital leaves it in its exports (all fictitious)."""
    surname = _NAME_SURNAMES[rng.integers(len(_NAME_SURNAMES))]
    given = _NAME_GIVEN[rng.integers(len(_NAME_GIVEN))]
    referring = (f"{_NAME_SURNAMES[rng.integers(len(_NAME_SURNAMES))]}^"
                 f"{_NAME_GIVEN[rng.integers(len(_NAME_GIVEN))]}")
    study = date(2014, 1, 1) + timedelta(days=int(rng.integers(0, 7 * 365)))
    birth = study - timedelta(days=int(plan["age"] * 365.25 + rng.integers(1, 364)))
    hospital_no = f"{rng.integers(10**8, 10**9):09d}"
    return {
        "PatientName": f"{surname}^{given}",
        "PatientID": f"00{hospital_no}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "AccessionNumber": f"MR{study:%y%m%d}{rng.integers(10**5, 10**6)}",
        "InstitutionName": vendor.institution,
        "InstitutionAddress": f"{rng.integers(100, 999)} Lakeside Road, East District",
        "ReferringPhysicianName": referring,
        "StudyDate": study.strftime("%Y%m%d"),
        "OtherPatientIDs": f"IP{rng.integers(10**6, 10**7)}",
        "PatientTelephoneNumbers": f"+86 21 {rng.integers(1000, 9999)} {rng.integers(1000, 9999)}",
    }


def _instance_order(n: int, habit: str, rng: np.random.Generator) -> np.ndarray:
    """Instance number (1-based) of each slice in spatial order; never spatial order itself."""
    if habit == "interleaved":  # odd slices acquired first, then even
        acq = np.r_[np.arange(0, n, 2), np.arange(1, n, 2)]
        order = np.empty(n, int)
        order[acq] = np.arange(1, n + 1)
    elif habit == "reversed":
        order = np.arange(n, 0, -1)
    else:
        order = rng.permutation(n) + 1
    if n > 1 and np.all(np.diff(order) > 0):
        order = order[::-1].copy()
    return order


def _write_series(folder: Path, *, ph: _Phantom, g: _Geometry, stored: np.ndarray,
                  slope: float, intercept: float, vendor: _Vendor, view: str, series_no: int,
                  ident: dict[str, str], plan: dict[str, Any], uids: dict[str, str],
                  rng: np.random.Generator) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    folder.mkdir(parents=True, exist_ok=True)
    spec = vendor.series[view]
    n = g.n_slices
    instance = _instance_order(n, vendor.numbering, rng)
    file_numbers = rng.permutation(n) + 1 + int(rng.integers(0, 40))
    iop = [float(x) for x in np.r_[g.row_dir, g.col_dir]]
    series_uid = _uid(uids["study"], view, "series")
    study_time = f"{8 + int(rng.integers(0, 10)):02d}{int(rng.integers(0, 60)):02d}00"
    name_plain = ident["PatientName"].replace("^", " ").title()
    body_part = {"cervical": "CSPINE", "thoracic": "TSPINE", "lumbar": "LSPINE",
                 "sacrococcygeal": "SSPINE"}[plan["site"]]
    window_c = float(np.percentile(stored, 60) * slope + intercept)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        sop_uid = _uid(series_uid, k)
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident["StudyDate"]
        ds.StudyTime = study_time
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{study_time[:2]}{series_no:02d}15"
        ds.AccessionNumber = ident["AccessionNumber"]
        ds.Modality = "MR"
        ds.Manufacturer = vendor.manufacturer
        ds.InstitutionName = ident["InstitutionName"]
        ds.InstitutionAddress = ident["InstitutionAddress"]
        ds.ReferringPhysicianName = ident["ReferringPhysicianName"]
        ds.StationName = vendor.station
        ds.StudyDescription = f"MR {body_part[0]}-SPINE W/WO CONTRAST"
        ds.SeriesDescription = spec.description
        ds.PerformingPhysicianName = ident["ReferringPhysicianName"]
        ds.OperatorsName = "TECH^MR"
        ds.ManufacturerModelName = vendor.model
        ds.PatientName = ident["PatientName"]
        ds.PatientID = ident["PatientID"]
        ds.PatientBirthDate = ident["PatientBirthDate"]
        ds.PatientSex = plan["sex"]
        ds.OtherPatientIDs = ident["OtherPatientIDs"]
        ds.PatientAge = f"{plan['age']:03d}Y"
        ds.PatientTelephoneNumbers = ident["PatientTelephoneNumbers"]
        ds.AdditionalPatientHistory = (
            f"Pt {name_plain}, {plan['age']}y, back pain; ? metastasis vs myeloma. "
            f"Ref {ident['ReferringPhysicianName'].replace('^', ' ').title()}"
        )
        ds.ContrastBolusAgent = "Gd-DTPA 0.2 ml/kg"
        ds.BodyPartExamined = body_part
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = "FS"
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = f"{g.thickness:g}"
        ds.RepetitionTime = f"{spec.tr:g}"
        ds.EchoTime = f"{spec.te:g}"
        ds.MagneticFieldStrength = f"{vendor.field_t:g}"
        ds.SpacingBetweenSlices = f"{g.spacing:g}"
        ds.SoftwareVersions = vendor.software
        ds.FlipAngle = "90" if vendor.key != "philips" else "80"
        ds.PatientPosition = ph.position
        ds.StudyInstanceUID = uids["study"]
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = ident["AccessionNumber"][-5:]
        ds.SeriesNumber = series_no
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = int(instance[k])
        pos = g.origin + k * g.spacing * g.normal
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in iop]
        ds.FrameOfReferenceUID = uids["frame"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{float(pos @ g.normal):.6f}"
        ds.ImageComments = f"{plan['site']} spine post Gd, {name_plain}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = g.rows
        ds.Columns = g.cols
        ds.PixelSpacing = [f"{g.pixel[0]:g}", f"{g.pixel[1]:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = vendor.bits_stored
        ds.HighBit = vendor.bits_stored - 1
        ds.PixelRepresentation = 0
        ds.WindowCenter = f"{window_c:.0f}"
        ds.WindowWidth = f"{2 * window_c:.0f}"
        if vendor.rescale != "absent":
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleSlope = f"{slope:.6g}"
            ds.RescaleType = "US"
        # the site's PACS copies identity into its own private block; vendors add theirs
        pacs = ds.private_block(0x0011, "LAKESIDE PACS EXPORT 1.0", create=True)
        pacs.add_new(0x10, "LO", ident["PatientID"])
        pacs.add_new(0x11, "PN", ident["PatientName"])
        pacs.add_new(0x12, "LO", ident["AccessionNumber"])
        pacs.add_new(0x13, "DA", ident["PatientBirthDate"])
        block = ds.private_block(0x0019 if vendor.key != "philips" else 0x2005,
                                 vendor.private_creator, create=True)
        if vendor.key == "philips":
            block.add_new(0x0E, "FL", float(slope))  # Philips private scale slope
        else:
            block.add_new(0x10, "LO", f"{vendor.model} {view}")
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<u2").tobytes()
        name = vendor.file_pattern.format(n=int(file_numbers[k]))
        ds.save_as(folder / name, enforce_file_format=True)


def _to_stored(img: np.ndarray, vendor: _Vendor, rng: np.random.Generator
               ) -> tuple[np.ndarray, float, float]:
    """Scale a float image to the vendor's stored integers; returns (stored uint16, slope,
    intercept) with ``value = stored * slope + intercept``."""
    hi = float(np.percentile(img, 99.5)) or 1.0
    top = float(img.max()) or 1.0
    max_stored = 2 ** vendor.bits_stored - 1
    gain = min(vendor.stored_target * rng.uniform(0.85, 1.15) / hi, max_stored / top)
    stored = np.clip(np.rint(img * gain), 0, max_stored).astype(np.uint16)
    if vendor.rescale == "philips":
        slope = round(float(rng.uniform(1.2, 3.2)), 5)
        intercept = 0.0
    else:
        slope, intercept = 1.0, 0.0
    return stored, slope, intercept


def _save_mask(path: Path, labels: np.ndarray, g: _Geometry) -> None:
    """Write ``labels [slice, row, col]`` as an ITK-SNAP-like NIfTI (``[i=col, j=row, k]``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8)
    img = nib.Nifti1Image(data, g.affine_ras())
    img.header.set_qform(g.affine_ras(), code=1)
    img.header.set_sform(g.affine_ras(), code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _max_diameter_cm(mask: np.ndarray, g: _Geometry) -> float:
    """Largest in-plane diameter (cm) over the sagittal slices of a boolean ``[slice, row, col]``
    mask: pixel-centre distance plus one pixel, as a caliper on the image measures it."""
    best = 0.0
    for k in range(mask.shape[0]):
        rr, cc = np.nonzero(mask[k])
        if rr.size == 0:
            continue
        pts = np.c_[rr * g.pixel[0], cc * g.pixel[1]]
        if len(pts) > 3:
            try:
                pts = pts[ConvexHull(pts).vertices]
            except QhullError:
                pass
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d) + g.pixel[0])
    return best / 10.0


# ----------------------------------------------------------------------------------------------
# one patient


def _generate_patient(plan: dict[str, Any], manifest_dir: Path, truth_dir: Path,
                      knobs: _Knobs) -> dict[str, Any]:
    rng = np.random.default_rng(plan["seed_seq"])
    vendor = VENDORS[plan["vendor"]]
    pid = plan["patient_id"]
    ph = _Phantom(plan, rng, knobs)
    # patient-level disease appearance, lesion-level variation around it
    sign = 1.0 if plan["label"] == 0 else -1.0
    m_patient = rng.normal(sign * 1.2 * knobs.separability, 0.85)
    size_m, size_sd = _TABLE1[plan["label"]][5:7]
    # nominal sizes offset so that the measured sagittal diameters (which grow with cortical
    # expansion and extensions, more often in metastases) follow Table 1
    size_m += _SIZE_OFFSET_CM[plan["label"]]
    # further lesions in neighbouring vertebrae that have a body (not the atlas)
    options = [k for k in (1, -1, 2, -2) if ph.levels[3 + k] != "C1"]
    ks = [0] + list(rng.permutation(options)[: plan["n_lesions"] - 1])
    for n, k in enumerate(ks, start=1):
        m = m_patient + rng.normal(0, 0.53)
        d = float(np.clip(rng.normal(size_m, size_sd), 1.2, 7.5))
        ph.add_lesion(rng, label=plan["label"], k=int(k), m=float(m), diameter_cm=d,
                      lesion_id=f"{pid}-L{n}", number=n)
    geoms = _prescribe(ph, vendor, rng, ph.marker_lps)
    ident = _identity(rng, plan, vendor)
    uids = {"study": _uid(ident["PatientID"], ident["AccessionNumber"], "study"),
            "frame": _uid(ident["PatientID"], ident["AccessionNumber"], "frame")}
    series_rows, lesion_stats, truth_series = [], {}, []
    series_no = int(rng.integers(1, 5))
    for view in ("sagittal", "coronal", "axial"):
        g = geoms[view]
        img, occ = _render_series(ph, g)
        if knobs.noise:
            sigma = np.float32(vendor.noise)
            n1 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
            n2 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
            img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # magnitude image: Rician noise
        stored, slope, intercept = _to_stored(img, vendor, rng)
        series_no += int(rng.integers(1, 3))
        folder_rel = Path("dicom") / pid / f"{series_no:02d}_{vendor.series[view].description}"
        folder_rel = Path(str(folder_rel).replace(" ", "_").replace("+", "plus"))
        _write_series(manifest_dir / folder_rel, ph=ph, g=g, stored=stored, slope=slope,
                      intercept=intercept, vendor=vendor, view=view, series_no=series_no,
                      ident=ident, plan=plan, uids=uids, rng=rng)
        labels = np.zeros(occ.shape[1:], np.uint8)
        for n in range(occ.shape[0]):
            labels[occ[n] >= 0.5] = n + 1
        truth_path = truth_dir / "masks" / f"{pid}_{view}.nii.gz"
        _save_mask(truth_path, labels, g)
        if view == "sagittal":
            mask_rel = Path("masks") / f"{pid}_sagittal.nii.gz"
            _save_mask(manifest_dir / mask_rel, labels, g)
        for n, les in enumerate(ph.lesions, start=1):
            stats = lesion_stats.setdefault(les["lesion_id"], {})
            stats[f"voxels_{view}"] = int((labels == n).sum())
            if view == "sagittal":
                stats["size_cm"] = round(_max_diameter_cm(labels == n, g), 2)
        series_rows.append({"patient_id": pid, "view": view, "folder": folder_rel.as_posix()})
        tilt = math.degrees(math.acos(min(1.0, abs(float(g.normal[2])))))
        truth_series.append({
            "patient_id": pid, "view": view, "folder": folder_rel.as_posix(),
            "mask": (truth_dir.name + "/" + truth_path.relative_to(truth_dir).as_posix()),
            "rows": g.rows, "cols": g.cols, "n_slices": g.n_slices,
            "pixel_mm": g.pixel[0], "thickness_mm": g.thickness, "spacing_mm": g.spacing,
            "tilt_deg": round(tilt, 2), "rescale_slope": slope,
            "affine_ras": json.dumps(np.round(g.affine_ras(), 6).tolist()),
        })
    lesions = []
    for les in ph.lesions:
        centre_ras = LPS_TO_RAS @ ph.to_world(*les["centre"])
        lesions.append({
            "lesion_id": les["lesion_id"], "patient_id": pid, "label": plan["label"],
            "mask_label": les["number"], "vertebra": les["level"],
            **lesion_stats[les["lesion_id"]],
            "pattern": les["pattern"], "pattern_strength": round(les["strength"], 4),
            "irregularity": round(les["irregularity"], 4),
            "posterior_elements": les["posterior"], "soft_tissue": les["soft_tissue"],
            "metastasis_likeness": round(les["m"], 4),
            "diameter_nominal_cm": round(les["diameter_nominal_cm"], 3),
            "enhancement": round(les["enhancement"], 4),
            "centre_x_ras": round(float(centre_ras[0]), 3),
            "centre_y_ras": round(float(centre_ras[1]), 3),
            "centre_z_ras": round(float(centre_ras[2]), 3),
        })
    patient = {
        "patient_id": pid, "label": plan["label"], "age": plan["age"], "sex": plan["sex"],
        "site": plan["site"], "vendor": vendor.key, "manufacturer": vendor.manufacturer,
        "field_strength_t": vendor.field_t, "position": ph.position,
        "index_vertebra": ph.levels[3], "curvature_per_mm": round(ph.kappa, 6),
        "tilt_deg": round(math.degrees(ph.phi0), 3),
        "origin_ras": json.dumps(np.round(LPS_TO_RAS @ ph.origin, 3).tolist()),
    }
    return {"patient": patient, "identity": {"patient_id": pid, **ident}, "series": series_rows,
            "truth_series": truth_series, "lesions": lesions,
            "mask": (Path("masks") / f"{pid}_sagittal.nii.gz").as_posix()}


# ----------------------------------------------------------------------------------------------
# readers


def _simulate_readers(lesions: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Two radiologists' calls (1 = myeloma) and 1-5 confidence per lesion.

    Each reader's latent score is ``mu * (y - 1/2) + 0.5 * a + noise`` (unit variance within a
    class), with ``a`` the lesion's standardised myeloma-likeness in the images, so readers err
    on atypical lesions; ``mu`` gives the paper's AUC (``AUC = Phi(mu / sqrt 2)``) and the
    threshold is set on the cohort to come closest to the paper's accuracy (then F1; Table 2).
    """
    y = lesions["label"].to_numpy()
    a = -lesions["metastasis_likeness"].to_numpy(float)
    for label in (0, 1):
        sel = y == label
        if sel.sum() > 1:
            a[sel] = (a[sel] - a[sel].mean()) / (a[sel].std() + 1e-9)
        else:
            a[sel] = 0.0
    rows = []
    for reader, (acc_t, auc_t, f1_t) in _READERS.items():
        mu = math.sqrt(2) * float(ndtri(auc_t))
        z = mu * (y - 0.5) + 0.5 * a + math.sqrt(1 - 0.25) * rng.standard_normal(len(y))
        best, best_cost = 0.0, math.inf
        for t in np.unique(np.r_[z, z.max() + 1]):
            call = z >= t
            acc = np.mean(call == (y == 1))
            tp = np.sum(call & (y == 1))
            f1 = 2 * tp / (call.sum() + (y == 1).sum()) if (call.sum() + (y == 1).sum()) else 0.0
            cost = abs(acc - acc_t) + 0.01 * abs(f1 - f1_t)  # accuracy first, then F1
            if cost < best_cost:
                best, best_cost = float(t), cost
        call = (z >= best).astype(int)
        margin = np.abs(z - best)
        cuts = np.quantile(margin, [0.2, 0.4, 0.6, 0.8]) if len(margin) else []
        confidence = 1 + np.searchsorted(cuts, margin, side="right")
        for lid, pid, c, conf in zip(lesions["lesion_id"], lesions["patient_id"], call,
                                     confidence, strict=True):
            rows.append({"lesion_id": lid, "patient_id": pid, "reader": reader, "call": int(c),
                         "confidence": int(conf)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# public API


def make_cohort(out_dir: str | PathLike[str], *, n_patients: int, seed: int, **knobs: Any) -> Path:
    """Write the embedded synthetic cohort and return its manifest folder.

    Args:
        out_dir: folder to create; receives ``manifest/`` (what the pipeline reads through
            :func:`magn_lib.manifest.load_manifest`) and ``truth/`` (for checks only).
        n_patients: number of patients (``smoke`` 12, ``demo`` 60, ``paper`` 217).
        seed: the cohort's seed; the same seed and knobs give byte-identical files.
        **knobs:
            separability (float, default 1.0): class signal strength in the images; 0 = none.
            class_counts ({label: (patients, lesions)}): per-class counts; by default the
                paper's proportions (79/81 myeloma, 138/188 metastasis for 217 patients).
            vendors, positions (sequence of str): cycle these scanners (``VENDORS`` keys) or
                patient positions (``POSITIONS``) over the patients instead of drawing them.
            marker_ras ((x, y, z) world RAS+ mm): plant a bright point there in every patient
                (each stack is shifted, never rotated, to contain it).
            noise (bool, default True): Rician noise; n_jobs (int, default -1): parallel
                patients (joblib; results do not depend on it); progress (bool): tqdm bar;
                overwrite (bool): replace an existing cohort in ``out_dir``.

    Returns:
        The manifest folder ``out_dir/manifest``. A complete cohort already in ``out_dir`` made
        with the same ``n_patients``, ``seed`` and knobs is reused as it is (resume).

    Raises:
        FileExistsError: ``out_dir`` holds a cohort made with other parameters and
            ``overwrite`` is false.
        TypeError, ValueError: unknown knob or bad value.
    """
    from joblib import Parallel, delayed

    from magn_lib.progress import tqdm

    if isinstance(n_patients, bool) or not isinstance(n_patients, int) or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    opts = _parse_knobs(knobs)
    out = Path(out_dir)
    manifest_dir, truth_dir = out / "manifest", out / "truth"
    recipe = {"n_patients": n_patients, "seed": seed, "knobs": _recipe_knobs(knobs)}
    stamp = truth_dir / "truth.json"
    if stamp.is_file() and not opts.overwrite:
        with open(stamp) as f:
            found = json.load(f)
        if {k: found.get(k) for k in recipe} == recipe:
            return manifest_dir  # already generated with these parameters: resume
        found = {k: found.get(k) for k in recipe}
        raise FileExistsError(f"{out} holds a cohort made with other parameters ({found}); "
                              "pass overwrite=True to replace it")
    # no completed cohort here (or overwrite): clear what a previous attempt left
    shutil.rmtree(manifest_dir, ignore_errors=True)
    shutil.rmtree(truth_dir, ignore_errors=True)
    manifest_dir.mkdir(parents=True)
    truth_dir.mkdir(parents=True)
    plans = _plan(n_patients, seed, opts)
    jobs = (delayed(_generate_patient)(plan, manifest_dir, truth_dir, opts) for plan in plans)
    n_jobs = 1 if n_patients == 1 else opts.n_jobs
    results = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(jobs), total=n_patients,
                        desc="generating cohort", unit="patient", disable=not opts.progress))
    patients = pd.DataFrame([r["patient"] for r in results])
    lesions = pd.DataFrame([les for r in results for les in r["lesions"]])
    cohort_rng = np.random.default_rng(np.random.SeedSequence([seed, 7331]))
    readers = _simulate_readers(lesions, cohort_rng)
    # the pipeline's manifest (data_manifest schema)
    patients[["patient_id", "age", "sex", "site"]].to_csv(manifest_dir / "patients.csv",
                                                          index=False)
    lesions_out = lesions[["lesion_id", "patient_id", "label"]].copy()
    lesions_out["mask"] = [next(r["mask"] for r in results if r["patient"]["patient_id"] == p)
                           for p in lesions["patient_id"]]
    lesions_out["mask_label"] = lesions["mask_label"]
    lesions_out["vertebra"] = lesions["vertebra"]
    lesions_out["size_cm"] = lesions["size_cm"]
    lesions_out.to_csv(manifest_dir / "lesions.csv", index=False)
    pd.DataFrame([s for r in results for s in r["series"]]).to_csv(
        manifest_dir / "series.csv", index=False)
    readers.to_csv(manifest_dir / "readers.csv", index=False)
    # truth (never read by the pipeline)
    patients.to_csv(truth_dir / "patients.csv", index=False)
    lesions.to_csv(truth_dir / "lesions.csv", index=False)
    pd.DataFrame([r["identity"] for r in results]).to_csv(truth_dir / "identity.csv", index=False)
    pd.DataFrame([s for r in results for s in r["truth_series"]]).to_csv(
        truth_dir / "series.csv", index=False)
    # written last: its presence marks a complete cohort
    with open(stamp, "w") as f:
        json.dump({**recipe,
                   "coordinate_frame": "world RAS+ mm (NIfTI); DICOM tags are LPS",
                   "mask_convention": "data[i=DICOM column, j=row, k=slice along row x col]"},
                  f, indent=2)
    return manifest_dir


def _recipe_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs that change the cohort, JSON-normalised (order-insensitive keys)."""
    out = {}
    for key in sorted(knobs):
        if key in ("progress", "n_jobs", "overwrite"):
            continue
        value = knobs[key]
        if isinstance(value, Mapping):
            value = {str(k): list(v) for k, v in sorted(value.items())}
        elif isinstance(value, tuple | list) or hasattr(value, "tolist"):
            value = [float(x) if key == "marker_ras" else x for x in np.asarray(value).tolist()]
        out[key] = value
    return json.loads(json.dumps(out))


@dataclass(frozen=True)
class Truth:
    """What the generator knows and the pipeline must not see.

    Attributes:
        root: the ``truth/`` folder.
        patients: per patient: label, demographics, scanner, position, phantom parameters.
        lesions: per lesion: label, mask label, pattern, irregularity, involvement, latent
            metastasis-likeness, nominal and measured size, centre in world RAS+ mm.
        identity: the identity planted in each patient's DICOM headers.
        series: per patient and view: folder, true-mask path (relative to the cohort folder),
            grid, tilt, RAS+ affine (JSON).
    """

    root: Path
    patients: pd.DataFrame
    lesions: pd.DataFrame
    identity: pd.DataFrame
    series: pd.DataFrame

    def mask_path(self, patient_id: str, view: str) -> Path:
        """The true lesion mask of ``view`` (multi-label, ``mask_label`` per lesion)."""
        return self.root / "masks" / f"{patient_id}_{view}.nii.gz"

    def planted_strings(self) -> set[str]:
        """Every planted identity value (and the name's parts), to search outputs for leaks."""
        out: set[str] = set()
        for _, row in self.identity.drop(columns="patient_id").iterrows():
            for value in row.astype(str):
                out.add(value)
                if "^" in value:
                    out.update(p for p in value.split("^") if len(p) >= 5)
                    out.add(value.replace("^", " "))
        return out


def load_truth(cohort_dir: str | PathLike[str]) -> Truth:
    """Load the truth of a cohort written by :func:`make_cohort`.

    Args:
        cohort_dir: the ``out_dir`` given to :func:`make_cohort`, or its manifest folder.
    """
    path = Path(cohort_dir)
    root = path / "truth" if (path / "truth").is_dir() else path.parent / "truth"
    if not (root / "truth.json").is_file():
        raise FileNotFoundError(f"no truth/truth.json under {path} or its parent")
    read = {"dtype": {"patient_id": str}, "keep_default_na": False}
    return Truth(
        root=root,
        patients=pd.read_csv(root / "patients.csv", **read),
        lesions=pd.read_csv(root / "lesions.csv", **read),
        identity=pd.read_csv(root / "identity.csv", dtype=str, keep_default_na=False),
        series=pd.read_csv(root / "series.csv", **read),
    )
