"""Lesion specification: what one lesion is (a frozen value) and how a patient's lesions are
drawn. Rendering a specification into intensities is :mod:`magn_lib.synthetic.render`.

All positions and sizes are in the spine's straightened frame ``(s, u, v)`` mm
(:mod:`magn_lib.synthetic.anatomy`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from magn_lib.synthetic.anatomy import Spine

__all__ = ["LesionSpec", "Lobe", "Margin", "Texture", "draw_distractors", "draw_lesion",
           "draw_patient_lesions"]


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

    @classmethod
    def draw(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float],
             n: int = 16) -> Texture:
        """Random directions and phases; wavelengths uniform in ``wavelength_mm``."""
        wave = rng.normal(size=(n, 3))
        wave *= (2 * np.pi / rng.uniform(*wavelength_mm, n) / np.linalg.norm(wave, axis=1)
                 )[:, None]
        return cls(wave.astype(np.float32), rng.uniform(0, 2 * np.pi, n))

    def at(self, pts: np.ndarray) -> np.ndarray:
        """The field at points (M, 3) mm: mean 0, variance 1 over space (float32, (M,))."""
        out = np.zeros(len(pts), np.float32)
        for w, ph in zip(self.waves, self.phases, strict=True):
            out += np.cos(pts @ w + np.float32(ph))
        return out * np.float32(math.sqrt(2.0 / len(self.waves)))


#: reference points per lesion at which its structure field's distribution is tabulated
N_REFERENCE = 2048


@dataclass(frozen=True, eq=False)
class LesionSpec:
    """One lesion of one patient: identity, truth and every parameter of its appearance.

    Appearance (:func:`magn_lib.synthetic.render.lesion_enhancement`): intensity
    ``enhancement * (1 + heterogeneity * z)`` with ``z`` the lesion's *structure field* mapped
    to a standard normal through its own distribution over the lesion (``reference``), so that
    the first-order statistics (mean, SD, percentiles) of every lesion's intensity follow the
    label-independent ``enhancement`` and ``heterogeneity`` whatever its structure; the
    structure (``rim_weight``: rim with a dark core vs diffuse mottling; ``irregularity`` of
    the margin) follows the latent metastasis-likeness ``m``.
    """

    lesion_id: str
    number: int  # label value in the patient's masks (0: an unmasked distractor)
    label: int  # 1 myeloma, 0 metastasis (distractors: the class their appearance imitates)
    k: int  # vertebra (0 = index vertebra, +1 the one above)
    level: str  # vertebral level name, e.g. "T7"
    metastasis_likeness: float  # latent m: > 0 metastasis-like structure
    diameter_nominal_cm: float
    centre: np.ndarray  # (3,) (s, u, v) mm
    radii: np.ndarray  # (3,) ellipsoid semi-axes, mm
    breach: float  # mm the lesion may expand through its body's cortex
    extent: tuple[np.ndarray, np.ndarray]  # (lo, hi) (s, u, v) box of all it can occupy
    kind: str  # dominant structure: "rim" | "heterogeneous" (diffuse mottling)
    pattern: str  # reported pattern: "homogeneous" | "heterogeneous" | "rim"
    strength: float  # rim weight in (0, 1): share of the structure field that is the rim
    irregularity: float  # margin irregularity (relative radius modulation)
    enhancement: float  # mean enhancing intensity (relative units), label-independent
    heterogeneity: float  # SD of the intensity relative to its mean, label-independent
    posterior_elements: bool
    soft_tissue: bool
    lobes: tuple[Lobe, ...]
    margin: Margin
    texture: Texture
    reference: np.ndarray  # (N_REFERENCE,) sorted structure-field values over the lesion

    @property
    def rim_weight(self) -> float:
        return self.strength

    def structure(self, pts: np.ndarray, r_norm: np.ndarray) -> np.ndarray:
        """Raw structure field (M,) at points (M, 3) with normalised outline radius (M,):
        ``w * rim(r) + sqrt(1 - w^2) * texture`` (``w`` the rim weight; the rim profile
        standardised over a uniform ball)."""
        w = self.strength
        rim = _rim_profile(r_norm)
        tex = self.texture.at(pts)
        return (np.float32(w) * rim + np.float32(math.sqrt(1 - w * w)) * tex).astype(np.float32)

    def truth_row(self) -> dict[str, Any]:
        """The lesion's appearance parameters as the truth table records them."""
        return {
            "pattern": self.pattern, "pattern_strength": round(self.strength, 4),
            "irregularity": round(self.irregularity, 4),
            "posterior_elements": self.posterior_elements, "soft_tissue": self.soft_tissue,
            "metastasis_likeness": round(self.metastasis_likeness, 4),
            "diameter_nominal_cm": round(self.diameter_nominal_cm, 3),
            "enhancement": round(self.enhancement, 4),
            "heterogeneity": round(self.heterogeneity, 4),
        }


