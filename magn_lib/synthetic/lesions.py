"""Lesion specification: what one lesion is (a frozen value) and how a patient's lesions are
drawn. Rendering a specification into intensities is :mod:`magn_lib.synthetic.render`.

All positions and sizes are in the spine's straightened frame ``(s, u, v)`` mm
(:mod:`magn_lib.synthetic.anatomy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from magn_lib.synthetic.anatomy import Spine
from magn_lib.synthetic.paper import SIZE_OFFSET_CM, TABLE1

__all__ = ["LesionSpec", "Lobe", "Margin", "Texture", "draw_lesion", "draw_patient_lesions"]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True, eq=False)
class Lobe:
    """An extension of a lesion beyond its vertebral body: an ellipsoid."""

    kind: str  # "posterior" (into the pedicle and arch) | "soft tissue" (paravertebral)
    centre: np.ndarray  # (3,) (s, u, v) mm
    radii: np.ndarray  # (3,) semi-axes along s, u, v, mm


@dataclass(frozen=True, eq=False)
class Margin:
    """Low-frequency radial modulation of the lesion outline: ``sum_i amp_i cos(freq_i
    (unit . dir_i) + phase_i)`` over unit directions from the centre."""

    directions: np.ndarray  # (7, 3) float32 unit vectors
    frequencies: np.ndarray  # (7,)
    phases: np.ndarray  # (7,) radians
    amplitudes: np.ndarray  # (7,), unit RMS over the sum


@dataclass(frozen=True, eq=False)
class Texture:
    """A sum of plane waves fixed in the straightened frame (``cos(p . wave_i + phase_i)``)."""

    waves: np.ndarray  # (16, 3) float32 wave vectors, radians per mm
    phases: np.ndarray  # (16,) radians


@dataclass(frozen=True, eq=False)
class LesionSpec:
    """One lesion of one patient: identity, truth and every parameter of its appearance."""

    lesion_id: str
    number: int  # label value in the patient's masks
    label: int  # 1 myeloma, 0 metastasis
    k: int  # vertebra (0 = index vertebra, +1 the one above)
    level: str  # vertebral level name, e.g. "T7"
    metastasis_likeness: float  # latent m: > 0 metastasis-like appearance
    diameter_nominal_cm: float
    centre: np.ndarray  # (3,) (s, u, v) mm
    radii: np.ndarray  # (3,) ellipsoid semi-axes, mm
    breach: float  # mm the lesion may expand through its body's cortex
    extent: tuple[np.ndarray, np.ndarray]  # (lo, hi) (s, u, v) box of all it can occupy
    kind: str  # enhancement model: "rim" | "heterogeneous"
    pattern: str  # reported pattern: "homogeneous" | "heterogeneous" | "rim"
    strength: float  # pattern strength in (0, 1)
    irregularity: float  # margin irregularity (relative radius modulation)
    enhancement: float  # mean enhancing intensity (relative units)
    posterior_elements: bool
    soft_tissue: bool
    lobes: tuple[Lobe, ...]
    margin: Margin
    texture: Texture

    def truth_row(self) -> dict[str, Any]:
        """The lesion's appearance parameters as the truth table records them."""
        return {
            "pattern": self.pattern, "pattern_strength": round(self.strength, 4),
            "irregularity": round(self.irregularity, 4),
            "posterior_elements": self.posterior_elements, "soft_tissue": self.soft_tissue,
            "metastasis_likeness": round(self.metastasis_likeness, 4),
            "diameter_nominal_cm": round(self.diameter_nominal_cm, 3),
            "enhancement": round(self.enhancement, 4),
        }


