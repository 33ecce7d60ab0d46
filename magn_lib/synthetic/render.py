"""Rendering: the phantom (anatomy + lesions + coil) sampled at arbitrary points, and a
series rendered by sampling it at the voxel centres of a slice stack.

Each series samples the same continuous phantom, averaged over the slice profile, so the
three views of a patient are geometrically consistent the way a real exam is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from magn_lib.synthetic.anatomy import Spine, Tissue, tissue
from magn_lib.synthetic.geometry import SliceStack
from magn_lib.synthetic.lesions import LesionSpec, Texture
from magn_lib.synthetic.scanners import CoilSensitivity

__all__ = ["Marrow", "Phantom", "lesion_enhancement", "lesion_occupancy", "render_series"]

_F32 = np.float32


@dataclass(frozen=True)
class _LesionPoints:
    """The points near one lesion: their indices and lesion-relative quantities."""

    idx: np.ndarray  # (M,) indices into the rendered points
    pts: np.ndarray  # (M, 3) float32 (s, u, v) mm
    rho: np.ndarray  # (M,) normalised ellipsoid radius
    g: np.ndarray  # (M,) margin modulation at the point's direction from the centre


def _near(les: LesionSpec, s: np.ndarray, u: np.ndarray, v: np.ndarray) -> _LesionPoints:
    f32 = _F32
    ext = max(les.radii.max() * 1.35, 1.0)
    boxes = [(les.centre, np.full(3, ext))]
    for lobe in les.lobes:
        boxes.append((lobe.centre, lobe.radii * 1.1 + 1))
    sel = np.zeros(s.shape, bool)
    for c, half in boxes:
        sel |= ((np.abs(s - f32(c[0])) <= half[0]) & (np.abs(u - f32(c[1])) <= half[1])
                & (np.abs(v - f32(c[2])) <= half[2]))
    idx = np.flatnonzero(sel)
    ss, uu, vv = s[idx], u[idx], v[idx]
    c, r = les.centre, les.radii
    ds = (ss - f32(c[0])) / f32(r[0])
    du = (uu - f32(c[1])) / f32(r[1])
    dv = (vv - f32(c[2])) / f32(r[2])
    rho = np.sqrt(ds * ds + du * du + dv * dv) + f32(1e-6)
    unit = np.stack([ds / rho, du / rho, dv / rho], axis=1)
    g = np.zeros(idx.size, f32)
    mg = les.margin
    for d, fr, ph, a in zip(mg.directions, mg.frequencies, mg.phases, mg.amplitudes,
                            strict=True):
        g += f32(a) * np.cos(f32(fr) * (unit @ d) + f32(ph))
    return _LesionPoints(idx=idx, pts=np.stack([ss, uu, vv], axis=1), rho=rho, g=g)


def lesion_occupancy(les: LesionSpec, near: _LesionPoints, ana: Tissue, spine: Spine
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Partial-volume occupancy in [0, 1] (M,) and the normalised radius of the lesion's
    outline (M,; 1 on the margin), at the points near the lesion."""
    f32 = _F32
    idx, rho, g = near.idx, near.rho, near.g
    ss, uu, vv = near.pts[:, 0], near.pts[:, 1], near.pts[:, 2]
    boundary = 1 + f32(les.irregularity) * g / f32(1.6)
    mean_r = f32(les.radii.mean())
    occ = np.clip(0.5 + (boundary - rho) * mean_r / f32(0.7), 0, 1)
    # confined to its own vertebral body; lesions larger than the body expand through
    # the cortex (les.breach mm), as large myeloma and metastatic deposits do
    own = ana.k[idx] == spine.index_of(les.k)
    occ *= np.clip(0.5 - (ana.d_body[idx] - f32(les.breach)) / f32(0.7), 0, 1) * own
    r_norm = rho / boundary
    for lobe in les.lobes:
        lc, lr = lobe.centre, lobe.radii
        rl = np.sqrt(((ss - f32(lc[0])) / f32(lr[0])) ** 2
                     + ((uu - f32(lc[1])) / f32(lr[1])) ** 2
                     + ((vv - f32(lc[2])) / f32(lr[2])) ** 2)
        rl = rl / (1 + f32(0.5 * les.irregularity) * g / f32(1.6))
        o = np.clip(0.5 + (1 - rl) * f32(lr.mean()) / f32(0.7), 0, 1)
        if lobe.kind == "posterior":
            o *= (ana.arch[idx] | (ana.d_body[idx] <= 1.0)) & own
        else:  # soft tissue: not into another vertebra's bone
            o *= (ana.d_body[idx] > 0) | own
        # one outline for the union, so a rim runs around the whole lesion
        r_norm = np.where(o > 0, np.minimum(r_norm, rl), r_norm)
        occ = np.maximum(occ, o)
    return occ.astype(f32), r_norm


def lesion_enhancement(les: LesionSpec, near: _LesionPoints, r_norm: np.ndarray) -> np.ndarray:
    """Enhancing intensity (M,) at the points near the lesion.

    ``enhancement * (1 + heterogeneity * z)``: ``z`` is the lesion's structure field
    (:meth:`LesionSpec.structure`: rim with a dark core and/or diffuse mottling) mapped to a
    standard normal through the field's own distribution over the lesion (``les.reference``,
    a probability-integral transform). Every lesion's intensities over its volume are therefore
    normal with mean ``enhancement`` and SD ``enhancement * heterogeneity``, both drawn
    without regard to the label: the class shows in where the bright and dark parts lie, not
    in how many there are.
    """
    f32 = _F32
    raw = les.structure(near.pts, r_norm)
    n = len(les.reference)
    quantile = np.interp(raw, les.reference, (np.arange(n) + 0.5) / n)
    z = ndtri(quantile).astype(f32)
    return (f32(les.enhancement) * (1 + f32(les.heterogeneity) * z)).astype(f32)


