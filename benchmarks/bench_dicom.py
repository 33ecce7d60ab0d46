"""DICOM series reading: magn_lib.dicom.read_series against SimpleITK's ImageSeriesReader.

Uses the real Siemens sagittal series of dcm_qa_decubitus (reference data) when present,
else a synthetic 40-slice 256 x 256 series written with pydicom into a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from benchmarks.common import Result, best_time
from magn_lib.dicom import read_series
from tests.helpers import reference_data_root, sitk_read

__all__ = ["run"]


def _reference_series() -> Path | None:
    root = reference_data_root()
    folder = None if root is None else root / "dicom-decubitus" / "HFS" / "3_t1_fl2d_sag"
    return folder if folder is not None and folder.is_dir() else None


def _synthetic_series(folder: Path, *, n: int = 40, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    series = generate_uid(entropy_srcs=["bench-series"])
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bench", str(k)])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = "MR", series
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-60.0 + 3.0 * k, -120.0, 120.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.5, -10
        ds.PixelData = rng.integers(0, 4096, (size, size)).astype("<u2").tobytes()
        ds.save_as(folder / f"{(k * 17) % n:04d}.dcm", enforce_file_format=True)
    return folder


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = _reference_series()
        what = "real Siemens sagittal, 35 x 256 x 256"
        if folder is None:
            folder = _synthetic_series(Path(tmp))
            what = "synthetic sagittal, 40 x 256 x 256"
        ours = best_time(lambda: read_series(folder), repeat=5)
        theirs = best_time(lambda: sitk_read(folder), repeat=5)
        img, ref = read_series(folder), sitk_read(folder)
        lps = np.eye(4)
        lps[:3, :3] = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
        lps[:3, 3] = ref.GetOrigin()
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        corner = np.array([*(np.array(img.shape) - 1), 1.0])
        offset = max(np.abs(img.affine - ras).max(), np.abs((img.affine - ras) @ corner).max())
    return [
        Result(
            name="read_series wall time",
            value=ours,
            reference="SimpleITK ImageSeriesReader (GDCM)",
            reference_value=theirs,
            unit="s",
            target=4.0,  # loose: a regression guard, not a race
            note=f"{what}; largest voxel-centre offset vs ITK {offset:.2g} mm",
        )
    ]