def draw_lesion(spine: Spine, rng: np.random.Generator, *, label: int, k: int, m: float,
                diameter_cm: float, lesion_id: str, number: int) -> LesionSpec:
    """Draw one lesion in vertebral body ``k`` whose appearance follows its latent
    metastasis-likeness ``m``: pattern strength, rim vs heterogeneous enhancement, margin
    irregularity and posterior-element and soft-tissue involvement are noisy functions of it.
    """
    j = spine.index_of(k)
    h, a_u, a_v = spine.height[j], spine.a_u[j], spine.a_v[j]
    centre = np.array([spine.centres[j] + rng.uniform(-0.15, 0.15) * h,
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
        lobes.append(Lobe("posterior", np.array(
            [spine.centres[j], spine.u_canal + 0.2 * spine.canal[0],
             side * (spine.canal[1] + spine.ring * 0.5)]),
            np.array([0.45 * h, 9.0, 6.0 + 4 * rng.random()])))
    if soft:
        angle = rng.choice([0.0, 0.7, -0.7, math.pi])  # anterior, antero-lateral, epidural
        direction = np.array([0.0, math.cos(angle), math.sin(angle)])
        reach = a_u + 2.0
        rad = rng.uniform(6.0, 13.0)
        lobes.append(Lobe("soft tissue", np.array(
            [centre[0], reach * direction[1], reach * direction[2] * a_v / a_u])
            + direction * rad * 0.4, np.array([rad * 1.3, rad, rad])))
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
    tex_phase = rng.uniform(0, 2 * np.pi, n_tex)
    enhancement = float(np.clip(rng.normal(0.80, 0.07), 0.6, 0.98))
    # straightened bounding box of everything the lesion can occupy (for the prescriptions)
    breach = 1.0 + 0.9 * max(0.0, float(radii.max()) - max(a_u, h / 2))
    reach = radii * (1 + irregularity)
    cap = np.array([h / 2, a_u, a_v]) + breach
    mid = np.array([spine.centres[j], 0.0, 0.0])
    lo = np.maximum(centre - reach, mid - cap)
    hi = np.minimum(centre + reach, mid + cap)
    for lobe in lobes:
        lo = np.minimum(lo, lobe.centre - lobe.radii * 1.2)
        hi = np.maximum(hi, lobe.centre + lobe.radii * 1.2)
    return LesionSpec(
        lesion_id=lesion_id, number=number, label=label, k=k, level=spine.levels[j],
        metastasis_likeness=m, diameter_nominal_cm=diameter_cm, centre=centre, radii=radii,
        breach=breach, extent=(lo, hi), kind=kind, pattern=pattern, strength=strength,
        irregularity=irregularity, enhancement=enhancement, posterior_elements=posterior,
        soft_tissue=soft, lobes=tuple(lobes),
        margin=Margin(dirs.astype(np.float32), freq, phase, amp),
        texture=Texture(wave.astype(np.float32), tex_phase),
    )


def draw_patient_lesions(spine: Spine, rng: np.random.Generator, *, label: int, n_lesions: int,
                         patient_id: str, separability: float) -> list[LesionSpec]:
    """The patient's 1-3 lesions: the index vertebra and then neighbouring bodies.

    Disease appearance is drawn per patient (``m_patient ~ N(-+1.2 * separability, 0.85)``,
    metastasis +) and varies per lesion around it (SD 0.53); sizes follow Table 1.
    """
    sign = 1.0 if label == 0 else -1.0
    m_patient = rng.normal(sign * 1.2 * separability, 0.85)
    size_m, size_sd = TABLE1[label][5:7]
    size_m += SIZE_OFFSET_CM[label]
    # further lesions in neighbouring vertebrae that have a body (not the atlas)
    options = [k for k in (1, -1, 2, -2) if spine.levels[3 + k] != "C1"]
    ks = [0] + list(rng.permutation(options)[: n_lesions - 1])
    out = []
    for n, k in enumerate(ks, start=1):
        m = m_patient + rng.normal(0, 0.53)
        d = float(np.clip(rng.normal(size_m, size_sd), 1.2, 7.5))
        out.append(draw_lesion(spine, rng, label=label, k=int(k), m=float(m), diameter_cm=d,
                               lesion_id=f"{patient_id}-L{n}", number=n))
    return out