@dataclass(frozen=True, eq=False)
class Marrow:
    """Label-independent variation of one patient's healthy bone: marrow level and mottling
    (red/yellow marrow, fatty islands), and the enhancing basivertebral venous plexus."""

    level: float  # mean marrow intensity (relative units)
    mottling: float  # relative SD of the marrow's texture
    texture: Texture
    vessel: float  # intensity added on the basivertebral vein (0: not seen)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Marrow:
        return cls(level=float(rng.uniform(0.20, 0.32)), mottling=float(rng.uniform(0.0, 0.3)),
                   texture=Texture.draw(rng, (6.0, 16.0)),
                   vessel=float(rng.uniform(0.0, 0.45) if rng.random() < 0.7 else 0.0))

    def apply(self, val: np.ndarray, ana: Tissue, spine: Spine, s: np.ndarray, u: np.ndarray,
              v: np.ndarray) -> None:
        """Paint the marrow of ``val`` (in place) at the straightened points."""
        f32 = _F32
        marrow = np.flatnonzero(ana.d_body <= -1.3)
        if not marrow.size:
            return
        pts = np.stack([s[marrow], u[marrow], v[marrow]], axis=1)
        inten = f32(self.level) * (1 + f32(self.mottling) * self.texture.at(pts))
        if self.vessel > 0:
            a_u = spine.a_u[ana.k[marrow]].astype(f32)
            vein = ((np.abs(ana.s_v[marrow]) < 1.6) & (np.abs(v[marrow]) < 2.5)
                    & (u[marrow] < -0.25 * a_u))
            inten = np.where(vein, inten + f32(self.vessel), inten)
        val[marrow] = inten


@dataclass(frozen=True, eq=False)
class Phantom:
    """One patient: spine, lesions, the scanner's fat suppression and coil, and an optional
    bright marker (a test target) at an LPS point."""

    spine: Spine
    lesions: tuple[LesionSpec, ...]
    fat_residual: float
    coil: CoilSensitivity
    marker_lps: np.ndarray | None = None
    marrow: Marrow | None = None
    distractors: tuple[LesionSpec, ...] = ()  # rendered, never masked

    def render(self, x: np.ndarray, y: np.ndarray, z: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Intensity (N,) and per-lesion occupancy (L, N), float32, at local Cartesian points
        (left, anterior, superior mm about the index vertebral body)."""
        s, u, v = self.spine.to_local(x, y, z)
        ana = tissue(self.spine, s, u, v, fat_residual=self.fat_residual)
        val = ana.val
        if self.marrow is not None:
            self.marrow.apply(val, ana, self.spine, s, u, v)
        occ_all = np.zeros((len(self.lesions), s.size), np.float32)
        for n, les in enumerate(self.lesions + self.distractors):
            near = _near(les, s, u, v)
            if near.idx.size:
                occ, r_norm = lesion_occupancy(les, near, ana, self.spine)
                inten = lesion_enhancement(les, near, r_norm)
                idx = near.idx
                if n < len(self.lesions):
                    occ_all[n, idx] = occ
                val[idx] = val[idx] * (1 - occ) + inten * occ
        if self.marker_lps is not None:
            mk = self.spine.lps_to_local(self.marker_lps)
            d2 = ((x - np.float32(mk[0])) ** 2 + (y - np.float32(mk[1])) ** 2
                  + (z - np.float32(mk[2])) ** 2)
            # a Gaussian blob, wide enough that the slab nearest to it is always the brightest
            near_marker = d2 < 16.0
            val[near_marker] += np.float32(60.0) * np.exp(-d2[near_marker]
                                                          / np.float32(2 * 0.6 ** 2))
        return val, occ_all


def render_series(ph: Phantom, g: SliceStack) -> tuple[np.ndarray, np.ndarray]:
    """Image ``[slice, row, col]`` float32 and lesion occupancy ``[lesion, slice, row, col]``,
    averaged over the slice profile (three samples across the slab, trapezoid-like weights),
    times the coil sensitivity."""
    offsets = (-g.thickness / 3, 0.0, g.thickness / 3)
    weights = (0.3, 0.4, 0.3)
    n_les = len(ph.lesions)
    img = np.zeros((g.n_slices, g.rows * g.cols), np.float32)
    occ = np.zeros((n_les, g.n_slices, g.rows * g.cols), np.float32)
    step_r, step_c = g.col_dir * g.pixel[0], g.row_dir * g.pixel[1]
    for k in range(g.n_slices):
        centre = g.slice_origin(k)
        for off, w in zip(offsets, weights, strict=True):
            xyz = ph.spine.local_grid(centre + off * g.normal, step_r, step_c, g.rows, g.cols)
            val, o = ph.render(*xyz)
            img[k] += np.float32(w) * val
            occ[:, k] += np.float32(w) * o
        img[k] *= ph.coil.on_grid(centre, step_r, step_c, g.rows, g.cols).ravel()
    return (img.reshape(g.n_slices, g.rows, g.cols),
            occ.reshape(n_les, g.n_slices, g.rows, g.cols))
