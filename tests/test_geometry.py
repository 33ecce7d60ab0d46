"""magn_lib.geometry on hand-computed grids, and against SimpleITK's image geometry."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from magn_lib.geometry import (
    LPS_TO_RAS,
    Geometry,
    lps_to_ras,
    nearest_plane,
    slice_normal,
    sort_slices,
)


def _affine(axes, origin) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.asarray(axes, dtype=float)
    out[:3, 3] = origin
    return out


def test_identity_is_ras_aligned():
    g = Geometry(np.eye(4))
    assert g.frame == "RAS" and g.spacing == (1.0, 1.0, 1.0) and g.origin == (0.0, 0.0, 0.0)
    assert g.orientation == ("R", "A", "S")
    np.testing.assert_array_equal(g.direction, np.eye(3))
    assert g.voxel_volume == 1.0 and g.slice_plane == "axial" and g.obliquity_deg == 0.0
    assert g.to_ras() is g
    np.testing.assert_array_equal(g.to_lps().affine, np.diag([-1.0, -1.0, 1.0, 1.0]))


def test_identity_in_lps_runs_left_posterior_superior():
    g = Geometry(np.eye(4), frame="LPS")
    assert g.orientation == ("L", "P", "S")
    ras = g.to_ras()
    assert ras.frame == "RAS" and ras.orientation == ("L", "P", "S")
    np.testing.assert_array_equal(ras.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(ras.to_lps().affine, np.eye(4))  # its own inverse


def test_ninety_degree_rotation_with_anisotropic_voxels():
    # i runs anterior in 2 mm steps, j runs to the patient's left in 3 mm, k up in 4 mm
    g = Geometry(_affine([[0, -3, 0], [2, 0, 0], [0, 0, 4]], [10.0, -20.0, 30.0]))
    assert g.spacing == (2.0, 3.0, 4.0) and g.origin == (10.0, -20.0, 30.0)
    assert g.orientation == ("A", "L", "S")
    np.testing.assert_array_equal(g.direction, [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert g.voxel_volume == pytest.approx(24.0, rel=1e-12)  # a determinant: LU, not exact


def test_oblique_axial_stack():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    # slices tilted 30 degrees about the R-L axis, 0.5 x 0.5 x 5 mm; axes i, j, k as columns
    axes = np.column_stack([[0.5, 0, 0], [0, 0.5 * c, 0.5 * s], [0, -5 * s, 5 * c]])
    g = Geometry(_affine(axes, [0, 0, 0]))
    np.testing.assert_allclose(g.spacing, (0.5, 0.5, 5.0))
    np.testing.assert_allclose(g.direction[:, 2], [0, -s, c])
    assert g.orientation == ("R", "A", "S")  # each axis nearest to its RAS axis
    assert g.slice_plane == "axial"
    assert g.obliquity_deg == pytest.approx(30.0)
    assert g.voxel_volume == pytest.approx(0.5 * 0.5 * 5.0)


def test_from_dicom_axial_by_hand():
    # DICOM rows run to the patient's left, columns posterior; PixelSpacing = (row, column)
    g = Geometry.from_dicom([1, 0, 0, 0, 1, 0], [-100.0, -120.0, 50.0], [0.5, 0.8], 3.0)
    assert g.frame == "LPS"
    np.testing.assert_array_equal(g.affine, _affine(np.diag([0.8, 0.5, 3.0]),
                                                    [-100.0, -120.0, 50.0]))
    ras = g.to_ras()
    np.testing.assert_array_equal(ras.affine, _affine(np.diag([-0.8, -0.5, 3.0]),
                                                      [100.0, 120.0, 50.0]))
    assert ras.orientation == ("L", "P", "S") and ras.spacing == (0.8, 0.5, 3.0)


def test_from_dicom_sagittal_by_hand():
    # rows towards posterior, columns towards the feet: normal = P x I = patient right
    g = Geometry.from_dicom([0, 1, 0, 0, 0, -1], [0.0, 0.0, 0.0], [1.0, 1.0], 4.0)
    np.testing.assert_array_equal(g.affine[:3, 2], [-4.0, 0.0, 0.0])
    assert g.orientation == ("P", "I", "R") and g.slice_plane == "sagittal"


def test_sort_slices_along_the_normal():
    iop = [1, 0, 0, 0, 0, -1]  # coronal: normal = L x I = posterior (LPS +y)
    normal = slice_normal(iop)
    np.testing.assert_array_equal(normal, [0.0, 1.0, 0.0])
    positions = np.array([[5.0, y, 7.0] for y in (6.0, 0.0, 9.0, 3.0)])  # shuffled, 3 mm apart
    stack = sort_slices(iop, positions)
    assert stack.order.tolist() == [1, 3, 0, 2]
    np.testing.assert_array_equal(stack.along, [0.0, 3.0, 6.0, 9.0])
    assert stack.step == 3.0
    assert math.isnan(sort_slices(iop, positions[:1]).step)
    with pytest.raises(ValueError, match="spans no plane"):
        slice_normal([1, 0, 0, 1, 0, 0])
    with pytest.raises(ValueError, match="6 direction cosines"):
        slice_normal([1, 0, 0, 0, 1])


def test_lps_and_ras_points():
    np.testing.assert_array_equal(lps_to_ras([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])
    points = np.array([[1.0, 0.0, -3.0], [0.0, -5.0, 2.0]])
    np.testing.assert_array_equal(lps_to_ras(lps_to_ras(points)), points)
    # the same bits as the matrix product, zeros' signs included
    for point in points:
        assert lps_to_ras(point).tobytes() == (LPS_TO_RAS[:3, :3] @ point).tobytes()
    assert nearest_plane([0.1, -0.9, 0.2]) == "coronal"


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="finite 4 x 4"):
        Geometry(np.eye(3))
    with pytest.raises(ValueError, match="finite 4 x 4"):
        Geometry(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="frame must be one of"):
        Geometry(np.eye(4), frame="RAI")
    g = Geometry(np.eye(4))
    with pytest.raises(ValueError):
        g.affine[0, 0] = 2.0  # a value: its affine is read-only


def test_of_a_nibabel_image_and_repr():
    img = nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.diag([-2.0, 3.0, 1.5, 1.0]))
    g = Geometry.of(img)
    assert g.spacing == (2.0, 3.0, 1.5) and g.orientation == ("L", "A", "S")
    assert repr(g) == "Geometry(frame=RAS, orientation=LAS, spacing=(2, 3, 1.5) mm, " \
        "origin=(0, 0, 0) mm)"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_simpleitk_geometry(seed):
    """Random oblique LPS grids: voxel-to-world mapping, spacing, origin, direction and the
    orientation codes agree with SimpleITK (ITK's own LPS convention)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing = rng.uniform(0.4, 5.0, 3)
    origin = rng.uniform(-200, 200, 3)
    image = sitk.Image([5, 6, 7], sitk.sitkUInt8)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin.tolist())
    image.SetDirection(rotation.flatten().tolist())
    g = Geometry(_affine(rotation * spacing, origin), frame="LPS")
    np.testing.assert_allclose(g.spacing, image.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(g.origin, image.GetOrigin(), rtol=1e-12)
    np.testing.assert_allclose(g.direction.flatten(), image.GetDirection(), atol=1e-12)
    for index in ([0, 0, 0], [4, 5, 6], [1, 3, 2]):
        world = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(g.affine[:3, :3] @ index + g.affine[:3, 3], world,
                                   atol=1e-9)
    codes = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        image.GetDirection())
    assert "".join(g.orientation) == codes
