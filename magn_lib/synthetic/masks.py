"""Lesion masks: label images from rendered occupancy, NIfTI writing in the convention of a
correct DICOM-to-NIfTI conversion (and of ITK-SNAP), and caliper size measurement."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial import ConvexHull, QhullError

from magn_lib.files import atomic_path
from magn_lib.synthetic.geometry import SliceStack

__all__ = ["label_image", "max_diameter_cm", "save_mask"]


def label_image(occupancy: np.ndarray) -> np.ndarray:
    """``[lesion, slice, row, col]`` occupancy -> uint8 labels ``[slice, row, col]``: value
    ``n`` where lesion ``n`` (1-based) covers at least half the voxel (later lesions win)."""
    labels = np.zeros(occupancy.shape[1:], np.uint8)
    for n in range(occupancy.shape[0]):
        labels[occupancy[n] >= 0.5] = n + 1
    return labels


def save_mask(path: Path, labels: np.ndarray, g: SliceStack) -> None:
    """Write ``labels [slice, row, col]`` as an ITK-SNAP-like NIfTI: data ``[i=col, j=row, k]``,
    qform = sform = the stack's voxel -> world RAS+ affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8)
    img = nib.Nifti1Image(data, g.affine_ras())
    img.header.set_qform(g.affine_ras(), code=1)
    img.header.set_sform(g.affine_ras(), code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def max_diameter_cm(mask: np.ndarray, g: SliceStack) -> float:
    """Largest in-plane diameter (cm) over the sagittal slices of a boolean ``[slice, row, col]``
    mask: pixel-centre distance plus one pixel, as a caliper on the image measures it."""
    best = 0.0
    for k in range(mask.shape[0]):
        rr, cc = np.nonzero(mask[k])
        if rr.size == 0:
            continue
        pts = np.c_[rr * g.pixel[0], cc * g.pixel[1]]
        if len(pts) > 3:
            try:
                pts = pts[ConvexHull(pts).vertices]
            except QhullError:
                pass
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d) + g.pixel[0])
    return best / 10.0
