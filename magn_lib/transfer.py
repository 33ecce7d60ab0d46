"""Move a lesion mask from one grid to another through world coordinates, and measure masks.

The paper (Chen et al. 2022, Front. Oncol. 12:981769, Fig. 2) draws each lesion on the sagittal
series only and obtains the coronal and axial masks "through the patient coordinate system".
:func:`transfer_mask` does exactly that: every voxel centre of the target grid is mapped to world
RAS+ millimetres by the target affine, then into the mask's voxel space by the inverse of the
mask affine, and the mask is sampled there by trilinear interpolation
(:func:`scipy.ndimage.map_coordinates`, ``order=1``) and thresholded. Interpolating across the
thick, gapped sagittal slices and cutting at 0.5 puts the transferred boundary half-way between
slice centres, i.e. on the boundary of the voxels as drawn.

Outside the mask's field of view the mask is zero, and it is treated as a zero-extended volume:
a target point half a voxel beyond the last mask voxel centre still receives half that voxel's
value (SciPy's ``mode="grid-constant"``), so a lesion drawn on an edge slice keeps the full
extent of that slice. nibabel's ``resample_from_to`` (default ``mode="constant"``) instead
drops everything beyond the outermost voxel centres; the two agree everywhere else.

Only the target voxels whose world position can fall inside the bounding box of the mask's
foreground (plus the one-voxel support of the interpolation) are computed; the rest are zero by
construction. A lesion occupies a small part of a series, which makes the transfer much faster
than resampling whole volumes (see ``benchmarks/bench_transfer.py``).

QC helpers: :func:`mask_volume_mm3`, :func:`mask_centroid_world`, :func:`dice` and
:func:`surface_distances` (average symmetric surface distance and Hausdorff distances in mm,
as defined by MONAI's ``compute_average_surface_distance`` / ``compute_hausdorff_distance``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from magn_lib.errors import InputError
from magn_lib.geometry import Geometry

__all__ = [
    "SurfaceDistance",
    "dice",
    "mask_centroid_world",
    "mask_volume_mm3",
    "surface_distances",
    "transfer_mask",
]

# Two grids whose affines differ by less than this (mm, per element) are the same grid.
_SAME_GRID_ATOL = 1e-3


def transfer_mask(
    mask: nib.spatialimages.SpatialImage,
    target: nib.spatialimages.SpatialImage | tuple[Sequence[int], np.ndarray],
    *,
    threshold: float = 0.5,
    soft: bool = False,
    label: int | None = None,
) -> nib.Nifti1Image:
    """Resample a mask onto another grid of the same patient through world coordinates.

    Args:
        mask: 3D image (trailing singleton dimensions allowed) whose affine maps voxel indices to
            world RAS+ mm. Values: binary (0/1, or 0 and one other value such as 255), a soft map
            in [0, 1], or a multi-label map together with ``label``.
        target: the image (only its ``shape[:3]`` and ``affine`` are used; its data is never
            read) or a ``(shape, affine)`` pair defining the output grid.
        threshold: output voxels whose interpolated value is ``>= threshold`` are foreground;
            in (0, 1].
        soft: return the interpolated float32 map in [0, 1] instead of the thresholded mask.
        label: select the voxels equal to this value of a multi-label mask.

    Returns:
        A ``Nifti1Image`` on the target grid: uint8 0/1 data of shape ``target.shape[:3]`` (or
        float32 when ``soft``) whose affine is the target's; its header copies the target's
        qform, sform, codes and units when the target is a NIfTI image (else both forms hold
        the affine with code 1 = scanner) and nothing else: ``descrip`` and the rest are empty.
        An empty mask, or one that lies entirely outside the target grid, gives all zeros.

    Raises:
        InputError: the mask is not 3D, holds NaN or several labels without ``label``, lacks the
            requested ``label``, or either affine is singular.
        ValueError: ``threshold`` outside (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    file = _filename(mask)
    data = _volume_data(mask, file=file)
    shape, target_affine = _grid(target)
    mask_affine = np.asarray(mask.affine, dtype=np.float64)
    # target voxel index -> mask voxel index
    target_to_mask = _inverse(mask_affine, file=file) @ target_affine
    _inverse(target_affine, file=_filename(target))  # a singular target affine is an error too

    out = np.zeros(shape, dtype=np.float32 if soft else np.uint8)
    if label is not None:
        data = _select_label(data, label, file=file)
    box = _support_box(data)
    if box is not None:
        lo, hi = box
        # Everything outside the box is zero, so the values are checked and converted there only.
        # One zero voxel around the box makes interpolation exact inside the padded box, and
        # everything outside it is zero.
        box_data = data[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
        padded = np.zeros(tuple(hi - lo + 3), dtype=np.float32)
        padded[1:-1, 1:-1, 1:-1] = _foreground(box_data, file=file)
        origin = lo - 1  # mask voxel index of padded[0, 0, 0]
        region = _target_region(target_to_mask, origin, origin + np.array(padded.shape) - 1, shape)
        if region is not None:
            start, stop = region
            axes = [np.arange(a, b, dtype=np.float64) for a, b in zip(start, stop, strict=True)]
            rzs, trans = target_to_mask[:3, :3], target_to_mask[:3, 3] - origin
            coords = np.empty((3, *(len(a) for a in axes)), dtype=np.float64)
            for c in range(3):
                coords[c] = (
                    rzs[c, 0] * axes[0][:, None, None]
                    + rzs[c, 1] * axes[1][None, :, None]
                    + rzs[c, 2] * axes[2][None, None, :]
                    + trans[c]
                )
            sampled = ndimage.map_coordinates(padded, coords, order=1, mode="constant", cval=0.0)
            block = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            out[block] = np.clip(sampled, 0.0, 1.0) if soft else sampled >= threshold
    return _new_image(out, target_affine, target)


def mask_volume_mm3(img: nib.spatialimages.SpatialImage) -> float:
    """Foreground volume of a mask in mm³: nonzero voxels x voxel volume (|det| of the affine).

    Pass a thresholded mask; a soft map's nonzero voxels all count.
    """
    data = _volume_data(img, file=_filename(img))
    return float(np.count_nonzero(data)) * Geometry.of(img).voxel_volume


def mask_centroid_world(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Centroid of a mask's nonzero voxel centres in world RAS+ mm, float64 [3].

    Every foreground voxel weighs the same. An empty mask gives ``[nan, nan, nan]`` (its
    volume, :func:`mask_volume_mm3`, is then 0).
    """
    data = _volume_data(img, file=_filename(img))
    ijk = np.argwhere(data != 0)
    if len(ijk) == 0:
        return np.full(3, np.nan)
    return nib.affines.apply_affine(np.asarray(img.affine, dtype=np.float64), ijk.mean(axis=0))


def dice(a: nib.spatialimages.SpatialImage | np.ndarray, b: Any) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two masks on the same grid (nonzero = in).

    ``a`` and ``b`` are both images or both arrays of one shape. Returns nan when both are empty.

    Raises:
        InputError: the masks differ in shape or (for images) in affine.
    """
    x, y, _ = _pair(a, b)
    total = np.count_nonzero(x) + np.count_nonzero(y)
    if total == 0:
        return float("nan")
    return 2.0 * np.count_nonzero(x & y) / total


@dataclass(frozen=True)
class SurfaceDistance:
    """Distances between the boundaries of two masks, in mm.

    ``average_mm``: average symmetric surface distance (all boundary-voxel distances of both
    directions pooled); ``hd95_mm``: the larger of the two directed 95th percentiles;
    ``max_mm``: Hausdorff distance. Definitions as in MONAI (``compute_average_surface_distance``
    with ``symmetric=True``, ``compute_hausdorff_distance`` with ``directed=False``).
    """

    average_mm: float
    hd95_mm: float
    max_mm: float


def surface_distances(
    a: nib.spatialimages.SpatialImage | np.ndarray,
    b: Any,
    *,
    spacing: Sequence[float] | None = None,
) -> SurfaceDistance:
    """Boundary distances between two masks on the same grid (nonzero = in).

    A boundary voxel is a foreground voxel with a background face-neighbour (the volume edge
    counts as background); the distance from each boundary voxel of one mask to the nearest
    boundary voxel of the other comes from :func:`scipy.ndimage.distance_transform_edt` with the
    voxel spacing, so distances are in mm and exact for voxel centres.

    Args:
        a, b: both images (same shape and affine; spacing = column norms of the affine, exact for
            any rotation) or both arrays of one shape (2D or 3D).
        spacing: voxel size in mm per axis for arrays (default 1 mm); ignored for images.

    Returns:
        :class:`SurfaceDistance`. All fields are nan when both masks are empty and inf when
        exactly one is.

    Raises:
        InputError: the masks are not on the same grid.
    """
    x, y, img_spacing = _pair(a, b)
    if img_spacing is not None:
        spacing = img_spacing
    spacing = np.ones(x.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (x.ndim,):
        raise ValueError(f"spacing needs {x.ndim} values, got {spacing.tolist()}")
    edge_x, edge_y = _boundary(x), _boundary(y)
    if not edge_x.any() and not edge_y.any():
        return SurfaceDistance(float("nan"), float("nan"), float("nan"))
    if not edge_x.any() or not edge_y.any():
        return SurfaceDistance(float("inf"), float("inf"), float("inf"))
    x_to_y = ndimage.distance_transform_edt(~edge_y, sampling=spacing)[edge_x]
    y_to_x = ndimage.distance_transform_edt(~edge_x, sampling=spacing)[edge_y]
    pooled = np.concatenate([x_to_y, y_to_x])
    hd95 = max(np.percentile(x_to_y, 95), np.percentile(y_to_x, 95))
    return SurfaceDistance(float(pooled.mean()), float(hd95), float(pooled.max()))


# --- helpers -------------------------------------------------------------------------------


def _filename(img: Any) -> str | None:
    getter = getattr(img, "get_filename", None)
    return getter() if callable(getter) else None


def _volume_data(img: nib.spatialimages.SpatialImage, *, file: str | None) -> np.ndarray:
    """The image data as a 3D array (trailing singleton dimensions dropped); read, never edited."""
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(
            f"expected a 3D mask, got shape {tuple(img.shape)}",
            file=file,
            hint="pass one volume (a single time point / label map)",
        )
    return data


def _select_label(data: np.ndarray, label: int, *, file: str | None) -> np.ndarray:
    """Boolean volume of the voxels equal to ``label``; an error when there are none."""
    selected = data == label
    if not selected.any():
        present = np.unique(data[data != 0])[:20].tolist()
        raise InputError(
            f"label {label} does not occur in the mask (labels present: {present})", file=file
        )
    return selected


def _foreground(data: np.ndarray, *, file: str | None) -> np.ndarray:
    """The mask values as float32 in [0, 1] (a new array; the input is left alone)."""
    if data.dtype == bool:
        return data.astype(np.float32)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError("mask holds NaN or infinite values", file=file)
    if data.min() >= 0 and data.max() <= 1:
        return data.astype(np.float32)  # binary 0/1 or a soft map
    labels = np.unique(data[data != 0])
    if len(labels) > 1:
        shown = ", ".join(f"{v:g}" for v in labels[:10].tolist())
        more = ", ..." if len(labels) > 10 else ""
        raise InputError(
            f"mask holds {len(labels)} different nonzero values ({shown}{more})",
            file=file,
            hint="pass label=<value> to choose one lesion label",
        )
    return (data != 0).astype(np.float32)


def _grid(target: Any) -> tuple[tuple[int, int, int], np.ndarray]:
    if hasattr(target, "affine") and hasattr(target, "shape"):
        shape, affine = target.shape, target.affine
    else:
        shape, affine = target
    shape = tuple(int(n) for n in shape)
    if len(shape) < 3 or any(n < 1 for n in shape[:3]):
        raise InputError(f"target grid must be 3D, got shape {shape}", file=_filename(target))
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(f"target affine must be 4x4, got {affine.shape}", file=_filename(target))
    return shape[:3], affine  # type: ignore[return-value]


def _inverse(affine: np.ndarray, *, file: str | None) -> np.ndarray:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(
            "the voxel-to-world affine is singular or not finite",
            file=file,
            hint="the header's geometry is broken; re-export the series",
        )
    return np.linalg.inv(affine)


def _support_box(data: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive voxel bounds (lo, hi) of the nonzero (or NaN) values, or None when there are none.

    First an OR over the array's outermost (slowest-varying) axis, which NumPy vectorises, then
    the outermost axis' extent inside the in-plane box: ~30x faster than ``np.nonzero`` or a
    reduction along the innermost axis on a 256 x 256 x 15 lesion mask.
    """
    outer = 2 if data.flags.f_contiguous and not data.flags.c_contiguous else 0
    inner = tuple(a for a in range(3) if a != outer)
    plane = data.any(axis=outer)
    first, second = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if len(first) == 0:
        return None
    lo, hi = np.zeros(3, dtype=int), np.zeros(3, dtype=int)
    lo[list(inner)], hi[list(inner)] = (first[0], second[0]), (first[-1], second[-1])
    index: list[slice] = [slice(None)] * 3
    for axis in inner:
        index[axis] = slice(lo[axis], hi[axis] + 1)
    extent = np.flatnonzero(data[tuple(index)].any(axis=inner))
    lo[outer], hi[outer] = extent[0], extent[-1]
    return lo, hi


def _target_region(
    target_to_mask: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Half-open target index box [start, stop) holding every target voxel that maps into the
    mask box [lo, hi] (mask voxel indices, inclusive), clipped to the target; None if empty."""
    corners = np.array(
        [[(lo, hi)[bit][axis] for axis, bit in enumerate(bits)] for bits in np.ndindex(2, 2, 2)],
        dtype=np.float64,
    )
    in_target = nib.affines.apply_affine(np.linalg.inv(target_to_mask), corners)
    start = np.maximum(np.floor(in_target.min(axis=0) - 1e-6), 0).astype(int)
    stop = np.minimum(np.ceil(in_target.max(axis=0) + 1e-6) + 1, shape).astype(int)
    if np.any(stop <= start):
        return None
    return start, stop


# Header fields that hold a NIfTI image's geometry (qform, sform, voxel sizes and units).
_GEOMETRY_FIELDS = (
    "pixdim", "xyzt_units", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z",
)  # fmt: skip


def _new_image(data: np.ndarray, affine: np.ndarray, like: Any) -> nib.Nifti1Image:
    """A fresh NIfTI image of ``data`` on the grid of ``like`` (nothing else of its header)."""
    header = nib.Nifti1Header()
    like_header = getattr(like, "header", None)
    if isinstance(like_header, nib.Nifti1Header):
        # Copying the geometry fields keeps the target's qform/sform and codes exactly, and
        # spares nibabel re-deriving them from the affine (most of the time on small grids).
        for key in _GEOMETRY_FIELDS:
            header[key] = like_header[key]
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, affine, header)
    if not isinstance(like_header, nib.Nifti1Header):
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    return img


def _as_mask_array(x: Any) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    if hasattr(x, "affine") and hasattr(x, "dataobj"):
        file = _filename(x)
        return _volume_data(x, file=file) != 0, np.asarray(x.affine, dtype=np.float64), file
    return np.asarray(x) != 0, None, None


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Two boolean masks on one grid, and the voxel spacing (mm) when they are images."""
    x, affine_x, file_x = _as_mask_array(a)
    y, affine_y, file_y = _as_mask_array(b)
    if x.shape != y.shape:
        raise InputError(
            f"masks differ in shape: {x.shape} vs {y.shape}",
            file=file_x or file_y,
            hint="transfer one onto the other's grid first",
        )
    if (affine_x is None) != (affine_y is None):
        raise ValueError("pass two images or two arrays, not one of each")
    spacing = None
    if affine_x is not None and affine_y is not None:
        if not np.allclose(affine_x, affine_y, atol=_SAME_GRID_ATOL):
            raise InputError(
                "masks have the same shape but different affines (not the same grid)",
                file=file_x or file_y,
                hint="transfer one onto the other's grid first",
            )
        spacing = Geometry(affine_x).zooms
    return x, y, spacing


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one background face-neighbour (edge = background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)
