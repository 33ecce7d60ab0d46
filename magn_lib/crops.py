"""Lesion-centred 2.5D crops per view, and the crop cache that training and radiomics read.

Per lesion and view (Chen et al. 2022, Fig. 2; the choices where the paper is silent are in
DESIGN.md): the slice with the largest mask area and its two neighbours become the three
channels; a square crop of ``size`` source pixels (no resampling) is centred on the mask's
centroid in that slice, zero-padded where it leaves the image; intensities are clipped at the
0.5 / 99.5 percentiles of the image pixels inside the crop (padding excluded) and scaled to
[0, 1]. The mask crop is the largest slice's.

Orientation. Slices are taken along the voxel axis closest to the view's normal (R-L for
sagittal, A-P for coronal, S-I for axial). For a volume read from a DICOM series of that view
(``magn_lib.dicom.read_series``: ``data[:, :, k].T`` is stored slice ``k``) this is NIfTI axis
2. In-plane, crops are laid out as radiologists display the view: rows run down the screen and
columns to the right, with

=========  =====================  ======================  ===========================
view       columns run towards    rows run towards        channels ordered towards
=========  =====================  ======================  ===========================
sagittal   posterior              inferior                patient right
coronal    patient left           inferior                posterior
axial      patient left           posterior               superior
=========  =====================  ======================  ===========================

so a standard series (``ImageOrientationPatient`` 0/1/0/0/0/-1 sagittal, 1/0/0/0/0/-1 coronal,
1/0/0/0/1/0 axial) is displayed exactly as the scanner stored it, slices in the order
``read_series`` gives them (along row x column cosines), and a vendor storing rows or slices
the other way round gives the same crop. Only flips and transposes are used: pixels are never
interpolated.

Neighbours beyond the volume's first or last slice replicate that edge slice (the lesion's
largest section is on the edge slice; repeating it is the least invented content).

Cache: one uncompressed NumPy ``.npz`` per run (:func:`write_cache`, :func:`read_cache`),
loadable with ``allow_pickle=False``; see :class:`CropCache` for its keys.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

import magn_lib
from magn_lib.config import VIEWS
from magn_lib.errors import InputError
from magn_lib.files import save
from magn_lib.geometry import Geometry

__all__ = [
    "CACHE_FORMAT",
    "Crop",
    "CropCache",
    "DisplayFrame",
    "LesionCrops",
    "crop_lesion",
    "display_frame",
    "read_cache",
    "write_cache",
]

CACHE_FORMAT = "magn-crops/2"

# Display convention per view, in world RAS+: direction of increasing column, of increasing row,
# and of increasing channel (the slice normal).
_DISPLAY: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "sagittal": ((0, -1, 0), (0, 0, -1), (1, 0, 0)),
    "coronal": ((-1, 0, 0), (0, 0, -1), (0, -1, 0)),
    "axial": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
}

_SAME_GRID_ATOL = 1e-3  # mm


@dataclass(frozen=True, eq=False)
class Crop:
    """One lesion in one view.

    Attributes:
        image: float32 [3, S, S] in [0, 1]; channels = (previous, largest, next) slice in the
            view's channel order, rows/columns in the view's display orientation.
        mask: uint8 [S, S] 0/1, the mask on the largest slice, same layout.
        slice_index: voxel index of the largest slice along ``slice_axis`` of the source volume.
        slice_axis: the source voxel axis the slices are taken along.
        centre_voxel: source voxel index (i, j, k) of crop pixel (S // 2, S // 2).
        clipped: the crop window reaches beyond the image (zero padding was used).
        mask_truncated: part of the largest slice's mask lies outside the crop (lesion > S).
        intensity_range: the (low, high) percentile values that map to 0 and 1, source units.
        pixel_spacing_mm: (row, column) pixel size of the crop in mm (the source voxel size
            along the display row and column axes); radiomics shape features need it.
    """

    image: np.ndarray
    mask: np.ndarray
    slice_index: int
    slice_axis: int
    centre_voxel: tuple[int, int, int]
    clipped: bool
    mask_truncated: bool
    intensity_range: tuple[float, float]
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class DisplayFrame:
    """How a volume's voxel axes map onto (channel, row, column) of a view's display."""

    slice_axis: int
    row_axis: int
    col_axis: int
    flip_slice: bool
    flip_row: bool
    flip_col: bool

    def stack(self, data: np.ndarray) -> np.ndarray:
        """A view of ``data`` [i, j, k] as [slice, row, column] in display order (no copy)."""
        out = np.transpose(data, (self.slice_axis, self.row_axis, self.col_axis))
        return out[
            slice(None, None, -1 if self.flip_slice else 1),
            slice(None, None, -1 if self.flip_row else 1),
            slice(None, None, -1 if self.flip_col else 1),
        ]

    def voxel(self, shape: Sequence[int], s: int, r: int, c: int) -> tuple[int, int, int]:
        """Source voxel index of display position (slice s, row r, column c)."""
        index = [0, 0, 0]
        for axis, value, flip in (
            (self.slice_axis, s, self.flip_slice),
            (self.row_axis, r, self.flip_row),
            (self.col_axis, c, self.flip_col),
        ):
            index[axis] = shape[axis] - 1 - value if flip else value
        return index[0], index[1], index[2]


def display_frame(affine: np.ndarray, view: str) -> DisplayFrame:
    """The :class:`DisplayFrame` of a volume with this voxel-to-RAS+ ``affine`` in ``view``.

    The slice axis is the voxel axis most nearly parallel to the view's normal; of the other
    two, the one most nearly parallel to the display's column direction gives the columns.
    """
    if view not in _DISPLAY:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    right, down, normal = (np.array(v, dtype=float) for v in _DISPLAY[view])
    directions = Geometry(affine).direction
    slice_axis = int(np.argmax(np.abs(normal @ directions)))
    in_plane = [a for a in range(3) if a != slice_axis]
    col_axis = max(in_plane, key=lambda a: abs(right @ directions[:, a]))
    row_axis = in_plane[0] if col_axis == in_plane[1] else in_plane[1]
    return DisplayFrame(
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        flip_slice=bool(normal @ directions[:, slice_axis] < 0),
        flip_row=bool(down @ directions[:, row_axis] < 0),
        flip_col=bool(right @ directions[:, col_axis] < 0),
    )


def crop_lesion(
    image: nib.spatialimages.SpatialImage,
    mask: nib.spatialimages.SpatialImage,
    *,
    view: str,
    size: int,
    percentiles: tuple[float, float] = (0.5, 99.5),
    label: int | None = None,
    lesion_id: str | None = None,
    patient_id: str | None = None,
) -> Crop:
    """Cut one lesion's 2.5D crop from one view's volume.

    Args:
        image: the view's 3D volume (affine: voxel index -> world RAS+ mm).
        mask: the lesion mask on the same grid (for coronal/axial usually the output of
            :func:`magn_lib.transfer.transfer_mask`); nonzero = lesion, or ``== label``.
        view: "sagittal", "coronal" or "axial"; sets the slice axis and display orientation.
        size: crop side S in source pixels.
        percentiles: intensity clipping percentiles, computed over the crop's image pixels.
        label: select one value of a multi-label mask.
        lesion_id, patient_id: only used to name the lesion in error messages.

    Returns:
        A :class:`Crop`.

    Raises:
        InputError: the mask is empty (names the view), or not on the image's grid.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    where = f"lesion {lesion_id}, {view} view" if lesion_id else f"{view} view"
    file = mask.get_filename() if hasattr(mask, "get_filename") else None
    data = _squeeze3(np.asanyarray(image.dataobj), where=where, patient=patient_id)
    labels = _squeeze3(np.asanyarray(mask.dataobj), where=where, patient=patient_id)
    if data.shape != labels.shape or not np.allclose(
        image.affine, mask.affine, atol=_SAME_GRID_ATOL
    ):
        raise InputError(
            f"{where}: mask is not on the image's grid (shape {labels.shape} vs {data.shape})",
            patient=patient_id,
            file=file,
            hint="transfer the mask onto this series with magn_lib.transfer.transfer_mask",
        )
    inside = labels == label if label is not None else labels != 0
    frame = display_frame(image.affine, view)
    stack, mask_stack = frame.stack(data), frame.stack(inside)
    areas = mask_stack.reshape(len(mask_stack), -1).sum(axis=1)
    if areas.max() == 0:
        raise InputError(
            f"{where}: the lesion mask is empty" + (f" for label {label}" if label else ""),
            patient=patient_id,
            file=file,
            hint="check the annotation transfer QC for this lesion and view",
        )
    zooms = Geometry.of(image).zooms
    best = _largest_slice(areas)
    rows, cols = np.nonzero(mask_stack[best])
    centre = (int(np.floor(rows.mean() + 0.5)), int(np.floor(cols.mean() + 0.5)))
    top, left = centre[0] - size // 2, centre[1] - size // 2
    n = len(stack)
    neighbours = [min(max(s, 0), n - 1) for s in (best - 1, best, best + 1)]
    height, width = stack.shape[1:]
    window, valid = _window(stack[neighbours], top, left, size)
    mask_window, _ = _window(mask_stack[best][None], top, left, size)
    lo, hi = (float(v) for v in np.percentile(window[:, valid], percentiles))
    scaled = np.zeros_like(window, dtype=np.float32)
    if hi > lo:
        scaled[:, valid] = (np.clip(window[:, valid], lo, hi) - lo) / (hi - lo)
    clipped = top < 0 or left < 0 or top + size > height or left + size > width
    return Crop(
        image=scaled,
        mask=mask_window[0].astype(np.uint8),
        slice_index=frame.voxel(data.shape, best, 0, 0)[frame.slice_axis],
        slice_axis=frame.slice_axis,
        centre_voxel=frame.voxel(data.shape, best, *centre),
        clipped=bool(clipped),
        mask_truncated=bool(mask_window.sum() < len(rows)),
        intensity_range=(lo, hi),
        pixel_spacing_mm=(float(zooms[frame.row_axis]), float(zooms[frame.col_axis])),
    )


def _squeeze3(data: np.ndarray, *, where: str, patient: str | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{where}: expected a 3D volume, got shape {data.shape}", patient=patient)
    return data


def _largest_slice(areas: np.ndarray) -> int:
    """Index of the largest area; ties go to the slice nearest the mask's centre of mass."""
    candidates = np.flatnonzero(areas == areas.max())
    centre = (np.arange(len(areas)) * areas).sum() / areas.sum()
    return int(candidates[np.argmin(np.abs(candidates - centre))])


def _window(stack: np.ndarray, top: int, left: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """[C, size, size] float64 window of ``stack`` [C, H, W] (zeros outside) and the bool
    [size, size] map of which window pixels lie inside the image."""
    _, height, width = stack.shape
    out = np.zeros((len(stack), size, size), dtype=np.float64)
    valid = np.zeros((size, size), dtype=bool)
    r0, r1 = max(top, 0), min(top + size, height)
    c0, c1 = max(left, 0), min(left + size, width)
    if r1 > r0 and c1 > c0:
        out[:, r0 - top : r1 - top, c0 - left : c1 - left] = stack[:, r0:r1, c0:c1]
        valid[r0 - top : r1 - top, c0 - left : c1 - left] = True
    return out, valid


# --- cache ----------------------------------------------------------------------------------


@dataclass
class LesionCrops:
    """Everything the cache holds about one lesion: ids, label and one crop per view.

    ``crops[view]`` is None when the lesion has no usable image in that view (the reason
    belongs in the transfer QC); ``sources`` maps free-form keys (e.g. ``"sagittal_image"``)
    to a file name or a checksum (:func:`magn_lib.repro.file_sha256`, hex) for provenance.
    """

    lesion_id: str
    patient_id: str
    label: int
    crops: Mapping[str, Crop | None]
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class CropCache:
    """The crop cache of one run, in memory.

    Arrays (N lesions, S crop size; the ``.npz`` keys are the attribute names, with per-view
    entries stored as ``<name>_<view>``):

    - ``views`` [V] str, ``lesion_id`` [N] str, ``patient_id`` [N] str, ``label`` [N] int8 0/1
    - per view: ``image`` float32 [N, 3, S, S], ``mask`` uint8 [N, S, S], ``present`` bool [N]
      (False: the lesion has no crop in this view; its arrays are zeros), ``slice_index`` int32
      [N] (-1 when absent), ``centre_voxel`` int32 [N, 3], ``clipped`` bool [N],
      ``mask_truncated`` bool [N], ``spacing`` float32 [N, 2] (row, column) pixel size in mm
    - ``format`` str (:data:`CACHE_FORMAT`) and ``provenance``: a JSON object with
      ``crop_size``, ``views``, ``n_lesions``, ``magn_version``, ``created_utc``, ``sources``
      ({lesion_id: {key: name or sha256}}) and whatever the writer added.
    """

    views: tuple[str, ...]
    lesion_id: np.ndarray
    patient_id: np.ndarray
    label: np.ndarray
    image: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    slice_index: dict[str, np.ndarray]
    centre_voxel: dict[str, np.ndarray]
    clipped: dict[str, np.ndarray]
    mask_truncated: dict[str, np.ndarray]
    spacing: dict[str, np.ndarray]
    provenance: dict[str, Any]

    _PER_VIEW = (
        "image",
        "mask",
        "present",
        "slice_index",
        "centre_voxel",
        "clipped",
        "mask_truncated",
        "spacing",
    )

    def __len__(self) -> int:
        return len(self.lesion_id)

    def lesions(self) -> pd.DataFrame:
        """The cached lesions: ``lesion_id, patient_id, label`` (label int 0/1)."""
        return pd.DataFrame({"lesion_id": self.lesion_id.astype(str),
                             "patient_id": self.patient_id.astype(str),
                             "label": self.label.astype(int)})

    @property
    def crop_size(self) -> int:
        return int(self.provenance["crop_size"])

    @classmethod
    def from_lesions(
        cls,
        lesions: Sequence[LesionCrops],
        *,
        views: Sequence[str],
        crop_size: int,
        provenance: Mapping[str, Any] | None = None,
    ) -> CropCache:
        """Assemble the cache from per-lesion crops (none is dropped; missing views are marked).

        Raises:
            InputError: duplicate lesion ids, a label other than 0/1, a crop of another size, or
                a crop for a view not in ``views``.
        """
        views = tuple(views)
        if not views or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
            raise ValueError(f"views must be distinct names from {VIEWS}, got {views}")
        n, s = len(lesions), int(crop_size)
        errors: list[InputError] = []
        seen: set[str] = set()
        arrays: dict[str, dict[str, np.ndarray]] = {
            "image": {v: np.zeros((n, 3, s, s), np.float32) for v in views},
            "mask": {v: np.zeros((n, s, s), np.uint8) for v in views},
            "present": {v: np.zeros(n, bool) for v in views},
            "slice_index": {v: np.full(n, -1, np.int32) for v in views},
            "centre_voxel": {v: np.full((n, 3), -1, np.int32) for v in views},
            "clipped": {v: np.zeros(n, bool) for v in views},
            "mask_truncated": {v: np.zeros(n, bool) for v in views},
            "spacing": {v: np.ones((n, 2), np.float32) for v in views},
        }
        for row, lesion in enumerate(lesions):
            if lesion.lesion_id in seen:
                errors.append(
                    InputError(
                        f"lesion {lesion.lesion_id} appears twice", patient=lesion.patient_id
                    )
                )
            seen.add(lesion.lesion_id)
            if lesion.label not in (0, 1):
                errors.append(
                    InputError(
                        f"lesion {lesion.lesion_id}: label must be 0 or 1, got {lesion.label!r}",
                        patient=lesion.patient_id,
                    )
                )
            for view, crop in lesion.crops.items():
                if view not in views:
                    errors.append(
                        InputError(
                            f"lesion {lesion.lesion_id}: crop for view {view!r} not in {views}",
                            patient=lesion.patient_id,
                        )
                    )
                    continue
                if crop is None:
                    continue
                if crop.image.shape != (3, s, s) or crop.mask.shape != (s, s):
                    errors.append(
                        InputError(
                            f"lesion {lesion.lesion_id}, {view} view: crop shape "
                            f"{crop.image.shape} differs from the cache's (3, {s}, {s})",
                            patient=lesion.patient_id,
                        )
                    )
                    continue
                arrays["image"][view][row] = crop.image
                arrays["mask"][view][row] = crop.mask
                arrays["present"][view][row] = True
                arrays["slice_index"][view][row] = crop.slice_index
                arrays["centre_voxel"][view][row] = crop.centre_voxel
                arrays["clipped"][view][row] = crop.clipped
                arrays["mask_truncated"][view][row] = crop.mask_truncated
                arrays["spacing"][view][row] = crop.pixel_spacing_mm
        if errors:
            raise InputError.combine(errors)
        record: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "crop_size": s,
            "views": list(views),
            "n_lesions": n,
            "magn_version": magn_lib.__version__,
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "sources": {x.lesion_id: dict(x.sources) for x in lesions if x.sources},
        }
        record.update(dict(provenance or {}))
        return cls(
            views=views,
            lesion_id=np.array([x.lesion_id for x in lesions], dtype=str).reshape(n),
            patient_id=np.array([x.patient_id for x in lesions], dtype=str).reshape(n),
            label=np.array([x.label for x in lesions], dtype=np.int8).reshape(n),
            provenance=record,
            **arrays,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The flat ``{key: array}`` mapping stored in the ``.npz``."""
        out: dict[str, np.ndarray] = {
            "format": np.array(CACHE_FORMAT),
            "provenance": np.array(json.dumps(self.provenance, sort_keys=True)),
            "views": np.array(self.views, dtype=str),
            "lesion_id": np.asarray(self.lesion_id, dtype=str),
            "patient_id": np.asarray(self.patient_id, dtype=str),
            "label": np.asarray(self.label, dtype=np.int8),
        }
        for name in self._PER_VIEW:
            for view in self.views:
                out[f"{name}_{view}"] = getattr(self, name)[view]
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], *, file: str | None = None) -> CropCache:
        """Rebuild a cache from the mapping written by :meth:`to_arrays` (e.g. an open npz).

        Raises:
            InputError: a key is missing, the format is not :data:`CACHE_FORMAT`, or the arrays
                disagree in length or crop size.
        """
        hint = "rebuild the crop cache with this version of magn"
        fmt = str(arrays["format"]) if "format" in arrays else None
        if fmt != CACHE_FORMAT:
            raise InputError(
                f"not a crop cache of format {CACHE_FORMAT} (format {fmt!r})", file=file, hint=hint
            )
        views = tuple(str(v) for v in np.asarray(arrays["views"]).tolist())
        needed = ["provenance", "lesion_id", "patient_id", "label"] + [
            f"{name}_{view}" for name in cls._PER_VIEW for view in views
        ]
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise InputError(f"crop cache lacks {', '.join(missing)}", file=file, hint=hint)
        per_view = {
            name: {view: np.asarray(arrays[f"{name}_{view}"]) for view in views}
            for name in cls._PER_VIEW
        }
        cache = cls(
            views=views,
            lesion_id=np.asarray(arrays["lesion_id"]),
            patient_id=np.asarray(arrays["patient_id"]),
            label=np.asarray(arrays["label"]),
            provenance=json.loads(str(arrays["provenance"])),
            **per_view,
        )
        n, s = len(cache.lesion_id), cache.crop_size
        shapes_ok = (
            len(cache.patient_id) == n
            and len(cache.label) == n
            and all(
                cache.image[v].shape == (n, 3, s, s)
                and cache.mask[v].shape == (n, s, s)
                and all(len(getattr(cache, k)[v]) == n for k in cls._PER_VIEW)
                for v in views
            )
        )
        if not shapes_ok:
            raise InputError(
                "crop cache arrays disagree in length or crop size", file=file, hint=hint
            )
        return cache


def write_cache(path: str | os.PathLike[str], cache: CropCache) -> Path:
    """Write the cache as one uncompressed ``.npz``, atomically (temporary file + rename).

    Uncompressed because crops of noisy MR intensities compress poorly and slowly; ``.npz``
    because it is one file, needs nothing beyond NumPy, and loads without pickle. Returns the
    path written.
    """
    return save(path, lambda stream: np.savez(stream, **cache.to_arrays()))


def read_cache(path: str | os.PathLike[str]) -> CropCache:
    """Load a cache written by :func:`write_cache` fully into memory (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("crop cache not found", file=path,
                         hint="run notebook 02_annotation_transfer first (magn study --to 02)")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return CropCache.from_arrays(arrays, file=str(path))