# a rim: bright outer shell, dark core; standardised to mean 0, SD 1 over a uniform ball
# (radius density 3 r^2), so that its weight against the texture sets the pattern only
_RIM_R = np.linspace(0.0, 1.0, 2001)
_RIM_RAW = np.clip((_RIM_R - 0.45) / 0.35, 0, 1) ** 2 * (3 - 2 * np.clip((_RIM_R - 0.45) / 0.35,
                                                                        0, 1))
_RIM_W = 3 * _RIM_R ** 2 / np.sum(3 * _RIM_R ** 2)
_RIM_MEAN = float(np.sum(_RIM_W * _RIM_RAW))
_RIM_SD = float(np.sqrt(np.sum(_RIM_W * (_RIM_RAW - _RIM_MEAN) ** 2)))


def _rim_profile(r_norm: np.ndarray) -> np.ndarray:
    e = np.clip((np.asarray(r_norm, np.float32) - np.float32(0.45)) / np.float32(0.35), 0, 1)
    return ((e * e * (3 - 2 * e) - np.float32(_RIM_MEAN)) / np.float32(_RIM_SD)
            ).astype(np.float32)


def _reference(centre: np.ndarray, radii: np.ndarray, strength: float, texture: Texture,
               rng: np.random.Generator) -> np.ndarray:
    """The structure field's distribution over the lesion: its sorted values at uniform
    points of the lesion's ellipsoid (float32, (N_REFERENCE,))."""
    ball = rng.normal(size=(N_REFERENCE, 3))
    ball *= (rng.random(N_REFERENCE) ** (1 / 3) / np.linalg.norm(ball, axis=1))[:, None]
    pts = (centre + ball * radii).astype(np.float32)
    rim = _rim_profile(np.linalg.norm(ball, axis=1).astype(np.float32))
    field = np.float32(strength) * rim + np.float32(math.sqrt(1 - strength ** 2)) * texture.at(pts)
    return np.sort(field).astype(np.float32)


#: label-independent probabilities of a lesion's extensions beyond its vertebral body
POSTERIOR_PROBABILITY = 0.35
SOFT_TISSUE_PROBABILITY = 0.21


