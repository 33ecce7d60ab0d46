"""Tests for magn_lib.crops: lesion-centred 2.5D crops and the crop cache."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from magn_lib.crops import (
    CACHE_FORMAT,
    CropCache,
    LesionCrops,
    crop_lesion,
    display_frame,
    read_cache,
    write_cache,
)
from magn_lib.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# DICOM ImageOrientationPatient (LPS row cosines, column cosines) of standard series
IOP = {
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "axial": ((1, 0, 0), (0, 1, 0)),
}


def dicom_affine(view, spacing=(0.7, 0.8, 3.5), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """RAS+ affine of a series read as data[i = column, j = row, k = slice] (the read_series
    convention): i along the row cosines, j along the column cosines, k along their cross."""
    row, col = (np.array(v, dtype=float) for v in IOP[view])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * spacing[0], col * spacing[1]
    lps[:3, 2] = np.cross(row, col) * spacing[2]
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def volume(shape=(64, 60, 9), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 300 + 800).astype(np.int16)


def lesion(shape, centre, radius) -> np.ndarray:
    """An ellipsoidal blob (radius in voxels per axis), uint8."""
    grid = np.indices(shape).astype(float)
    r = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, radius, strict=True))
    return (r <= 1).astype(np.uint8)


def pair(data, mask, aff):
    return nib.Nifti1Image(data, aff), nib.Nifti1Image(mask, aff)


def centroid(mask2d) -> np.ndarray:
    return np.argwhere(mask2d).mean(axis=0)


@pytest.mark.parametrize("view", ["sagittal", "coronal", "axial"])
def test_standard_dicom_series_are_displayed_as_stored(view):
    """Slice axis = NIfTI axis 2, and each slice is data[:, :, k].T: the stored DICOM frame."""
    data = volume((20, 16, 5))
    frame = display_frame(dicom_affine(view), view)
    assert (frame.slice_axis, frame.row_axis, frame.col_axis) == (2, 1, 0)
    stack = frame.stack(data)
    assert all(np.array_equal(stack[k], data[:, :, k].T) for k in range(5))


@pytest.mark.parametrize(
    "ornt", [[[0, -1], [1, 1], [2, 1]], [[0, 1], [1, -1], [2, -1]], [[1, 1], [0, 1], [2, -1]]]
)
def test_other_storage_orders_give_the_same_crop(ornt):
    data = volume()
    mask = lesion(data.shape, (30, 25, 4), (6, 5, 1.5))
    img, msk = pair(data, mask, dicom_affine("sagittal"))
    reference = crop_lesion(img, msk, view="sagittal", size=32)
    ornt = np.array(ornt)
    other = crop_lesion(img.as_reoriented(ornt), msk.as_reoriented(ornt), view="sagittal", size=32)
    assert np.array_equal(other.image, reference.image)
    assert np.array_equal(other.mask, reference.mask)
    # the same source voxel, named in the other storage order
    moved = nib.affines.apply_affine(img.as_reoriented(ornt).affine, other.centre_voxel)
    assert np.allclose(moved, nib.affines.apply_affine(img.affine, reference.centre_voxel))


@pytest.mark.parametrize("size", [32, 33])
def test_crop_is_centred_with_contract_shapes(size):
    data = volume()
    mask = lesion(data.shape, (27.3, 33.8, 5), (7, 4, 2.5))
    img, msk = pair(data, mask, dicom_affine("axial"))
    crop = crop_lesion(img, msk, view="axial", size=size)
    assert crop.image.shape == (3, size, size) and crop.image.dtype == np.float32
    assert crop.mask.shape == (size, size) and crop.mask.dtype == np.uint8
    assert set(np.unique(crop.mask)) == {0, 1}
    assert 0.0 <= crop.image.min() and crop.image.max() <= 1.0
    assert not crop.clipped and not crop.mask_truncated
    assert crop.slice_index == 5 and crop.slice_axis == 2
    geometric_centre = np.array([(size - 1) / 2, (size - 1) / 2])
    assert np.all(np.abs(centroid(crop.mask) - geometric_centre) <= 1.0)
    # the crop's middle channel is the source slice, transposed for display, around the centre
    i, j, k = crop.centre_voxel
    assert k == 5
    source = data[i - size // 2 : i - size // 2 + size, j - size // 2 : j - size // 2 + size, 5]
    lo, hi = crop.intensity_range
    expected = (np.clip(source.T.astype(float), lo, hi) - lo) / (hi - lo)
    assert np.allclose(crop.image[1], expected, atol=1e-6)
    # the mask crop is the largest slice's mask at the same place
    source_mask = mask[
        i - size // 2 : i - size // 2 + size, j - size // 2 : j - size // 2 + size, 5
    ]
    assert np.array_equal(crop.mask, source_mask.T)


def test_border_padding_keeps_the_lesion_centred():
    data = volume()
    mask = lesion(data.shape, (2, 3, 4), (3, 3, 1))  # in the image's corner
    img, msk = pair(data, mask, dicom_affine("axial"))
    size = 24
    crop = crop_lesion(img, msk, view="axial", size=size)
    assert crop.clipped
    # rows are j (display down), columns are i: the window starts 12 px before the centre
    i, j, _ = crop.centre_voxel
    pad_rows, pad_cols = size // 2 - j, size // 2 - i
    assert pad_rows > 0 and pad_cols > 0
    assert np.all(crop.image[:, :pad_rows, :] == 0) and np.all(crop.image[:, :, :pad_cols] == 0)
    assert np.all(crop.mask[:pad_rows] == 0) and np.all(crop.mask[:, :pad_cols] == 0)
    inside = crop.image[:, pad_rows:, pad_cols:]
    assert inside.min() == 0.0 and inside.max() == 1.0  # the percentiles ignore the padding
    assert np.all(np.abs(centroid(crop.mask) - (size // 2)) <= 1.0)


def test_percentile_clipping_and_scaling_inside_the_crop():
    rng = np.random.default_rng(3)
    data = rng.uniform(100, 200, size=(40, 40, 5)).astype(np.float32)
    data[:, :, :] += np.arange(40)[:, None, None] * 10  # a gradient: values outside the crop differ
    data[20, 20, 2] = 1e6  # one hot pixel inside the crop
    mask = lesion(data.shape, (20, 20, 2), (3, 3, 0.5))
    img, msk = pair(data, mask, dicom_affine("axial"))
    crop = crop_lesion(img, msk, view="axial", size=16)
    window = data[12:28, 12:28, 1:4].transpose(2, 1, 0)  # channels = slices 1, 2, 3; rows = j
    lo, hi = np.percentile(window, [0.5, 99.5])
    assert crop.intensity_range == pytest.approx((lo, hi))
    assert hi < 1e6  # the hot pixel is clipped, not used for scaling
    assert np.allclose(crop.image, (np.clip(window, lo, hi) - lo) / (hi - lo), atol=1e-6)
    assert crop.image.min() == 0.0 and crop.image.max() == 1.0
    # a constant image gives zeros instead of dividing by zero
    flat = crop_lesion(*pair(np.full_like(data, 7.0), mask, img.affine), view="axial", size=16)
    assert not flat.image.any()


def test_neighbours_beyond_the_volume_edge_replicate_the_edge_slice():
    data = volume((30, 30, 6))
    mask = np.zeros(data.shape, np.uint8)
    mask[10:15, 10:15, 0] = 1  # largest (only) section on the first slice
    mask[11:13, 11:13, 1] = 1
    img, msk = pair(data, mask, dicom_affine("axial"))
    crop = crop_lesion(img, msk, view="axial", size=12)
    assert crop.slice_index == 0
    assert np.array_equal(crop.image[0], crop.image[1])
    assert not np.array_equal(crop.image[1], crop.image[2])
    mask[:, :, 0], mask[:, :, -1] = 0, mask[:, :, 0]
    mask[10:15, 10:15, -1] = 1
    last = crop_lesion(*pair(data, mask, img.affine), view="axial", size=12)
    assert last.slice_index == 5
    assert np.array_equal(last.image[2], last.image[1])


def test_largest_slice_and_truncation():
    data = volume((40, 40, 7))
    mask = np.zeros(data.shape, np.uint8)
    mask[5:10, 5:10, 2] = 1
    mask[5:30, 5:30, 4] = 1  # largest
    crop = crop_lesion(*pair(data, mask, dicom_affine("coronal")), view="coronal", size=16)
    assert crop.slice_index == 4 and crop.mask_truncated
    assert crop.mask.all()


def test_bad_masks_raise():
    data = volume((20, 20, 4))
    aff = dicom_affine("axial")
    with pytest.raises(InputError, match="lesion P001-L1, axial view: the lesion mask is empty"):
        crop_lesion(
            *pair(data, np.zeros(data.shape, np.uint8), aff),
            view="axial",
            size=8,
            lesion_id="P001-L1",
            patient_id="P001",
        )
    shifted = aff.copy()
    shifted[0, 3] += 5
    mask = lesion(data.shape, (10, 10, 2), (2, 2, 1))
    with pytest.raises(InputError, match="not on the image's grid"):
        crop_lesion(
            nib.Nifti1Image(data, aff), nib.Nifti1Image(mask, shifted), view="axial", size=8
        )


# --- cache ----------------------------------------------------------------------------------


def make_lesions(size=16):
    data = volume((40, 40, 7))
    out = []
    for n, (view_missing, label) in enumerate([(None, 1), ("coronal", 0), (None, 0)]):
        mask = lesion(data.shape, (15 + n * 3, 20, 3), (4, 3, 1.5))
        crops = {}
        for view in ("sagittal", "coronal", "axial"):
            if view == view_missing:
                crops[view] = None
                continue
            img, msk = pair(data, mask, dicom_affine(view))
            crops[view] = crop_lesion(img, msk, view=view, size=size)
        out.append(
            LesionCrops(
                lesion_id=f"P00{n + 1}-L1",
                patient_id=f"P00{n + 1}",
                label=label,
                crops=crops,
                sources={"sagittal_mask": f"{n:064x}"},
            )
        )
    return out


def test_cache_round_trip(tmp_path):
    lesions = make_lesions()
    views = ("sagittal", "coronal", "axial")
    cache = CropCache.from_lesions(lesions, views=views, crop_size=16, provenance={"profile": "x"})
    path = write_cache(tmp_path / "run" / "crops.npz", cache)
    assert [p.name for p in path.parent.iterdir()] == ["crops.npz"]  # no temporary left behind
    back = read_cache(path)
    assert back.views == views and len(back) == 3 and back.crop_size == 16
    assert back.lesion_id.tolist() == ["P001-L1", "P002-L1", "P003-L1"]
    assert back.patient_id.tolist() == ["P001", "P002", "P003"]
    assert back.label.tolist() == [1, 0, 0]
    assert back.lesions().to_dict("list") == {
        "lesion_id": ["P001-L1", "P002-L1", "P003-L1"], "patient_id": ["P001", "P002", "P003"],
        "label": [1, 0, 0]}
    assert back.present["coronal"].tolist() == [True, False, True]
    assert back.present["sagittal"].all() and back.present["axial"].all()
    assert not back.image["coronal"][1].any() and back.slice_index["coronal"][1] == -1
    for row, x in enumerate(lesions):
        for view, crop in x.crops.items():
            if crop is None:
                continue
            assert np.array_equal(back.image[view][row], crop.image)
            assert np.array_equal(back.mask[view][row], crop.mask)
            assert back.slice_index[view][row] == crop.slice_index
            assert tuple(back.centre_voxel[view][row]) == crop.centre_voxel
            assert back.clipped[view][row] == crop.clipped
            assert np.allclose(back.spacing[view][row], crop.pixel_spacing_mm)
    assert back.image["axial"].dtype == np.float32 and back.mask["axial"].dtype == np.uint8
    prov = back.provenance
    assert prov["crop_size"] == 16 and prov["views"] == list(views) and prov["profile"] == "x"
    assert prov["format"] == CACHE_FORMAT and prov["magn_version"] and prov["created_utc"]
    assert prov["sources"]["P002-L1"] == {"sagittal_mask": f"{1:064x}"}
    # a plain NumPy reader without pickle sees the documented keys
    with np.load(path, allow_pickle=False) as npz:
        assert {"lesion_id", "image_sagittal", "mask_axial", "present_coronal"} <= set(npz.files)
        assert json.loads(str(npz["provenance"]))["n_lesions"] == 3
    # the flat arrays rebuild the same cache
    again = CropCache.from_arrays(back.to_arrays())
    assert np.array_equal(again.image["sagittal"], back.image["sagittal"])


def test_cache_rejects_bad_records(tmp_path):
    lesions = make_lesions()
    views = ("sagittal", "coronal", "axial")
    duplicate = [*lesions, lesions[0]]
    with pytest.raises(InputError, match="P001-L1 appears twice"):
        CropCache.from_lesions(duplicate, views=views, crop_size=16)
    lesions[1].label = 2
    with pytest.raises(InputError, match="label must be 0 or 1"):
        CropCache.from_lesions(lesions, views=views, crop_size=16)
    lesions[1].label = 0
    with pytest.raises(InputError, match="differs from the cache's"):
        CropCache.from_lesions(lesions, views=views, crop_size=20)
    with pytest.raises(InputError, match="not in"):
        CropCache.from_lesions(lesions, views=("sagittal", "axial"), crop_size=16)
    arrays = CropCache.from_lesions(lesions, views=views, crop_size=16).to_arrays()
    del arrays["mask_axial"]
    with pytest.raises(InputError, match="lacks mask_axial"):
        CropCache.from_arrays(arrays)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not a crop cache"):
        read_cache(tmp_path / "other.npz")
    with pytest.raises(InputError, match="not found"):
        read_cache(tmp_path / "missing.npz")


@pytest.mark.parametrize("view", ["sagittal", "coronal", "axial"])
def test_pixel_spacing_follows_the_display_axes(view):
    shape = (40, 30, 7)
    aff = dicom_affine(view, spacing=(0.6, 0.9, 4.0))
    crop = crop_lesion(*pair(volume(shape), lesion(shape, (20, 15, 3), (5, 4, 2)), aff),
                       view=view, size=16)
    # columns of the display run along the DICOM row direction (voxel i, 0.6 mm) and rows
    # along the column direction (voxel j, 0.9 mm) for standard series
    assert crop.pixel_spacing_mm == pytest.approx((0.9, 0.6))
