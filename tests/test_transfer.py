"""Tests for magn_lib.transfer: mask transfer through world coordinates and the QC measures."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage
from scipy.spatial import cKDTree

from magn_lib.errors import InputError
from magn_lib.transfer import (
    dice,
    mask_centroid_world,
    mask_volume_mm3,
    surface_distances,
    transfer_mask,
)

# Grids in the style of DICOM-derived volumes: 3x3 RAS+ matrices whose columns are the steps
# (mm) of voxel axes i, j, k.
SAGITTAL = np.array([(0, -0.7, 0), (0, 0, -0.7), (3.5, 0, 0)]).T  # i post., j inf., k right
AXIAL = np.array([(-0.7, 0, 0), (0, -0.7, 0), (0, 0, 5.0)]).T  # i left, j post., k sup.
CORONAL = np.array([(-0.7, 0, 0), (0, 0, -0.7), (0, 4.0, 0)]).T  # i left, j inf., k ant.


def affine(linear, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = origin
    return a


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def sphere(shape, aff, centre, radius) -> np.ndarray:
    """uint8 mask of the voxel centres within ``radius`` mm of ``centre`` (world mm)."""
    ijk = np.indices(shape).reshape(3, -1).T
    world = nib.affines.apply_affine(aff, ijk)
    return (np.linalg.norm(world - centre, axis=1) <= radius).reshape(shape).astype(np.uint8)


def blob(shape, seed) -> np.ndarray:
    """A few smooth random lumps, uint8 0/1."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return (smooth > np.percentile(smooth, 85)).astype(np.uint8)


def image(data, aff) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data), aff)


# --- transfer -------------------------------------------------------------------------------


def test_identity_returns_the_mask_with_the_target_header():
    aff = affine(rotation((1, 2, 3), 17) @ np.diag([0.7, 0.9, 3.5]), (10.0, -20.0, 5.0))
    mask = image(blob((20, 18, 9), seed=1), aff)
    target = nib.Nifti1Image(np.zeros((20, 18, 9), np.int16), aff)
    target.header["descrip"] = b"scanner text"
    out = transfer_mask(mask, target)
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(out.dataobj), mask.get_fdata().astype(np.uint8))
    assert np.allclose(out.affine, aff)
    assert np.allclose(out.get_sform(), aff) and np.allclose(out.get_qform(), aff, atol=1e-6)
    assert out.header["descrip"].item() == b""
    soft = transfer_mask(mask, target, soft=True)
    assert soft.get_data_dtype() == np.float32
    assert np.allclose(soft.get_fdata(), mask.get_fdata(), atol=1e-6)


def test_hand_built_90_degree_rotation():
    # Target axis i runs along the mask's +y, target j along the mask's -x, from the mask's
    # last x voxel: world (x, y, z) = (n0 - 1 - j, i, k), so out[i, j, k] = mask[n0 - 1 - j, i, k].
    data = blob((12, 10, 6), seed=2)
    mask = image(data, np.eye(4))
    target = ((10, 12, 6), affine(np.array([(0, 1, 0), (-1, 0, 0), (0, 0, 1)]).T, (11, 0, 0)))
    out = np.asanyarray(transfer_mask(mask, target).dataobj)
    assert np.array_equal(out, data[::-1].transpose(1, 0, 2))


@pytest.mark.parametrize(
    "ornt",
    [
        [[1, 1], [0, -1], [2, 1]],  # 90 degrees about the slice axis
        [[2, -1], [1, 1], [0, 1]],  # 90 degrees about the second axis
        [[0, -1], [1, 1], [2, 1]],  # one flipped axis
        [[0, -1], [1, -1], [2, -1]],  # all flipped
        [[2, 1], [0, 1], [1, -1]],  # permuted and flipped
    ],
)
def test_reoriented_grids_match_nibabel(ornt):
    """Same voxel centres, permuted/flipped axes: the transfer is an exact reindexing."""
    aff = affine(SAGITTAL, (5.0, 40.0, -12.0))
    mask = image(blob((16, 14, 7), seed=3), aff)
    expected = mask.as_reoriented(np.array(ornt))
    out = transfer_mask(mask, expected)
    assert np.allclose(out.affine, expected.affine)
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(expected.dataobj))


def test_flipped_mask_storage_gives_the_same_transfer():
    aff = affine(SAGITTAL, (0.0, 20.0, 30.0))
    mask = image(blob((30, 30, 9), seed=4), aff)
    flipped = mask.as_reoriented(np.array([[0, -1], [1, 1], [2, -1]]))  # same object, other storage
    target = ((40, 40, 8), affine(AXIAL, (12.0, 12.0, 0.0)))
    a = transfer_mask(mask, target, soft=True).get_fdata()
    b = transfer_mask(flipped, target, soft=True).get_fdata()
    assert a.any()
    assert np.allclose(a, b, atol=1e-5)


