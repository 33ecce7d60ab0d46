"""DICOM writing: one MR image storage file per slice, the way each site's scanners and its
PACS export them.

A series is one template dataset holding every tag that is the same on all its slices
(identity, protocol, orientation, grid, windowing, private blocks); the slice loop sets only
what differs per slice: SOP instance UID, instance number, image position, slice location and
pixel data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magn_lib.files import atomic_open
from magn_lib.synthetic.geometry import SliceStack
from magn_lib.synthetic.scanners import HOSPITALS, Vendor, instance_order

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["series_template", "uid", "write_series"]

_BODY_PART = {"cervical": "CSPINE", "thoracic": "TSPINE", "lumbar": "LSPINE",
              "sacrococcygeal": "SSPINE"}


def uid(*parts: object) -> str:
    """A DICOM UID derived from ``parts`` (deterministic: same parts, same UID)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def series_template(*, g: SliceStack, slope: float, intercept: float, window_centre: float,
                    vendor: Vendor, view: str, series_no: int, series_uid: str,
                    study_time: str, ident: dict[str, str], plan: dict[str, Any],
                    position: str, uids: dict[str, str]) -> Dataset:
    """The dataset of one series with every tag its slices share (file meta included)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    spec = vendor.series[view]
    name_plain = ident["PatientName"].replace("^", " ").title()
    body_part = _BODY_PART[plan["site"]]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident["StudyDate"]
    ds.StudyTime = study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{study_time[:2]}{series_no:02d}15"
    ds.AccessionNumber = ident["AccessionNumber"]
    ds.Modality = "MR"
    ds.Manufacturer = vendor.manufacturer
    ds.InstitutionName = ident["InstitutionName"]
    ds.InstitutionAddress = ident["InstitutionAddress"]
    ds.ReferringPhysicianName = ident["ReferringPhysicianName"]
    ds.StationName = vendor.station
    ds.StudyDescription = f"MR {body_part[0]}-SPINE W/WO CONTRAST"
    ds.SeriesDescription = spec.description
    ds.PerformingPhysicianName = ident["ReferringPhysicianName"]
    ds.OperatorsName = "TECH^MR"
    ds.ManufacturerModelName = vendor.model
    ds.PatientName = ident["PatientName"]
    ds.PatientID = ident["PatientID"]
    ds.PatientBirthDate = ident["PatientBirthDate"]
    ds.PatientSex = plan["sex"]
    ds.OtherPatientIDs = ident["OtherPatientIDs"]
    ds.PatientAge = f"{plan['age']:03d}Y"
    ds.PatientTelephoneNumbers = ident["PatientTelephoneNumbers"]
    ds.AdditionalPatientHistory = (
        f"Pt {name_plain}, {plan['age']}y, back pain; ? metastasis vs myeloma. "
        f"Ref {ident['ReferringPhysicianName'].replace('^', ' ').title()}"
    )
    ds.ContrastBolusAgent = "Gd-DTPA 0.2 ml/kg"
    ds.BodyPartExamined = body_part
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = "FS"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = f"{g.thickness:g}"
    ds.RepetitionTime = f"{spec.tr:g}"
    ds.EchoTime = f"{spec.te:g}"
    ds.MagneticFieldStrength = f"{vendor.field_t:g}"
    ds.SpacingBetweenSlices = f"{g.spacing:g}"
    ds.SoftwareVersions = vendor.software
    ds.FlipAngle = vendor.flip_angle
    ds.PatientPosition = position
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ident["AccessionNumber"][-5:]
    ds.SeriesNumber = series_no
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [f"{x:.8f}" for x in np.r_[g.row_dir, g.col_dir]]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = f"{plan['site']} spine post Gd, {name_plain}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = g.rows
    ds.Columns = g.cols
    ds.PixelSpacing = [f"{g.pixel[0]:g}", f"{g.pixel[1]:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{window_centre:.0f}"
    ds.WindowWidth = f"{2 * window_centre:.0f}"
    if vendor.rescale != "absent":
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleType = "US"
    # the site's PACS copies identity into its own private block; vendors add theirs
    pacs = ds.private_block(0x0011, HOSPITALS[vendor.hospital].pacs_creator, create=True)
    pacs.add_new(0x10, "LO", ident["PatientID"])
    pacs.add_new(0x11, "PN", ident["PatientName"])
    pacs.add_new(0x12, "LO", ident["AccessionNumber"])
    pacs.add_new(0x13, "DA", ident["PatientBirthDate"])
    block = ds.private_block(vendor.private_group, vendor.private_creator, create=True)
    if vendor.rescale == "philips":
        block.add_new(0x0E, "FL", float(slope))  # Philips private scale slope
    else:
        block.add_new(0x10, "LO", f"{vendor.model} {view}")
    return ds


def write_series(folder: Path, *, g: SliceStack, stored: np.ndarray, slope: float,
                 intercept: float, vendor: Vendor, view: str, series_no: int,
                 ident: dict[str, str], plan: dict[str, Any], position: str,
                 uids: dict[str, str], rng: np.random.Generator) -> None:
    """Write ``stored [slice, row, col]`` (uint16) as one file per slice into ``folder``.

    Instance numbers and file names follow the vendor's habit, never the spatial order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = g.n_slices
    instance = instance_order(n, vendor.numbering, rng)
    file_numbers = rng.permutation(n) + 1 + int(rng.integers(0, 40))
    series_uid = uid(uids["study"], view, "series")
    study_time = f"{8 + int(rng.integers(0, 10)):02d}{int(rng.integers(0, 60)):02d}00"
    window_centre = float(np.percentile(stored, 60) * slope + intercept)
    ds = series_template(g=g, slope=slope, intercept=intercept, window_centre=window_centre,
                         vendor=vendor, view=view, series_no=series_no, series_uid=series_uid,
                         study_time=study_time, ident=ident, plan=plan, position=position,
                         uids=uids)
    for k in range(n):
        sop_uid = uid(series_uid, k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = int(instance[k])
        pos = g.slice_origin(k)
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        ds.SliceLocation = f"{float(pos @ g.normal):.6f}"
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<u2").tobytes()
        name = vendor.file_pattern.format(n=int(file_numbers[k]))
        with atomic_open(folder / name, "wb") as stream:
            ds.save_as(stream, enforce_file_format=True)
