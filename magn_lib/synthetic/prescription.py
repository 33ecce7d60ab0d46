"""Slice prescriptions: the sagittal, coronal and oblique axial stacks a radiographer sets on
one patient, in the scanner's conventions."""

from __future__ import annotations

import math

import numpy as np

from magn_lib.synthetic.anatomy import Spine
from magn_lib.synthetic.geometry import SliceStack, rotation
from magn_lib.synthetic.lesions import LesionSpec
from magn_lib.synthetic.scanners import SeriesSpec, Vendor, inplane_axes

__all__ = ["cover", "prescribe", "tilt_towards"]


def _stack(centre: np.ndarray, normal: np.ndarray, spec: SeriesSpec, n_slices: int,
           position: str, patient_oriented: bool, rng: np.random.Generator) -> SliceStack:
    row_dir, col_dir = inplane_axes(normal, position, patient_oriented)
    nrm = np.cross(row_dir, col_dir)
    pixel = spec.pixel * rng.uniform(0.96, 1.04)
    pixel = round(pixel, 4)
    spacing = spec.thickness + spec.gap
    origin = (centre - (n_slices - 1) / 2 * spacing * nrm
              - (spec.cols - 1) / 2 * pixel * row_dir - (spec.rows - 1) / 2 * pixel * col_dir)
    return SliceStack(origin=origin, row_dir=row_dir, col_dir=col_dir, normal=nrm,
                      pixel=(pixel, pixel), spacing=spacing, thickness=spec.thickness,
                      rows=spec.rows, cols=spec.cols, n_slices=n_slices)


def tilt_towards(normal: np.ndarray, axis: np.ndarray, max_deg: float
                 ) -> tuple[np.ndarray, float]:
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


def prescribe(spine: Spine, lesions: tuple[LesionSpec, ...], vendor: Vendor, position: str,
              rng: np.random.Generator, *, marker_lps: np.ndarray | None = None
              ) -> dict[str, SliceStack]:
    """Sagittal, coronal and oblique axial stacks covering the lesions, as a radiographer
    sets them (each stack covers every lesion whole; and ``marker_lps`` when given)."""
    lo = np.min([les.extent[0] for les in lesions], axis=0)  # (s, u, v) mm
    hi = np.max([les.extent[1] for les in lesions], axis=0)
    les_s = np.array([les.centre[0] for les in lesions])
    s_mid = float((lo[0] + hi[0]) / 2)
    j0 = 3
    a_u, a_v = spine.a_u[j0], spine.a_v[j0]
    u_mid = -(a_u * 0.3 + spine.canal[0])
    stacks: dict[str, SliceStack] = {}
    # sagittal: normal ~ patient left with a few degrees of double obliquity
    left, ant, _ = spine.frame(s_mid)
    tilt = (rotation(2, math.radians(rng.normal(0, 2)))
            @ rotation(1, math.radians(rng.normal(0, 2))))
    spec = vendor.series["sagittal"]
    spacing = spec.thickness + spec.gap
    half = max(a_v + 6.0, -lo[2] + 1.0, hi[2] + 1.0)
    n_sag = int(math.ceil(2 * half / spacing)) + 1
    centre = spine.to_world(s_mid + rng.uniform(-12, 12), u_mid + rng.uniform(-5, 5), 0.0)
    stacks["sagittal"] = _stack(centre, tilt @ left, spec, n_sag, position,
                                vendor.patient_oriented, rng)
    # coronal: follows the segment's mean tangent, covers bodies, canal and the lesions
    spec = vendor.series["coronal"]
    spacing = spec.thickness + spec.gap
    u_lo = min(-(a_u + 2 * spine.canal[0] + 2.0), lo[1] - 1.0)
    u_hi = max(a_u + 4.0, hi[1] + 1.0)
    n_cor = int(math.ceil((u_hi - u_lo) / spacing)) + 1
    centre = spine.to_world(s_mid + rng.uniform(-10, 10), (u_lo + u_hi) / 2, rng.uniform(-3, 3))
    stacks["coronal"] = _stack(centre, ant, spec, n_cor, position, vendor.patient_oriented,
                               rng)
    # axial: perpendicular to the index vertebra's tangent (endplate), tilt limited to 20 deg;
    # the tilted slab must still hold the lesions' whole extent along the spine
    spec = vendor.series["axial"]
    spacing = spec.thickness + spec.gap
    _, _, sup0 = spine.frame(float(les_s.mean()))
    normal, _ = tilt_towards(sup0, np.array([0.0, 0.0, 1.0]), 20.0)
    normal = rotation(1, math.radians(rng.normal(0, 1.5))) @ normal
    normal /= np.linalg.norm(normal)
    corners = [spine.to_world(s, u, v) for s in (lo[0], hi[0]) for u in (lo[1], hi[1])
               for v in (lo[2], hi[2])]
    along = np.array(corners) @ normal
    centre = spine.to_world(s_mid, u_mid + rng.uniform(-5, 5), rng.uniform(-3, 3))
    centre = centre + ((along.max() + along.min()) / 2 - centre @ normal) * normal
    n_ax = int(math.ceil((along.max() - along.min() + 6.0) / spacing)) + 1
    stacks["axial"] = _stack(centre, normal, spec, n_ax, position, vendor.patient_oriented, rng)
    if marker_lps is not None:
        for view, g in stacks.items():
            stacks[view] = cover(g, marker_lps)
    return stacks


def cover(g: SliceStack, point: np.ndarray) -> SliceStack:
    """Extend a stack by whole slices, or shift it in-plane, so ``point`` (LPS mm) lies at least
    one slice and 10 mm inside; orientation and the existing slices are kept."""
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
    return g.replace(origin=origin, n_slices=n_slices)