def test_oblique_soft_map_equals_scipy_zero_extended_resampling():
    """On an oblique target the soft map is nibabel/SciPy's order-1 resampling of the
    zero-extended mask (mode='grid-constant'), computed independently on the whole grid."""
    source_aff = affine(SAGITTAL, (-10.0, 25.0, 20.0))
    data = blob((40, 40, 8), seed=5)
    data[:, :, -1] |= data[:, :, -2]  # foreground on the edge slice exercises the zero extension
    mask = image(data, source_aff)
    cols = rotation((1, 0.3, 0.2), 23) @ np.diag([0.6, 0.8, 4.0])
    target = ((50, 45, 12), affine(cols, (5.0, -5.0, -15.0)))
    ours = transfer_mask(mask, target, soft=True).get_fdata()
    float_mask = image(data.astype(np.float32), source_aff)
    reference = resample_from_to(float_mask, target, order=1, mode="grid-constant").get_fdata()
    assert ours.sum() > 100
    assert np.allclose(ours, reference, atol=1e-5)
    thresholded = np.asanyarray(transfer_mask(mask, target, threshold=0.4).dataobj)
    assert np.array_equal(thresholded, (ours >= 0.4).astype(np.uint8))


def test_oblique_axial_sphere_matches_the_analytic_sphere():
    centre, radius = np.array([1.0, 2.0, 3.0]), 9.0
    sag_aff = affine(SAGITTAL, (-14.0, 35.0, 35.0))
    mask = image(sphere((100, 100, 9), sag_aff, centre, radius), sag_aff)
    # an oblique axial stack tilted 20 degrees about the left-right axis (along a disc)
    target_aff = affine(rotation((1, 0, 0), 20) @ AXIAL, (30.0, 30.0, -25.0))
    shape = (90, 90, 12)
    out = transfer_mask(mask, (shape, target_aff))
    truth = sphere(shape, target_aff, centre, radius)
    assert dice(np.asanyarray(out.dataobj), truth) > 0.9
    assert np.linalg.norm(mask_centroid_world(out) - centre) < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sphere_volume_and_centroid_survive_sagittal_axial_coronal(seed):
    """Tolerances: sampling a sphere (r = 10 mm) with slices h mm thick is the midpoint rule
    for its volume: error <= h^2 / (8 r^2) (3 % at h = 5 mm) plus at most the polar caps
    missed or gained, pi (h/2)^2 (3r - h/2) / 3 (4 % of the volume at h = 5 mm). One thick-slice
    step is therefore held to 8 % of the true volume and two steps to 15 %; the asymmetric cap
    shifts the centroid by at most ~cap fraction x r = 0.45 mm per step, held to 0.6 / 1.0 mm."""
    rng = np.random.default_rng(seed)
    centre, radius = np.array([2.0, -3.0, 5.0]) + rng.uniform(-2, 2, 3), 10.0
    true_volume = 4 / 3 * np.pi * radius**3
    sag_aff = affine(SAGITTAL, (-20.0, 30.0, 40.0))
    sag = image(sphere((96, 96, 15), sag_aff, centre, radius), sag_aff)
    axial = transfer_mask(sag, ((96, 96, 10), affine(AXIAL, (30.0, 30.0, -20.0))))
    coronal_grid = ((96, 96, 12), affine(CORONAL, (30.0, -20.0, 40.0)))
    coronal_via_axial = transfer_mask(axial, coronal_grid)
    coronal = transfer_mask(sag, coronal_grid)
    for mask, steps in ((sag, 1), (axial, 1), (coronal, 1), (coronal_via_axial, 2)):
        assert mask_volume_mm3(mask) == pytest.approx(true_volume, rel=0.08 if steps == 1 else 0.15)
        shift = np.linalg.norm(mask_centroid_world(mask) - centre)
        assert shift < (0.6 if steps == 1 else 1.0)


