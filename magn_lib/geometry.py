"""The geometry of one image grid: voxel spacing, origin, axis directions, orientation codes.

World frames. DICOM places voxels in the patient-based **LPS** frame (x towards the patient's
left, y towards posterior, z towards the head); NIfTI, nibabel and every volume of this
project use **RAS+** (x towards the right, y anterior, z head). The two differ by the sign of x
and y: :data:`LPS_TO_RAS` (its own inverse).

A :class:`Geometry` is a small value around one float64 4 x 4 affine from voxel index
``(i, j, k)`` to world millimetres, with the frame it maps into, and named properties in the
manner of TorchIO's ``Image.spacing`` / ``Image.orientation``: ``spacing`` (mm per voxel step
along i, j, k), ``origin`` (world mm of voxel 0, 0, 0), ``direction`` (unit axis vectors as
columns), ``orientation`` (anatomical axis codes such as ``("L", "P", "S")``: the direction each
voxel axis runs towards, whatever the frame), ``slice_plane`` and ``obliquity_deg`` of the k
axis.

From DICOM headers (:meth:`Geometry.from_dicom`, with :func:`sort_slices`): ``i`` runs along a
row (over the columns) in the direction of the first three ``ImageOrientationPatient`` cosines
in steps of ``PixelSpacing[1]``; ``j`` down a column in the direction of the last three, in
steps of ``PixelSpacing[0]``; ``k`` over slices sorted by their ``ImagePositionPatient``
projected on the slice normal ``row cosines x column cosines``, in steps of the slice step
measured from the positions: (last - first) / (number of slices - 1) along the normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FRAMES",
    "LPS_TO_RAS",
    "PLANES",
    "Geometry",
    "SliceOrder",
    "lps_to_ras",
    "nearest_plane",
    "slice_normal",
    "sort_slices",
]

#: Multiply an LPS point (homogeneous, ``[4]``) or affine on the left by this to get RAS+, and
#: back: it is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_TO_RAS.setflags(write=False)
#: The world frames a :class:`Geometry` may map into.
FRAMES: tuple[str, ...] = ("RAS", "LPS")
#: Anatomical planes, indexed by the world axis (x, y, z) normal to them.
PLANES: tuple[str, ...] = ("sagittal", "coronal", "axial")


def lps_to_ras(points: Any) -> np.ndarray:
    """World points ``[..., 3]`` from LPS to RAS+ mm (or back).

    Computed as the matrix product with :data:`LPS_TO_RAS`, so the result is the same to the
    last bit (including the sign of zeros) as ``LPS_TO_RAS[:3, :3] @ point``.
    """
    return np.asarray(points, dtype=np.float64) @ LPS_TO_RAS[:3, :3].T


def slice_normal(image_orientation: Any) -> np.ndarray:
    """The unit slice normal ``row cosines x column cosines`` of an ``ImageOrientationPatient``
    (6 numbers), in the frame of the cosines (LPS for DICOM).

    Raises:
        ValueError: not 6 numbers, or row and column cosines parallel (no plane).
    """
    iop = np.asarray(image_orientation, dtype=np.float64)
    if iop.shape != (6,):
        raise ValueError(f"an image orientation has 6 direction cosines, got {iop.tolist()}")
    normal = np.cross(iop[:3], iop[3:])
    length = np.linalg.norm(normal)
    if not length > 0:  # also NaN
        raise ValueError(f"image orientation {iop.tolist()} spans no plane")
    normal /= length
    return normal


def nearest_plane(normal: Any) -> str:
    """The anatomical plane ("sagittal", "coronal", "axial") most nearly normal to ``normal``
    (a vector in RAS or LPS: only the magnitudes of its components count)."""
    return PLANES[int(np.argmax(np.abs(np.asarray(normal, dtype=np.float64))))]


@dataclass(frozen=True, eq=False)
class SliceOrder:
    """A stack's slices sorted along its normal (:func:`sort_slices`).

    Attributes:
        order: int ``[N]``, indices of the given slices in stack order (increasing position
            along the normal; stable for equal positions).
        along: float64 ``[N]``, the sorted slices' positions projected on the normal, mm.
        normal: float64 ``[3]``, the unit slice normal (frame of the positions).
        step: mm from one slice to the next: ``(along[-1] - along[0]) / (N - 1)``; NaN for a
            single slice (whose step the headers must give).
    """

    order: np.ndarray
    along: np.ndarray
    normal: np.ndarray
    step: float


def sort_slices(image_orientation: Any, image_positions: Any) -> SliceOrder:
    """Sort slices by their position along the slice normal and measure the slice step.

    Args:
        image_orientation: the stack's ``ImageOrientationPatient`` (6 numbers).
        image_positions: ``[N, 3]``, each slice's ``ImagePositionPatient`` (same frame).

    Returns:
        A :class:`SliceOrder`. Checking that the positions form one evenly spaced stack is the
        caller's (``magn_lib.dicom`` does it and names the files).
    """
    normal = slice_normal(image_orientation)
    positions = np.asarray(image_positions, dtype=np.float64).reshape(-1, 3)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    n = len(along)
    step = float((along[-1] - along[0]) / (n - 1)) if n > 1 else math.nan
    return SliceOrder(order=order, along=along, normal=normal, step=step)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Voxel-to-world geometry of one grid (see the module docstring).

    Attributes:
        affine: float64 ``[4, 4]`` (a read-only copy), voxel index ``(i, j, k, 1)`` -> world
            mm in ``frame``; voxel centres.
        frame: ``"RAS"`` (NIfTI, the default) or ``"LPS"`` (DICOM).
    """

    affine: np.ndarray
    frame: str = "RAS"

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ValueError(f"affine must be a finite 4 x 4 matrix, got shape {affine.shape}")
        if self.frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        affine.setflags(write=False)
        object.__setattr__(self, "affine", affine)

    @classmethod
    def of(cls, image: Any) -> Geometry:
        """The geometry of a nibabel image (its affine maps to RAS+)."""
        return cls(np.asarray(image.affine, dtype=np.float64), frame="RAS")

    @classmethod
    def from_dicom(
        cls,
        image_orientation: Any,
        image_position: Any,
        pixel_spacing: Any,
        slice_step: float,
    ) -> Geometry:
        """The LPS geometry of a DICOM stack (axis order in the module docstring).

        Args:
            image_orientation: ``ImageOrientationPatient`` (row cosines, column cosines).
            image_position: ``ImagePositionPatient`` of the first slice in stack order (mm).
            pixel_spacing: ``PixelSpacing`` (row spacing, column spacing), mm.
            slice_step: mm from one slice to the next along the normal
                (:attr:`SliceOrder.step`, or a header's spacing for a single slice).

        Returns:
            ``Geometry(frame="LPS")``; :meth:`to_ras` gives the NIfTI affine.
        """
        iop = np.asarray(image_orientation, dtype=np.float64)
        row_spacing, col_spacing = (float(v) for v in pixel_spacing)
        affine = np.eye(4)
        affine[:3, 0] = iop[:3] * col_spacing  # i: along a row, across the columns
        affine[:3, 1] = iop[3:] * row_spacing  # j: down a column, across the rows
        affine[:3, 2] = slice_normal(iop) * slice_step
        affine[:3, 3] = np.asarray(image_position, dtype=np.float64)
        return cls(affine, frame="LPS")

    def to_ras(self) -> Geometry:
        """The same grid with its affine into RAS+ (itself when already RAS)."""
        return self if self.frame == "RAS" else Geometry(LPS_TO_RAS @ self.affine, frame="RAS")

    def to_lps(self) -> Geometry:
        """The same grid with its affine into LPS (itself when already LPS)."""
        return self if self.frame == "LPS" else Geometry(LPS_TO_RAS @ self.affine, frame="LPS")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """mm per voxel step along i, j, k (the lengths of the affine's axis columns)."""
        return tuple(float(v) for v in self.zooms)  # type: ignore[return-value]

    @property
    def zooms(self) -> np.ndarray:
        """:attr:`spacing` as a float64 ``[3]`` array."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> tuple[float, float, float]:
        """World mm (in :attr:`frame`) of the centre of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """float64 ``[3, 3]``: the unit world vector (in :attr:`frame`) of each voxel axis, as
        columns (column 0 for i)."""
        axes = self.affine[:3, :3]
        return axes / np.linalg.norm(axes, axis=0)

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Anatomical code of the direction each voxel axis runs towards, nearest of L/R, P/A,
        I/S: ``("R", "A", "S")`` for a RAS-aligned grid, ``("L", "P", "S")`` for a standard
        axial DICOM series. The same for a grid in either frame."""
        import nibabel as nib

        return tuple(nib.orientations.aff2axcodes(self.to_ras().affine))  # type: ignore[return-value]

    @property
    def voxel_volume(self) -> float:
        """mm³ of one voxel (absolute determinant of the affine's axes)."""
        return abs(float(np.linalg.det(self.affine[:3, :3])))

    @property
    def slice_plane(self) -> str:
        """The anatomical plane most nearly parallel to the slices (normal to the k axis)."""
        return nearest_plane(self.affine[:3, 2])

    @property
    def obliquity_deg(self) -> float:
        """Angle between the k axis and the normal of :attr:`slice_plane`, degrees."""
        normal = self.affine[:3, 2] / np.linalg.norm(self.affine[:3, 2])
        return math.degrees(math.acos(min(1.0, float(np.abs(normal).max()))))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{v:.4g}" for v in self.spacing)
        origin = ", ".join(f"{v:.4g}" for v in self.origin)
        return (f"Geometry(frame={self.frame}, orientation={''.join(self.orientation)}, "
                f"spacing=({spacing}) mm, origin=({origin}) mm)")
