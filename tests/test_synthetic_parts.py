"""Unit tests of the embedded cohort's parts: slice-stack geometry, the spine frame, the lesion
specification and the DICOM writer (one template per series, per-slice tags only in the loop).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from magn_lib.synthetic.anatomy import Spine
from magn_lib.synthetic.dicom_writer import write_series
from magn_lib.synthetic.geometry import LPS_TO_RAS, SliceStack
from magn_lib.synthetic.identity import draw_identity
from magn_lib.synthetic.lesions import LesionSpec, draw_lesion
from magn_lib.synthetic.scanners import VENDORS, to_stored


def _axial_stack(n_slices: int = 3) -> SliceStack:
    # axial, HFS display convention: rows run to patient left (+x LPS), columns posterior (+y)
    return SliceStack(origin=np.array([10.0, -20.0, 30.0]), row_dir=np.array([1.0, 0.0, 0.0]),
                      col_dir=np.array([0.0, 1.0, 0.0]), normal=np.array([0.0, 0.0, 1.0]),
                      pixel=(0.5, 0.75), spacing=4.0, thickness=3.5, rows=4, cols=5,
                      n_slices=n_slices)


def test_slice_stack_affines_by_hand():
    g = _axial_stack()
    expected_lps = np.array([[0.75, 0, 0, 10.0], [0, 0.5, 0, -20.0], [0, 0, 4.0, 30.0],
                             [0, 0, 0, 1]])
    assert np.array_equal(g.affine_lps(), expected_lps)
    expected_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected_lps
    assert np.array_equal(g.affine_ras(), expected_ras)
    assert np.allclose(g.slice_origin(2), [10.0, -20.0, 38.0])
    assert np.allclose(g.affine_lps() @ [0, 0, 2, 1], np.append(g.slice_origin(2), 1))
    assert g.tilt_deg() == 0.0
    tilted = g.replace(normal=np.array([0.0, np.sin(0.2), np.cos(0.2)]))
    assert tilted.tilt_deg() == pytest.approx(np.degrees(0.2))
    assert g.n_slices == 3  # replace returns a new stack
    assert np.array_equal(LPS_TO_RAS @ [1.0, 2.0, 3.0], [-1.0, -2.0, 3.0])


@pytest.mark.parametrize("site", ["cervical", "thoracic", "lumbar", "sacrococcygeal"])
def test_spine_frame_round_trip(site):
    """Straightened (s, u, v) -> LPS -> local -> (s, u, v) is the identity (float32 path)."""
    spine = Spine.draw(site, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    suv = np.c_[rng.uniform(-60, 60, 50), rng.uniform(-40, 40, 50), rng.uniform(-30, 30, 50)]
    local = np.array([spine.lps_to_local(spine.to_world(*p)) for p in suv], np.float32)
    s, u, v = spine.to_local(local[:, 0], local[:, 1], local[:, 2])
    assert np.allclose(np.c_[s, u, v], suv, atol=2e-3)
    left, ant, sup = spine.frame(0.0)
    assert np.allclose([left @ ant, left @ sup, ant @ sup], 0, atol=1e-12)


def test_lesion_spec_is_a_frozen_value_drawn_deterministically():
    spine = Spine.draw("lumbar", np.random.default_rng(1))

    def draw() -> LesionSpec:
        return draw_lesion(spine, np.random.default_rng(2), label=1, k=0, m=-0.5,
                           diameter_cm=3.0, lesion_id="P001-L1", number=1)

    a, b = draw(), draw()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.irregularity = 0.0  # type: ignore[misc]
    for f in dataclasses.fields(LesionSpec):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y), f.name
        elif f.name not in ("extent", "lobes", "margin", "texture"):
            assert x == y, f.name
    lo, hi = a.extent
    assert np.all(lo <= a.centre) and np.all(a.centre <= hi)
    assert a.level == spine.levels[3] and a.pattern in {"homogeneous", "heterogeneous", "rim"}


@pytest.mark.parametrize("vendor_key", sorted(VENDORS))
def test_series_files_differ_only_in_per_slice_tags(tmp_path, vendor_key):
    vendor = VENDORS[vendor_key]
    rng = np.random.default_rng(0)
    g = _axial_stack(n_slices=4)
    img = rng.uniform(0, 1, (g.n_slices, g.rows, g.cols)).astype(np.float32)
    stored, slope, intercept = to_stored(img, vendor, rng)
    plan = {"site": "lumbar", "sex": "F", "age": 61}
    ident = draw_identity(rng, plan, vendor)
    write_series(tmp_path, g=g, stored=stored, slope=slope, intercept=intercept, vendor=vendor,
                 view="axial", series_no=3, ident=ident, plan=plan, position="HFS",
                 uids={"study": "1.2.3", "frame": "1.2.4"}, rng=rng)
    files = sorted(tmp_path.iterdir())
    assert len(files) == g.n_slices
    headers = [pydicom.dcmread(f) for f in files]
    per_slice = {"SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                 "PixelData"}
    first = headers[0]
    for ds in headers[1:]:
        differing = {e.keyword or str(e.tag) for e in ds if ds[e.tag].value != first[e.tag].value}
        differing |= {e.keyword for e in first if e.tag not in ds}
        assert differing <= per_slice, differing
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in headers}) == g.n_slices
    # each slice carries its own pixels at its own position
    normal = np.array([0.0, 0.0, 1.0])
    for ds in headers:
        k = int(round((np.array(ds.ImagePositionPatient, float) - g.origin) @ normal / 4.0))
        assert np.array_equal(ds.pixel_array, stored[k])
        assert float(ds.SliceLocation) == pytest.approx(g.slice_origin(k) @ normal)