def test_shifted_origin_lands_shifted():
    aff = affine(AXIAL, (20.0, 20.0, -10.0))
    data = np.zeros((40, 40, 10), np.uint8)
    data[10:18, 12:20, 3:6] = 1
    # the mask's grid moved by (+3, -2, +1) voxels along its own axes
    shifted_aff = aff.copy()
    shifted_aff[:3, 3] += aff[:3, :3] @ np.array([3, -2, 1])
    out = np.asanyarray(transfer_mask(image(data, shifted_aff), image(data, aff)).dataobj)
    expected = np.zeros_like(data)
    expected[13:21, 10:18, 4:7] = 1
    assert np.array_equal(out, expected)
    # A shift by a fraction of a voxel: linear interpolation keeps mass and first moment, so the
    # soft map's weighted centroid moves by exactly the shift; thresholding on this grid can
    # move the mask's centroid only in whole voxels, so it is within half a voxel per axis.
    offset = np.array([1.2, -0.9, 2.0])  # mm, world; this grid's axes are the world axes
    moved_aff = aff.copy()
    moved_aff[:3, 3] += offset
    soft = transfer_mask(image(data, moved_aff), image(data, aff), soft=True).get_fdata()
    weighted = (np.argwhere(soft > 0) * soft[soft > 0][:, None]).sum(axis=0) / soft.sum()
    soft_shift = nib.affines.apply_affine(aff, weighted) - mask_centroid_world(image(data, aff))
    assert np.allclose(soft_shift, offset, atol=1e-6)
    moved = transfer_mask(image(data, moved_aff), image(data, aff))
    centroid_shift = mask_centroid_world(moved) - mask_centroid_world(image(data, aff))
    assert np.all(np.abs(centroid_shift - offset) <= np.array([0.7, 0.7, 5.0]) / 2 + 1e-9)


def test_inputs_are_not_modified():
    aff = affine(SAGITTAL, (0.0, 10.0, 10.0))
    data = blob((20, 20, 6), seed=6) * 255
    mask = image(data, aff)
    target = image(np.zeros((20, 20, 5), np.float32), affine(AXIAL, (5.0, 5.0, -5.0)))
    before = (data.copy(), mask.affine.copy(), target.affine.copy(), target.get_fdata().copy())
    transfer_mask(mask, target)
    transfer_mask(mask, target, soft=True)
    assert np.array_equal(np.asanyarray(mask.dataobj), before[0])
    assert np.array_equal(mask.affine, before[1]) and np.array_equal(target.affine, before[2])
    assert np.array_equal(target.get_fdata(), before[3])


def test_labels_and_binary_encodings():
    aff = np.eye(4)
    data = np.zeros((10, 10, 10), np.int16)
    data[1:4, 1:4, 1:4] = 1
    data[6:9, 6:9, 6:9] = 2
    with pytest.raises(InputError, match="2 different nonzero values.*label="):
        transfer_mask(image(data, aff), image(data, aff))
    two = np.asanyarray(transfer_mask(image(data, aff), image(data, aff), label=2).dataobj)
    assert np.array_equal(two, (data == 2).astype(np.uint8))
    with pytest.raises(InputError, match="label 3 does not occur"):
        transfer_mask(image(data, aff), image(data, aff), label=3)
    as_255 = (data > 0).astype(np.uint8) * 255
    out = np.asanyarray(transfer_mask(image(as_255, aff), image(data, aff)).dataobj)
    assert np.array_equal(out, (data > 0).astype(np.uint8))


