"""Annotation transfer: time per lesion of ``transfer_mask`` vs nibabel's ``resample_from_to``.

    python -m benchmarks transfer

Both produce the thresholded mask on the target grid from a mask held in memory (no file
reading is timed). The reference is ``nibabel.processing.resample_from_to(mask, target,
order=1)`` on the uint8 mask, whose integer output rounds the interpolated values, i.e.
thresholds at 0.5 in the same call: the cheapest way to get the same mask with nibabel.

Grids: the real sct-spine acquisitions (sagittal ``t2`` mask onto the axial ``t2s`` and ``mt1``
grids; the mask is a whole spinal cord, so the bounding-box restriction helps little) when the
reference data are present, and a synthetic pair of clinical size: a sagittal stack of
256 x 256 x 15 at 0.7 x 0.7 x 3.5 mm holding one 20 mm lesion, onto an axial stack of
256 x 256 x 20 at 0.7 x 0.7 x 4 mm tilted 15 degrees (and onto a coronal stack).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from benchmarks.common import Result, best_time
from magn_lib.transfer import dice, transfer_mask
from tests.helpers import reference_data_root


def _in_memory(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _synthetic() -> tuple[nib.Nifti1Image, dict[str, tuple[tuple[int, int, int], np.ndarray]]]:
    sag = np.eye(4)
    sag[:3, :3] = np.array([(0, -0.7, 0), (0, 0, -0.7), (3.5, 0, 0)]).T  # i post., j inf., k R
    sag[:3, 3] = (-24.5, 89.6, 89.6)  # centred on the world origin
    shape = (256, 256, 15)
    ijk = np.indices(shape).reshape(3, -1).T
    world = nib.affines.apply_affine(sag, ijk)
    centre = np.array([3.0, -10.0, 12.0])
    lesion = (np.linalg.norm((world - centre) / [10.0, 9.0, 11.0], axis=1) <= 1).reshape(shape)
    mask = nib.Nifti1Image(lesion.astype(np.uint8), sag)

    def grid(
        linear: np.ndarray, n: tuple[int, int, int]
    ) -> tuple[tuple[int, int, int], np.ndarray]:
        aff = np.eye(4)
        aff[:3, :3] = linear
        aff[:3, 3] = -linear @ (np.array(n) - 1) / 2  # centred on the world origin
        return n, aff

    axial = _rotation((1, 0, 0), 15) @ np.array([(-0.7, 0, 0), (0, -0.7, 0), (0, 0, 4.0)]).T
    coronal = np.array([(-0.7, 0, 0), (0, 0, -0.7), (0, -4.0, 0)]).T
    return mask, {
        "oblique axial": grid(axial, (256, 256, 20)),
        "coronal": grid(coronal, (256, 256, 15)),
    }


def _compare(name: str, mask: nib.Nifti1Image, target) -> Result:
    ours = best_time(lambda: transfer_mask(mask, target), repeat=7, number=5)
    reference = best_time(lambda: resample_from_to(mask, target, order=1), repeat=7, number=5)
    result = np.asanyarray(transfer_mask(mask, target).dataobj)
    rounded = np.asanyarray(resample_from_to(mask, target, order=1).dataobj)
    as_float = nib.Nifti1Image(np.asanyarray(mask.dataobj).astype(np.float32), mask.affine)
    thresholded = resample_from_to(as_float, target, order=1).get_fdata() >= 0.5
    return Result(
        name=f"transfer_mask per lesion, {name}",
        value=ours,
        reference="nibabel resample_from_to(order=1)",
        reference_value=reference,
        unit="s",
        target=1.0,
        note=(
            f"(Dice vs nibabel on the float mask, >= 0.5: {dice(result, thresholded):.4f}; "
            f"vs its uint8 rounding, which sends ties at 0.5 to 0: {dice(result, rounded):.4f})"
        ),
    )


def run() -> list[Result]:
    results = []
    reference = reference_data_root()
    root = None if reference is None else reference / "sct-spine"
    if root is not None and (root / "t2" / "t2_seg-manual.nii.gz").is_file():
        mask = _in_memory(root / "t2" / "t2_seg-manual.nii.gz")
        for name, target in (("t2s", "t2s/t2s.nii.gz"), ("mt1", "mt/mt1.nii.gz")):
            grid = nib.load(root / target)
            results.append(_compare(f"sct-spine t2 -> {name} {grid.shape}", mask, grid))
    else:
        print("  (sct-spine reference data not found; set MAGN_REFERENCE_DATA)")
    mask, grids = _synthetic()
    for name, target in grids.items():
        results.append(
            _compare(f"synthetic sagittal {mask.shape} -> {name} {target[0]}", mask, target)
        )
    return results
