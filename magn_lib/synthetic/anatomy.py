"""One patient's spine segment: its curved frame and its tissues (no lesions, no scanner).

A point of the patient frame (LPS mm) maps to local Cartesian ``(x, y, z)`` = (left,
anterior, superior) about the index vertebral body, and from there to straightened
``(s, u, v)``: arc length along a circular centreline (superior +), offset along the local
anterior normal, and lateral offset (patient left +); the index vertebra's body centre is
``(0, 0, 0)``. Seven vertebrae are modelled, ``k = -3 .. 3`` (``k = +1`` the one above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from magn_lib.synthetic.geometry import rotation

__all__ = ["INTENSITY", "LEVELS", "SITE_LEVELS", "Spine", "Tissue", "level_dims", "tissue"]

# Intensities of fat-suppressed post-contrast T1 (relative units, enhancing lesion ~ 0.8).
INTENSITY = {
    "marrow": 0.26, "cortex": 0.05, "disc": 0.17, "nucleus": 0.24, "csf": 0.07, "cord": 0.33,
    "arch": 0.22, "muscle": 0.30, "deep": 0.37, "lung": 0.03, "aorta": 0.92, "foramen": 0.30,
}

LEVELS = (
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)] + [f"S{i}" for i in range(1, 6)]
)


def level_dims(level: str) -> tuple[float, float, float, float]:
    """Sizes (mm) of one vertebral level: body height, disc below, body depth (AP), width."""
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


# the index vertebra of a site is drawn from these levels
SITE_LEVELS = {
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
_CURVATURE_RADIUS = {"cervical": (150, 260), "thoracic": (260, 420), "lumbar": (200, 340),
                     "sacrococcygeal": (110, 170)}


@dataclass(frozen=True, eq=False)
class Spine:
    """The spine segment of one patient. Arrays of length 7 are indexed by ``k + 3``."""

    site: str
    levels: list[str]  # level names, k = -3 .. 3
    k_index: np.ndarray  # (7,) int: k of each entry
    height: np.ndarray  # (7,) body heights, mm
    disc: np.ndarray  # (7,) disc below each body, mm
    a_u: np.ndarray  # (7,) body AP semi-axis, mm
    a_v: np.ndarray  # (7,) body LR semi-axis, mm
    centres: np.ndarray  # (7,) body centres along s, mm
    bounds: np.ndarray  # (6,) mid-disc planes along s, mm
    canal: tuple[float, float]  # canal radii (AP, LR), mm
    cord: tuple[float, float] | None  # cord radii (AP, LR), mm; None below the conus
    u_canal: float  # canal centre along u, mm
    ring: float  # neural-arch thickness, mm
    spinous: float  # spinous process length, mm
    outline: tuple[float, float, float]  # body outline: centre u, AP and LR semi-axes, mm
    fat: float  # subcutaneous fat thickness, mm
    kappa: float  # centreline curvature, 1/mm (< 0 lordosis, > 0 kyphosis)
    phi0: float  # sagittal tilt of the index vertebra, radians
    B: np.ndarray  # (3, 3) local (left, anterior, superior) -> LPS
    origin: np.ndarray  # (3,) LPS mm of the index vertebral body centre

    @classmethod
    def draw(cls, site: str, rng: np.random.Generator) -> Spine:
        canal, cord, spinous, outline, fat_range = _SITE_BODY[site]
        scale = rng.uniform(0.92, 1.08)
        levels = SITE_LEVELS[site]
        index_level = levels[rng.integers(len(levels))]
        i0 = LEVELS.index(index_level)
        ks = np.arange(-3, 4)
        # k = +1 is the vertebra above (superior); clamp to real levels at the column's ends
        names = [LEVELS[min(max(i0 - k, 0), len(LEVELS) - 1)] for k in ks]
        dims = np.array([level_dims(n) for n in names]) * scale
        height, disc, depth, width = dims.T
        # body centres along s: k = 0 at 0, neighbours one pitch (half bodies + disc) away
        centres = np.zeros(len(ks))
        for j in range(4, len(ks)):  # superior
            centres[j] = centres[j - 1] + height[j - 1] / 2 + disc[j] + height[j] / 2
        for j in range(2, -1, -1):  # inferior; disc j sits below body j
            centres[j] = centres[j + 1] - height[j + 1] / 2 - disc[j] - height[j] / 2
        a_u = depth / 2
        canal_r = (canal[0] * scale, canal[1] * scale)
        fat = rng.uniform(*fat_range)
        # curvature: lordosis (< 0) in the neck and low back, kyphosis (> 0) elsewhere
        sign = -1.0 if site in ("cervical", "lumbar") else 1.0
        kappa = sign / rng.uniform(*_CURVATURE_RADIUS[site])
        tilt = rng.uniform(22, 32) if site == "sacrococcygeal" else rng.uniform(-17, 17)
        # local (left, anterior, superior) -> LPS, with a few degrees of roll and yaw
        base = np.diag([1.0, -1.0, 1.0])
        jitter = (rotation(1, math.radians(rng.normal(0, 2.5)))
                  @ rotation(2, math.radians(rng.normal(0, 3))))
        # index vertebral body centre in LPS: spine lies posterior of the isocentre
        origin = np.array([rng.uniform(-12, 12), rng.uniform(25, 60), rng.uniform(-35, 35)])
        return cls(
            site=site, levels=names, k_index=ks, height=height, disc=disc, a_u=a_u,
            a_v=width / 2, centres=centres, bounds=(centres[1:] + centres[:-1]) / 2,
            canal=canal_r, cord=None if cord is None else (cord[0] * scale, cord[1] * scale),
            u_canal=-(a_u[3] + canal_r[0] + 1.0), ring=5.0 * scale, spinous=spinous * scale,
            outline=outline, fat=fat, kappa=kappa, phi0=math.radians(tilt), B=jitter @ base,
            origin=origin,
        )

    def index_of(self, k: int) -> int:
        """Array index of vertebra ``k``."""
        return int(np.flatnonzero(self.k_index == k)[0])

    # ---- coordinates
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

    def lps_to_local(self, point: np.ndarray) -> np.ndarray:
        """LPS point (3,) -> local Cartesian (left, anterior, superior), float64."""
        return (point - self.origin) @ self.B

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


class Tissue(NamedTuple):
    """The tissue model at N straightened points, and the fields lesions need."""

    val: np.ndarray  # (N,) float32 intensity
    k: np.ndarray  # (N,) int8 array index of the vertebra (slab between mid-disc planes)
    d_body: np.ndarray  # (N,) float32 signed distance to that vertebral body, mm (< 0 inside)
    arch: np.ndarray  # (N,) bool: neural arch ring or transverse process
    s_v: np.ndarray  # (N,) float32 s relative to that body's centre, mm


def tissue(spine: Spine, s: np.ndarray, u: np.ndarray, v: np.ndarray, *,
           fat_residual: float) -> Tissue:
    """Fat-suppressed CE-T1 intensity of the healthy anatomy at straightened points (float32).

    Args:
        fat_residual: signal left in subcutaneous fat by the scanner's fat suppression.
    """
    sp = spine
    f32 = np.float32
    val = np.zeros(s.shape, f32)
    # body outline with a subcutaneous fat rim, deep tissue inside
    uo, ao, wo = sp.outline
    e_out = np.sqrt(((u - f32(uo)) / f32(ao)) ** 2 + (v / f32(wo)) ** 2)
    inside = e_out <= 1
    val[inside] = fat_residual
    deep = e_out <= 1 - sp.fat / min(ao, wo)
    val[deep] = INTENSITY["deep"]
    if sp.site == "thoracic":
        for side in (-1.0, 1.0):
            e_l = np.sqrt(((u - f32(sp.a_u[3] + 55)) / f32(70)) ** 2
                          + ((v - f32(side * (sp.a_v[3] + 62))) / f32(52)) ** 2)
            val[e_l <= 1] = INTENSITY["lung"]
    if sp.site in ("thoracic", "lumbar"):
        e_a = np.sqrt(((u - f32(sp.a_u[3] + 12)) / 11) ** 2
                      + ((v - f32(0.45 * sp.a_v[3] + 6)) / 11) ** 2)
        val[e_a <= 1] = INTENSITY["aorta"]
    if sp.site == "lumbar":
        for side in (-1.0, 1.0):
            e_p = np.sqrt((u / f32(15)) ** 2 + ((v - f32(side * (sp.a_v[3] + 15))) / 16) ** 2)
            val[e_p <= 1] = INTENSITY["muscle"]
    # paraspinal muscles around the spinous process
    um = sp.u_canal - sp.canal[0] - sp.spinous * 0.55
    for side in (-1.0, 1.0):
        e_m = np.sqrt(((u - f32(um)) / f32(sp.spinous * 0.75 + 6)) ** 2
                      + ((v - f32(side * (sp.canal[1] + 14))) / f32(sp.canal[1] + 12)) ** 2)
        val[(e_m <= 1) & deep] = INTENSITY["muscle"]
    # per-vertebra quantities
    k = np.searchsorted(sp.bounds, s).astype(np.int8)
    s_v = s - sp.centres[k].astype(f32)
    half_h = (sp.height[k] / 2).astype(f32)
    a_u = sp.a_u[k].astype(f32)
    a_v = sp.a_v[k].astype(f32)
    # neural arch: ring around the canal, shorter than the body (foramina between)
    cu, cv = sp.canal
    e_c = np.sqrt(((u - f32(sp.u_canal)) / f32(cu)) ** 2 + (v / f32(cv)) ** 2)
    ring_e = 1 + sp.ring / min(cu, cv)
    arch_s = np.abs(s_v) <= 0.75 * half_h
    arch = (e_c > 1) & (e_c <= ring_e) & arch_s & (u < -a_u * 0.6)
    # spinous process slopes caudally with depth; transverse processes laterally
    depth = f32(sp.u_canal - cu - sp.ring * 0.6) - u
    spin = ((depth >= 0) & (depth <= f32(sp.spinous)) & (np.abs(v) <= 3.0)
            & (np.abs(s_v + 0.35 * depth) <= 0.3 * half_h + 1.5))
    trans = ((np.abs(u - f32(sp.u_canal)) <= 4.5) & (np.abs(v) >= cv)
             & (np.abs(v) <= cv + sp.ring + 14.0) & (np.abs(s_v) <= 0.22 * half_h + 1.5)
             & (sp.site != "sacrococcygeal"))
    arch_all = arch | spin | trans
    val[arch_all] = INTENSITY["arch"]
    val[(e_c <= ring_e) & ~arch_all & (e_c > 1) & (u < -a_u * 0.6)] = INTENSITY["foramen"]
    # canal and cord
    canal = e_c <= 1
    val[canal] = INTENSITY["csf"]
    if sp.cord is not None:
        e_cord = np.sqrt(((u - f32(sp.u_canal)) / f32(sp.cord[0])) ** 2
                         + (v / f32(sp.cord[1])) ** 2)
        val[e_cord <= 1] = INTENSITY["cord"]
    # bodies and discs: signed distance (mm, negative inside) of a rounded cylinder
    e_b = np.sqrt((u / a_u) ** 2 + (v / a_v) ** 2)
    d_xy = (e_b - 1) * np.minimum(a_u, a_v)
    d_s = np.abs(s_v) - half_h
    d_body = np.maximum(d_xy, d_s)
    disc = (d_s > 0) & (d_xy <= 0.6)
    val[disc] = INTENSITY["disc"]
    val[disc & (e_b < 0.55)] = INTENSITY["nucleus"]
    body = d_body <= 0
    val[body] = INTENSITY["cortex"]
    val[d_body <= -1.3] = INTENSITY["marrow"]
    return Tissue(val=val, k=k, d_body=d_body, arch=arch | trans, s_v=s_v)