def test_bad_inputs_raise():
    aff = np.eye(4)
    good = np.zeros((5, 5, 5), np.float32)
    bad = good.copy()
    bad[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        transfer_mask(image(bad, aff), image(good, aff))
    with pytest.raises(InputError, match="3D mask"):
        transfer_mask(image(np.zeros((5, 5, 5, 2), np.uint8), aff), image(good, aff))
    with pytest.raises(InputError, match="singular"):
        transfer_mask(image(good, aff), ((5, 5, 5), np.diag([1.0, 0.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="threshold"):
        transfer_mask(image(good, aff), image(good, aff), threshold=0.0)
    # a trailing singleton dimension is fine
    four_d = np.zeros((5, 5, 5, 1), np.uint8)
    four_d[2, 2, 2, 0] = 1
    assert transfer_mask(image(four_d, aff), image(good, aff)).get_fdata()[2, 2, 2] == 1


def test_empty_or_out_of_view_mask_gives_zeros():
    aff = np.eye(4)
    target = image(np.zeros((8, 8, 8), np.uint8), aff)
    assert not transfer_mask(image(np.zeros((6, 6, 6), np.uint8), aff), target).get_fdata().any()
    far = aff.copy()
    far[:3, 3] = 100.0
    data = np.ones((6, 6, 6), np.uint8)
    assert not transfer_mask(image(data, far), target).get_fdata().any()


# --- QC measures ----------------------------------------------------------------------------


def test_volume_and_centroid_by_hand():
    aff = affine(rotation((0, 0, 1), 30) @ np.diag([0.5, 2.0, 3.0]), (1.0, 2.0, 3.0))
    data = np.zeros((6, 6, 6), np.uint8)
    data[1, 2, 3] = data[3, 2, 3] = 1
    img = image(data, aff)
    assert mask_volume_mm3(img) == pytest.approx(2 * 0.5 * 2.0 * 3.0)
    expected = aff[:3, :3] @ np.array([2.0, 2.0, 3.0]) + aff[:3, 3]
    assert np.allclose(mask_centroid_world(img), expected)
    assert np.isnan(mask_centroid_world(image(np.zeros_like(data), aff))).all()


def test_dice_by_hand_and_grid_checks():
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros((4, 4, 4), np.uint8)
    a[0, 0, :3] = 1
    b[0, 0, 1:] = 1
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert np.isnan(dice(np.zeros_like(a), np.zeros_like(b)))
    with pytest.raises(InputError, match="differ in shape"):
        dice(a, b[:3])
    moved = np.eye(4)
    moved[0, 3] = 1.0
    with pytest.raises(InputError, match="not the same grid"):
        dice(image(a, np.eye(4)), image(b, moved))


def test_surface_distances_match_brute_force():
    """EDT-based distances equal nearest-neighbour distances between boundary voxel centres."""
    spacing = np.array([0.7, 0.9, 3.5])
    a, b = blob((24, 22, 8), seed=7), blob((24, 22, 8), seed=8)
    aff = np.diag([*spacing, 1.0])
    got = surface_distances(image(a, aff), image(b, aff))

    def edge(m):
        m = m.astype(bool)
        return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1))

    pa, pb = np.argwhere(edge(a)) * spacing, np.argwhere(edge(b)) * spacing
    d_ab, d_ba = cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]
    pooled = np.concatenate([d_ab, d_ba])
    assert got.average_mm == pytest.approx(pooled.mean())
    assert got.max_mm == pytest.approx(pooled.max())
    assert got.hd95_mm == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    same = surface_distances(a, a, spacing=spacing)
    assert same.average_mm == same.max_mm == 0.0


def test_surface_distances_of_concentric_spheres():
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    inner = sphere((60, 60, 60), aff, (15.0, 15.0, 15.0), 6.0)
    outer = sphere((60, 60, 60), aff, (15.0, 15.0, 15.0), 9.0)
    got = surface_distances(image(inner, aff), image(outer, aff))
    # 3 mm apart everywhere, up to half a voxel diagonal of boundary-voxel placement
    assert got.average_mm == pytest.approx(3.0, abs=0.45)
    assert got.hd95_mm == pytest.approx(3.0, abs=0.45)
    empty = surface_distances(np.zeros((4, 4)), np.eye(4))
    assert np.isinf(empty.max_mm)


# --- real geometry --------------------------------------------------------------------------


def test_sct_spine_sagittal_mask_onto_axial_grid(capsys, reference_data):
    root = reference_data / "sct-spine"
    if not (root / "t2" / "t2_seg-manual.nii.gz").is_file():
        pytest.skip(f"reference data sct-spine not found at {root} (set MAGN_REFERENCE_DATA)")
    mask = nib.load(root / "t2" / "t2_seg-manual.nii.gz")
    target = nib.load(root / "t2s" / "t2s.nii.gz")
    drawn = nib.load(root / "t2s" / "t2s_seg.nii.gz")
    ours = transfer_mask(mask, target)
    float_mask = image(np.asanyarray(mask.dataobj).astype(np.float32), mask.affine)
    reference = resample_from_to(float_mask, target, order=1).get_fdata() >= 0.5
    agreement = dice(np.asanyarray(ours.dataobj), reference)
    assert agreement >= 0.99
    # The sagittal stack covers only part of the axial stack's extent: compare the drawn mask
    # on all slices and on the slices whose centre lies inside the sagittal field of view.
    centres = nib.affines.apply_affine(target.affine, [[24, 27, k] for k in range(target.shape[2])])
    inside = nib.affines.apply_affine(np.linalg.inv(mask.affine), centres)
    covered = np.all((inside > -0.5) & (inside < np.array(mask.shape) - 0.5), axis=1)
    ours_data, drawn_data = np.asanyarray(ours.dataobj), np.asanyarray(drawn.dataobj)
    dice_all = dice(ours_data, drawn_data)
    dice_covered = dice(ours_data[..., covered], drawn_data[..., covered])
    distance = surface_distances(
        image(ours_data[..., covered], target.affine),
        image(drawn_data[..., covered], target.affine),
    )
    with capsys.disabled():
        print(
            f"\nsct-spine t2 -> t2s: Dice vs nibabel resample_from_to {agreement:.4f}; vs the "
            f"hand-drawn t2s_seg: {dice_all:.3f} on all {target.shape[2]} slices, "
            f"{dice_covered:.3f} on the {covered.sum()} slices inside the sagittal field of view "
            f"(ASSD {distance.average_mm:.2f} mm, HD95 {distance.hd95_mm:.2f} mm)"
        )
    assert dice_covered > 0.5  # two different raters on two acquisitions: loose sanity bound