def draw_lesion(spine: Spine, rng: np.random.Generator, *, label: int, k: int, m: float,
                diameter_cm: float, lesion_id: str, number: int) -> LesionSpec:
    """Draw one lesion in vertebral body ``k`` whose *structure* follows its latent
    metastasis-likeness ``m``: the rim weight (rim with a dark core, metastasis-like, vs
    diffuse mottling, myeloma-like) and the margin irregularity are noisy functions of it.
    Its mean enhancement, intensity SD, texture scale, position, shape and extensions
    (posterior elements, soft tissue) are drawn without regard to ``m`` or the label.
    """
    j = spine.index_of(k)
    h, a_u, a_v = spine.height[j], spine.a_u[j], spine.a_v[j]
    centre = np.array([spine.centres[j] + rng.uniform(-0.15, 0.15) * h,
                       rng.uniform(-0.25, 0.2) * a_u, rng.uniform(-0.3, 0.3) * a_v])
    r = diameter_cm * 10 / 2
    radii = r * np.array([rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)])
    radii = np.maximum(radii, 4.0)
    strength = _sigmoid(1.8 * (m + rng.normal(0, 0.45)))
    kind = "rim" if strength > 0.5 else "heterogeneous"
    heterogeneity = float(rng.uniform(0.08, 0.24))
    pattern = "homogeneous" if heterogeneity < 0.11 else kind
    irregularity = 0.03 + 0.27 * _sigmoid(1.6 * (m + rng.normal(0, 0.5)))
    posterior = bool(rng.random() < POSTERIOR_PROBABILITY)
    soft = bool(rng.random() < SOFT_TISSUE_PROBABILITY)
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
    texture = Texture.draw(rng, (4.0, 10.0))
    enhancement = float(np.clip(rng.normal(0.80, 0.07), 0.6, 0.98))
    reference = _reference(centre, radii, strength, texture, rng)
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
        irregularity=irregularity, enhancement=enhancement, heterogeneity=heterogeneity,
        posterior_elements=posterior, soft_tissue=soft, lobes=tuple(lobes),
        margin=Margin(dirs.astype(np.float32), freq, phase, amp),
        texture=texture, reference=reference,
    )


def draw_patient_lesions(spine: Spine, rng: np.random.Generator, *, label: int, n_lesions: int,
                         patient_id: str, separability: float, size_cm: tuple[float, float]
                         ) -> list[LesionSpec]:
    """The patient's 1-3 lesions: the index vertebra and then neighbouring bodies.

    Disease appearance is drawn per patient (``m_patient ~ N(-+1.2 * separability, 0.85)``,
    metastasis +) and varies per lesion around it (SD 0.53); nominal diameters are drawn from
    ``N(size_cm[0], size_cm[1])`` cm (the plan's: by class, or pooled).
    """
    sign = 1.0 if label == 0 else -1.0
    m_patient = rng.normal(sign * 1.2 * separability, 0.85)
    size_m, size_sd = size_cm
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


def draw_distractors(spine: Spine, rng: np.random.Generator, *, taken: set[int],
                     separability: float, patient_id: str) -> list[LesionSpec]:
    """Label-independent salient structures in other vertebral bodies, never masked: 0-2
    lesion-like foci whose appearance imitates either class at random (as an unrelated
    lesion, a healing one or a biopsy site would), and 0-1 haemangioma-like bright,
    homogeneous round foci. Drawn the same way for both classes."""
    free = [k for k in (1, -1, 2, -2, 3, -3) if k not in taken and spine.levels[3 + k] != "C1"]
    n_lesion_like = min(int(rng.poisson(0.7)), 2, len(free))
    n_haemangioma = int(rng.random() < 0.4)
    chosen = list(rng.permutation(free)[: n_lesion_like + n_haemangioma])
    out = []
    for i, k in enumerate(chosen):
        if i < n_lesion_like:
            imitated = int(rng.integers(2))
            sign = 1.0 if imitated == 0 else -1.0
            m = rng.normal(sign * 1.2 * separability, 1.0)
            d = float(rng.uniform(0.8, 1.8))
        else:
            imitated, m, d = -1, 0.0, float(rng.uniform(0.5, 1.1))
        spec = draw_lesion(spine, rng, label=imitated, k=int(k), m=float(m), diameter_cm=d,
                           lesion_id=f"{patient_id}-D{i + 1}", number=0)
        if imitated < 0:  # haemangioma: bright, nearly homogeneous, smooth, no extensions
            spec = dataclasses.replace(spec, enhancement=float(rng.uniform(0.75, 0.95)),
                            heterogeneity=0.04, irregularity=0.03, strength=0.0,
                            kind="heterogeneous", pattern="homogeneous", lobes=(),
                            posterior_elements=False, soft_tissue=False)
            spec = dataclasses.replace(spec, reference=_reference(
                spec.centre, spec.radii, 0.0, spec.texture, rng))
        out.append(spec)
    return out
