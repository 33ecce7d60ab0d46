"""Frames and slice stacks of the embedded cohort.

The phantom lives in the DICOM patient frame (LPS, mm), which is what ImagePositionPatient and
ImageOrientationPatient are written in; what the cohort reports (truth centres, mask affines,
the ``marker_ras`` knob) is world RAS+ mm, ``ras = LPS_TO_RAS @ lps``. Everything the package
knows about these two frames is in this module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from magn_lib import geometry as _world

__all__ = ["LPS_TO_RAS", "SliceStack", "rotation"]

#: The 3 x 3 part of :data:`magn_lib.geometry.LPS_TO_RAS` (a view, not a second definition).
LPS_TO_RAS = _world.LPS_TO_RAS[:3, :3]



def rotation(axis: int, angle: float) -> np.ndarray:
    """3 x 3 rotation by ``angle`` (radians) about coordinate axis ``axis`` (0, 1 or 2)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass(frozen=True, eq=False)
class SliceStack:
    """A stack of parallel slices in LPS mm, as one DICOM series describes it.

    Voxel ``(row r, column c, slice k)`` has its centre at
    ``origin + c * pixel[1] * row_dir + r * pixel[0] * col_dir + k * spacing * normal``.
    """

    origin: np.ndarray  # (3,) LPS mm, centre of voxel (row 0, col 0, slice 0)
    row_dir: np.ndarray  # (3,) along a row (increasing column index), IOP[0:3]
    col_dir: np.ndarray  # (3,) down a column (increasing row index), IOP[3:6]
    normal: np.ndarray  # (3,) row_dir x col_dir
    pixel: tuple[float, float]  # (row spacing, column spacing) mm = DICOM PixelSpacing
    spacing: float  # mm between slice centres (SpacingBetweenSlices)
    thickness: float  # mm (SliceThickness)
    rows: int
    cols: int
    n_slices: int

    def slice_origin(self, k: int) -> np.ndarray:
        """LPS centre (3,) of voxel (row 0, col 0) of slice ``k`` (ImagePositionPatient)."""
        return self.origin + k * self.spacing * self.normal

    def affine_lps(self) -> np.ndarray:
        """Voxel ``(i = column, j = row, k = slice)`` -> LPS mm, 4 x 4 float64."""
        a = np.eye(4)
        a[:3, 0] = self.row_dir * self.pixel[1]
        a[:3, 1] = self.col_dir * self.pixel[0]
        a[:3, 2] = self.normal * self.spacing
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """Voxel ``(i = column, j = row, k = slice)`` -> world RAS+ mm, 4 x 4 float64."""
        to_ras = np.eye(4)
        to_ras[:3, :3] = LPS_TO_RAS
        return to_ras @ self.affine_lps()

    def tilt_deg(self) -> float:
        """Angle (degrees) between the slice normal and the patient's long (S) axis."""
        return math.degrees(math.acos(min(1.0, abs(float(self.normal[2])))))

    def replace(self, **changes: object) -> SliceStack:
        return dataclasses.replace(self, **changes)
