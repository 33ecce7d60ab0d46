"""Read one DICOM series into a correctly oriented volume, and strip patient identity.

One folder holds one series (classic single-frame images, or an Enhanced MR multi-frame
object whose frames are placed by their functional groups; where a folder also holds images of
other series, the series with more than half of the images is read and the rest reported, the
stated rule of :func:`read_series`). File names are bytes: they are sorted by their bytes and
shown escaped when not UTF-8. Files over :data:`MAX_FILE_BYTES` are refused unread, and a file
that does not announce itself as DICOM is judged on its first :data:`PROBE_BYTES`. A series
flagged ``BurnedInAnnotation = YES`` is refused unless the caller allows it.
:func:`read_series` reads it with pydicom into a
``nibabel.Nifti1Image`` whose affine maps voxel indices to world RAS+ millimetres, the NIfTI
convention. DICOM stores geometry in the patient-based LPS frame (x towards the patient's
left, y towards posterior, z towards head); RAS+ flips the first two axes. The headers become
an affine in :mod:`magn_lib.geometry` (:meth:`~magn_lib.geometry.Geometry.from_dicom`); this
module checks that the slices form one stack.

Voxel axis order of every volume this module returns (``data[i, j, k]``):

- ``i`` runs along a DICOM row, i.e. over the columns of the stored image, in the direction
  of the first three ``ImageOrientationPatient`` cosines, in steps of ``PixelSpacing[1]``;
- ``j`` runs down the column, over the rows, in the direction of the last three cosines, in
  steps of ``PixelSpacing[0]``;
- ``k`` runs over slices in order of increasing position along the slice normal
  ``row cosines x column cosines``, in steps of the measured slice spacing (not the
  ``SliceThickness`` or ``SpacingBetweenSlices`` tags).

So ``data[:, :, k].T`` is slice ``k`` as the scanner stored it (rows x columns). Slices are
ordered by their ``ImagePositionPatient`` projected on the normal, never by file name or
``InstanceNumber``. This is the order ITK/SimpleITK's ``ImageSeriesReader`` uses too (its
array view ``GetArrayFromImage`` is ``[k, j, i]``).

De-identification: nothing from a DICOM header except geometry and pixel values reaches a
volume (NIfTI ``descrip``, ``aux_file``, ``intent_name`` and ``db_name`` stay empty).
:func:`series_identity` lists the identifying values a series holds (for writing a key from
original id to pseudonym when asked, and for checking that none leaked);
:func:`deidentify_series` writes a de-identified copy of a series with dicognito plus removal
of private tags, free text and demographics. :func:`series_metadata` gives a whitelist of
acquisition parameters (vendor, field strength, TR/TE, spacing, orientation) with no identity.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from magn_lib.errors import InputError
from magn_lib.files import atomic_open
from magn_lib.geometry import LPS_TO_RAS, Geometry, sort_slices
from magn_lib.scrub import escape_name, name_sort_key

__all__ = [
    "IDENTITY_KEYWORDS",
    "LPS_TO_RAS",
    "MAX_FILE_BYTES",
    "PROBE_BYTES",
    "SeriesGrid",
    "burned_in_annotation",
    "deidentify_series",
    "read_series",
    "series_grid",
    "series_identity",
    "series_metadata",
    "voxel_to_world",
    "world_to_voxel",
]

#: Identifying attributes that :func:`series_identity` reports when present and non-empty.
IDENTITY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "ImageComments",
    "PatientComments",
    "AdditionalPatientHistory",
)

# Positions may jitter (float rounding in the DS strings); a slice further than this from
# the uniform grid through the first and last slice is a missing slice or uneven spacing.
_POSITION_TOLERANCE_MM = 0.05
_POSITION_TOLERANCE_FRACTION = 0.01  # of the slice spacing, whichever is larger
_ORIENTATION_TOLERANCE = 1e-4  # direction-cosine difference within one series
_SPACING_TOLERANCE_MM = 1e-4  # PixelSpacing difference within one series
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
_IGNORED_NAMES = {"dicomdir", "thumbs.db", "desktop.ini"}
_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
#: Files larger than this in a series folder are refused unread (an MR slice is a few hundred
#: kB; an Enhanced MR object of a whole series a few hundred MB).
MAX_FILE_BYTES = 2 * 2**30
#: A file that does not announce itself as DICOM is judged on this many leading bytes.
PROBE_BYTES = 64 * 1024

# Removed by deidentify_series in addition to dicognito's replacements: demographics and the
# free-text attributes hospitals type names into. Any LT/ST/UT element is removed as well.
_REMOVED_KEYWORDS = (
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "ReasonForStudy",
    "ReasonForTheRequestedProcedure",
    "ImageComments",
    "PatientComments",
    "StudyComments",
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "DerivationDescription",
    "AcquisitionComments",
    "InstitutionalDepartmentName",
    "DeviceSerialNumber",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "SourceApplicationEntityTitle",
)
_FREE_TEXT_VRS = {"LT", "ST", "UT"}


@dataclass(frozen=True)
class _Slice:
    """One 2D image: a classic single-frame file, or one frame of a multi-frame object.

    For a frame, ``ds`` holds the object's top-level attributes with the frame's geometry and
    rescale (from its functional groups) flattened into the classic attributes, ``frame`` its
    index and ``source`` the whole object (whose pixel data holds every frame).
    """

    path: Path
    ds: Dataset
    frame: int | None = None
    source: Dataset | None = None

    @property
    def name(self) -> str:
        """The file name (escaped if undecodable), with the frame number for a frame."""
        name = escape_name(self.path.name)
        return name if self.frame is None else f"{name} frame {self.frame + 1}"


@dataclass(frozen=True)
class _Scan:
    """The slices of the series chosen in a folder, and what was left out."""

    slices: list[_Slice]
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# file discovery


def _is_image_object(ds: Dataset) -> bool:
    sop = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    sop = sop or ds.get("SOPClassUID")
    name = UID(str(sop)).name if sop else ""
    return "Image Storage" in name or "Rows" in ds or "PixelData" in ds


def _has_sop_class(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return bool((meta is not None and meta.get("MediaStorageSOPClassUID")) or ds.get("SOPClassUID"))


def _read_file(path: Path, *, patient: str | None, pixels: bool) -> Dataset | None:
    """Read one file; ``None`` for something that is clearly not a DICOM image.

    Files that announce themselves as DICOM (the ``DICM`` marker, or a .dcm/.ima name) must
    read cleanly; anything else is probed on its first :data:`PROBE_BYTES` only (so a large
    file of zeros or text costs one small read) and skipped when it does not parse as DICOM.
    Files larger than :data:`MAX_FILE_BYTES` are refused before anything is read.
    """
    hint = "re-export the series from the scanner or PACS, or remove the file from the folder"
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"file of {size / 2**30:.1f} GiB in a series folder (limit "
            f"{MAX_FILE_BYTES / 2**30:g} GiB): not a slice of an MR series",
            patient=patient, file=path, hint="remove the file from the series folder",
        )
    with open(path, "rb") as fh:
        head = fh.read(PROBE_BYTES)
    has_marker = len(head) >= 132 and head[128:132] == b"DICM"
    claims_dicom = has_marker or path.suffix.lower() in _DICOM_SUFFIXES
    if not claims_dicom:
        try:
            probe = pydicom.dcmread(io.BytesIO(head), force=True, stop_before_pixels=True)
            looks_dicom = "SOPClassUID" in probe and re.fullmatch(
                r"[0-9.]+", str(probe.SOPClassUID)
            )
        except Exception:
            looks_dicom = False
        if not looks_dicom:
            return None  # a note, a thumbnail, a .DS_Store: not ours to judge
    try:
        # the header first (cheap, and enough to refuse what is not ours), then the pixels
        ds = pydicom.dcmread(path, force=not has_marker, stop_before_pixels=True)
        if pixels and _is_image_object(ds):
            ds = pydicom.dcmread(path, force=not has_marker)
    except Exception as err:
        raise InputError(
            f"unreadable DICOM file ({type(err).__name__}: {err})", patient=patient, file=path,
            hint=hint,
        ) from err
    if not _has_sop_class(ds) and "Rows" not in ds and "PixelData" not in ds:
        raise InputError(
            "damaged or truncated DICOM file: no SOP class, no image attributes",
            patient=patient, file=path, hint=hint,
        )
    if not _is_image_object(ds):
        return None  # DICOMDIR-like, structured report, presentation state: not an image
    if pixels and "PixelData" not in ds:
        raise InputError(
            "DICOM image without pixel data (the file is probably truncated)",
            patient=patient, file=path, hint=hint,
        )
    return ds


# Attributes a multi-frame object keeps per frame (or shared) in functional groups, with the
# classic attribute each becomes: (group sequence, item attribute).
_FRAME_ATTRIBUTES = (
    ("PixelMeasuresSequence", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PixelValueTransformationSequence", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept"),
)
_FRAME_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def _frames(path: Path, ds: Dataset, patient: str | None) -> list[_Slice]:
    """The frames of a multi-frame (Enhanced MR) object as slices, geometry from its shared
    and per-frame functional groups (the per-frame value wins)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n:
        raise InputError(
            f"multi-frame DICOM object with {n} frame(s) but "
            f"{'no' if per_frame is None else len(per_frame)} per-frame functional group(s): "
            "the frames cannot be placed in space, not supported",
            patient=patient, file=path,
            hint="export the series as classic single-frame MR images (one file per slice), "
            "e.g. with the scanner's 'classic DICOM' option or dcuncat/emf2sf",
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()
    top = [elem for elem in ds if elem.keyword not in (*_FRAME_GROUPS, "PixelData",
                                                         "NumberOfFrames")]
    out = []
    for index, item in enumerate(per_frame):
        frame = Dataset()
        for elem in top:
            frame.add(elem)
        frame.file_meta = ds.file_meta
        for group, keyword in _FRAME_ATTRIBUTES:
            for source in (item, shared):
                seq = source.get(group)
                if seq and keyword in seq[0]:
                    setattr(frame, keyword, seq[0].get(keyword))
                    break
        out.append(_Slice(path, frame, frame=index, source=ds))
    return out


def _list_files(folder: Path) -> list[Path]:
    """The candidate files of a series folder, sorted by the bytes of their names (a total
    order whatever the names' encoding; undecodable names are kept, never dropped)."""
    return sorted(
        (p for p in folder.iterdir()
         if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _IGNORED_NAMES),
        key=name_sort_key,
    )


def _scan(folder: Path, *, patient: str | None, pixels: bool) -> _Scan:
    """All DICOM images of one series folder (frames of multi-frame objects expanded), the
    series chosen by :func:`_choose_series`, checked for being one 2D MR series."""
    if not folder.exists():
        raise InputError("series folder does not exist", patient=patient, file=folder,
                         hint="check the series path in the manifest")
    if not folder.is_dir():
        raise InputError(
            "not a folder: a series is read from the folder holding all its slice files",
            patient=patient, file=folder, hint="give the folder, not one file",
        )
    names = _list_files(folder)
    slices: list[_Slice] = []
    errors: list[InputError] = []
    for path in names:
        try:
            ds = _read_file(path, patient=patient, pixels=pixels)
            if ds is not None and ("PerFrameFunctionalGroupsSequence" in ds
                                   or int(ds.get("NumberOfFrames", 1) or 1) > 1):
                slices.extend(_frames(path, ds, patient))
            elif ds is not None:
                slices.append(_Slice(path, ds))
        except InputError as err:
            errors.append(err)
    if errors:
        raise InputError.combine(errors)
    if not slices:
        raise InputError(
            f"no DICOM images in the folder ({len(names)} other file(s))",
            patient=patient, file=folder,
            hint="point the manifest at the folder that holds the series' .dcm files",
        )
    scan = _choose_series(slices, folder, patient)
    errors = [e for s in scan.slices if (e := _check_slice_header(s, patient)) is not None]
    if errors:
        raise InputError.combine(errors)
    return scan


def _choose_series(slices: list[_Slice], folder: Path, patient: str | None) -> _Scan:
    """The series of a folder, by the stated rule: the SeriesInstanceUID that holds more than
    half of the folder's images; the other images (intruders) are left out and reported by
    count, series number and file name (never their UIDs or descriptions). Without such a
    majority the folder is refused."""
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(str(s.ds.get("SeriesInstanceUID", "<none>")), []).append(s)
    if len(groups) == 1:
        return _Scan(slices)
    ranked = sorted(groups.values(), key=len, reverse=True)
    listing = "; ".join(
        f"series number {g[0].ds.get('SeriesNumber', '?')}: {len(g)} image(s)" for g in ranked
    )
    if 2 * len(ranked[0]) <= len(slices):
        raise InputError(
            f"mixed folder: it holds {len(groups)} series and none has a majority of its "
            f"{len(slices)} images ({listing})",
            patient=patient, file=folder,
            hint="sort the files into one folder per series (SeriesInstanceUID) and list the "
            "one to use",
        )
    chosen = ranked[0]
    left = [s for g in ranked[1:] for s in g]
    shown = ", ".join(s.name for s in left[:3]) + (" ..." if len(left) > 3 else "")
    note = (f"mixed folder: {len(left)} image(s) of {len(groups) - 1} other series left out "
            f"({shown}); read the majority series (series number "
            f"{chosen[0].ds.get('SeriesNumber', '?')}, {len(chosen)} of {len(slices)} images)")
    return _Scan(chosen, notes=(note,))


def _check_slice_header(s: _Slice, patient: str | None) -> InputError | None:
    ds = s.ds
    sop = str(ds.get("SOPClassUID", ""))
    if sop == _ENHANCED_MR and s.frame is None:
        return InputError(
            "Enhanced MR (multi-frame) object without functional groups: its frames cannot be "
            "placed in space, not supported",
            patient=patient, file=s.path,
            hint="export the series as classic single-frame MR images (one file per slice), "
            "e.g. with the scanner's 'classic DICOM' option or dcuncat/emf2sf",
        )
    modality = str(ds.get("Modality", ""))
    if modality != "MR":
        return InputError(
            f"modality is '{modality or 'missing'}', expected MR",
            patient=patient, file=s.path, hint="this study reads contrast-enhanced T1 MR series",
        )
    missing = [
        k for k in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient",
                    "ImagePositionPatient") if ds.get(k) in (None, "")
    ]
    if missing:
        return InputError(
            f"missing geometry attribute(s) {', '.join(missing)}",
            patient=patient, file=s.path,
            hint="without them the slice cannot be placed in space; export the original "
            "images (not secondary captures or screenshots)",
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return InputError(
            f"colour image (SamplesPerPixel {ds.SamplesPerPixel}); expected greyscale MR",
            patient=patient, file=s.path, hint="export the original greyscale images",
        )
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        return InputError("ImageOrientationPatient must hold 6 numbers", patient=patient,
                          file=s.path, hint="the header is damaged; re-export the series")
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3
            or abs(row @ col) > 1e-3):
        return InputError(
            f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors",
            patient=patient, file=s.path, hint="the header is damaged; re-export the series",
        )
    if len(ds.ImagePositionPatient) != 3 or len(ds.PixelSpacing) != 2:
        return InputError("ImagePositionPatient needs 3 numbers and PixelSpacing 2",
                          patient=patient, file=s.path, hint="re-export the series")
    return None


# --------------------------------------------------------------------------------------------
# geometry


def _fmt_counts(values: Sequence[Any]) -> str:
    return ", ".join(f"{v} ({n} file{'s' if n > 1 else ''})" for v, n in Counter(values).items())


def _geometry(
    slices: list[_Slice], folder: Path, patient: str | None
) -> tuple[list[_Slice], Geometry]:
    """Sort slices along the normal, check the stack, return it and its (LPS) geometry."""
    first = slices[0].ds
    shapes = [(int(s.ds.Rows), int(s.ds.Columns)) for s in slices]
    if len(set(shapes)) > 1:
        raise InputError(
            "slices differ in size (rows x columns): "
            + _fmt_counts([f"{r}x{c}" for r, c in shapes]),
            patient=patient, file=folder,
            hint="the folder mixes acquisitions; keep only the slices of one stack",
        )
    spacings = np.array([[float(v) for v in s.ds.PixelSpacing] for s in slices])
    if np.ptp(spacings, axis=0).max() > _SPACING_TOLERANCE_MM:
        found = [f"{r:g}x{c:g} mm" for r, c in spacings]
        raise InputError(
            f"slices differ in PixelSpacing: {_fmt_counts(found)}",
            patient=patient, file=folder,
            hint="the folder mixes acquisitions; keep only the slices of one stack",
        )
    iops = np.array([[float(v) for v in s.ds.ImageOrientationPatient] for s in slices])
    if np.abs(iops - iops[0]).max() > _ORIENTATION_TOLERANCE:
        found = [str([round(v, 4) for v in row]) for row in iops]
        raise InputError(
            f"inconsistent ImageOrientationPatient within the series: {_fmt_counts(found)}",
            patient=patient, file=folder,
            hint="the folder mixes stacks of different orientation (a localizer?); "
            "keep only the slices of one stack",
        )
    positions = np.array([[float(v) for v in s.ds.ImagePositionPatient] for s in slices])
    stack = sort_slices(iops[0], positions)
    slices = [slices[i] for i in stack.order]
    positions, along, normal, step = positions[stack.order], stack.along, stack.normal, stack.step

    n = len(slices)
    if n > 1:
        gaps = np.diff(along)
        tolerance = max(_POSITION_TOLERANCE_MM, _POSITION_TOLERANCE_FRACTION * abs(step))
        dup = np.flatnonzero(gaps < tolerance)
        if dup.size:
            pairs = ", ".join(
                f"{slices[i].name} and {slices[i + 1].name}" for i in dup[:5]
            )
            raise InputError(
                f"{dup.size} duplicate slice position(s) along the normal: {pairs}",
                patient=patient, file=folder,
                hint="the folder holds repeated slices (several echoes, repeats or "
                "acquisitions); keep one stack",
            )
        in_plane = (positions - positions[0]) - np.outer(along - along[0], normal)
        if np.linalg.norm(in_plane, axis=1).max() > tolerance:
            raise InputError(
                "slice origins are shifted within the slice plane "
                f"(up to {np.linalg.norm(in_plane, axis=1).max():.3g} mm): a sheared stack "
                "(gantry tilt) is not supported",
                patient=patient, file=folder, hint="resample the series to an orthogonal grid",
            )
        deviation = np.abs(along - (along[0] + step * np.arange(n)))
        if deviation.max() > tolerance:
            found = _fmt_counts([f"{g:.3g} mm" for g in gaps]).replace("file", "gap")
            worst = int(np.argmax(np.abs(gaps - np.median(gaps))))
            raise InputError(
                f"slice spacing is not uniform (missing slice?): gaps found {found}; "
                f"largest irregularity between {slices[worst].name} and "
                f"{slices[worst + 1].name}",
                patient=patient, file=folder,
                hint="re-export the complete series; slices must be evenly spaced",
            )
    else:
        step = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)

    return slices, Geometry.from_dicom(iops[0], positions[0], spacings[0], step)


# --------------------------------------------------------------------------------------------
# pixel data


def _pixels(s: _Slice, patient: str | None, decoded: dict[int, np.ndarray] | None = None
            ) -> np.ndarray:
    """Stored values of one slice, rescaled (slope, intercept), as float32 ``[rows, cols]``.

    A frame of a multi-frame object is taken from the object's pixel data, decoded once per
    object (``decoded`` caches it by object).
    """
    ds = s.ds if s.source is None else s.source
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)))
    if ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) if decoder is not None else ""
            raise InputError(
                f"compressed transfer syntax '{ts.name}' ({ts}) and no installed decoder",
                patient=patient, file=s.path,
                hint=f"install a decoder plugin for pydicom ({needs or 'none known'}) or "
                "decompress the series first (e.g. 'gdcmconv --raw' or 'dcmdjpeg')",
            )
    try:
        if s.source is None:
            stored = ds.pixel_array
        else:
            cache = {} if decoded is None else decoded
            if id(ds) not in cache:
                frames = ds.pixel_array
                cache[id(ds)] = frames[None] if frames.ndim == 2 else frames
            stored = cache[id(ds)][s.frame]
            ds = s.ds  # the frame's own rows, columns and rescale
    except Exception as err:
        raise InputError(
            f"pixel data cannot be decoded ({type(err).__name__}: {err})",
            patient=patient, file=s.path,
            hint="the file is probably truncated or damaged; re-export the series",
        ) from err
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise InputError(
            f"pixel data has shape {stored.shape}, header says {ds.Rows}x{ds.Columns}",
            patient=patient, file=s.path, hint="re-export the series",
        )
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    # Rescale in float64, then round once to float32, as ITK's GDCM reader does.
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


# --------------------------------------------------------------------------------------------
# public API


def read_series(
    path: str | PathLike[str], *, patient: str | None = None, allow_burned_in: bool = False
) -> nib.Nifti1Image:
    """Read one folder holding one 2D MR DICOM series into a volume.

    Args:
        path: the series folder. Files that are clearly not DICOM images (hidden files,
            ``DICOMDIR``, notes, structured reports) are ignored; subfolders are not read.
            Classic single-frame images and multi-frame (Enhanced MR) objects are read; the
            frames of a multi-frame object are placed by its per-frame functional groups. A
            folder holding images of several series is read by one rule: the series
            (SeriesInstanceUID) holding more than half of the images is read, the others are
            left out (:func:`series_metadata` reports them in ``notes``).
        patient: the study's pseudonymous patient id, used only to name the patient in error
            messages.
        allow_burned_in: read a series flagged ``BurnedInAnnotation = YES`` (text such as the
            patient's name burned into the pixels) instead of refusing it. Only after someone
            checked the images: the pixels reach figures that are shared.

    Returns:
        ``Nifti1Image`` with float32 data ``[i, j, k]`` (columns, rows, slices; see the module
        docstring for the exact axis order) holding ``stored * RescaleSlope + RescaleIntercept``
        per slice, and a float64 affine from voxel index to world RAS+ mm (voxel centres),
        set as both qform and sform with code 1 (scanner). The header carries no DICOM
        attribute: ``descrip`` and ``aux_file`` are empty. Units: mm.

    Raises:
        InputError: naming the patient, file or folder and the problem, for: a missing path
            or a file instead of a folder, an empty folder, unreadable or truncated files,
            files over :data:`MAX_FILE_BYTES`, several series without a majority, non-MR
            modality, multi-frame objects without per-frame geometry, burned-in annotation
            (unless allowed), compressed data without a decoder, missing geometry attributes,
            differing matrix or pixel spacing, inconsistent orientation, duplicate positions,
            sheared stacks, and non-uniform spacing (missing slices) beyond max(0.05 mm, 1 %
            of the spacing).
    """
    folder = Path(path)
    scan = _scan(folder, patient=patient, pixels=True)
    if not allow_burned_in:
        _refuse_burned_in(scan.slices, folder, patient)
    slices, geometry = _geometry(scan.slices, folder, patient)
    errors: list[InputError] = []
    planes = []
    decoded: dict[int, np.ndarray] = {}
    for s in slices:
        try:
            planes.append(_pixels(s, patient, decoded).T)  # [rows, cols] -> [i, j]
        except InputError as err:
            errors.append(err)
    if errors:
        raise InputError.combine(errors)
    data = np.stack(planes, axis=-1)
    affine = geometry.to_ras().affine.copy()
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = b""
    img.header["aux_file"] = b""
    return img


@dataclass(frozen=True)
class SeriesGrid:
    """The voxel grid :func:`read_series` gives a series, from its headers only.

    Attributes:
        shape: ``(columns, rows, slices)``, the volume's ``[i, j, k]`` shape.
        affine: float64 4 x 4, voxel index -> world RAS+ mm.
        plane: the nearest of "sagittal", "coronal", "axial" (from the slice normal).
        patient_ids: the PatientID, PatientName and OtherPatientIDs of the first image.
        notes: what was left out of a mixed folder (see :func:`read_series`).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    plane: str
    patient_ids: tuple[str, ...]
    notes: tuple[str, ...] = ()


def series_grid(path: str | PathLike[str], *, patient: str | None = None) -> SeriesGrid:
    """The grid of the series :func:`read_series` would read from ``path`` (headers only).

    The series is chosen and checked as by :func:`read_series` (majority rule, multi-frame
    objects, every geometry check), without decoding pixels.

    Raises:
        InputError: as :func:`read_series`, for every problem visible in the headers.
    """
    folder = Path(path)
    scan = _scan(folder, patient=patient, pixels=False)
    slices, geometry = _geometry(scan.slices, folder, patient)
    first = slices[0].ds
    ids = tuple(sorted({str(first.get(k)) for k in ("PatientID", "PatientName",
                                                      "OtherPatientIDs") if first.get(k)}))
    cols, rows = int(first.Columns), int(first.Rows)
    return SeriesGrid(shape=(cols, rows, len(slices)), affine=geometry.to_ras().affine.copy(),
                      plane=geometry.slice_plane, patient_ids=ids, notes=scan.notes)


def burned_in_annotation(path: str | PathLike[str], *, patient: str | None = None) -> bool:
    """Whether any image of the series is flagged ``BurnedInAnnotation = YES`` (headers only)."""
    return any(_is_burned_in(s) for s in _scan(Path(path), patient=patient, pixels=False).slices)


def _is_burned_in(s: _Slice) -> bool:
    return str(s.ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"


def _refuse_burned_in(slices: list[_Slice], folder: Path, patient: str | None) -> None:
    flagged = [s for s in slices if _is_burned_in(s)]
    if flagged:
        raise InputError(
            f"burned-in annotation: {len(flagged)} of {len(slices)} image(s) are flagged "
            "BurnedInAnnotation = YES (text in the pixels, such as a name, would reach the "
            "report's figures)",
            patient=patient, file=folder,
            hint="check the images; if they hold no identifying text, set allow_burned_in = yes "
            "on this series' row of series.csv",
        )


def voxel_to_world(img: nib.spatialimages.SpatialImage, ijk: Any) -> np.ndarray:
    """World RAS+ mm of voxel indices ``ijk`` (shape ``[3]`` or ``[N, 3]``; may be fractional)."""
    ijk = np.asarray(ijk, dtype=float)
    return nib.affines.apply_affine(img.affine, ijk)


def world_to_voxel(img: nib.spatialimages.SpatialImage, xyz: Any) -> np.ndarray:
    """Index of the voxel whose centre is nearest to world point(s) ``xyz``.

    Args:
        img: any nibabel image; its affine maps voxel index to world RAS+ mm.
        xyz: world RAS+ coordinates in mm, shape ``[3]`` or ``[N, 3]``.

    Returns:
        int64 indices ``[i, j, k]`` (shape ``[3]`` or ``[N, 3]``), rounded to the nearest voxel
        centre. They are not clipped: a point outside the volume gives an index outside
        ``img.shape``.
    """
    xyz = np.asarray(xyz, dtype=float)
    ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), xyz)
    return np.rint(ijk).astype(np.int64)


_VENDORS = (("siemens", "Siemens"), ("ge ", "GE"), ("ge medical", "GE"), ("philips", "Philips"),
            ("canon", "Canon"), ("toshiba", "Canon"), ("hitachi", "Hitachi"),
            ("fujifilm", "Fujifilm"), ("united imaging", "United Imaging"))


def _vendor(manufacturer: str) -> str:
    key = manufacturer.lower() + " "
    for prefix, name in _VENDORS:
        if key.startswith(prefix):
            return name
    return manufacturer.strip() or "unknown"


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def series_metadata(path: str | PathLike[str], *, patient: str | None = None) -> dict[str, Any]:
    """Non-identifying acquisition parameters of one series (a whitelist), for vendor summaries.

    The series is checked like :func:`read_series` (headers only, no pixel decoding).

    Returns:
        dict with ``vendor`` (Siemens, GE, Philips, ...), ``manufacturer``, ``model``,
        ``field_strength_t`` (T), ``repetition_time_ms``, ``echo_time_ms``,
        ``flip_angle_deg``, ``pixel_spacing_mm`` (row spacing, column spacing — DICOM
        ``PixelSpacing`` order), ``slice_thickness_mm``, ``slice_spacing_mm`` (measured from the
        positions), ``rows``, ``columns``, ``n_slices``, ``orientation`` (the nearest of
        "sagittal", "coronal", "axial", from the slice normal), ``obliquity_deg`` (angle of the
        normal from that plane's axis), ``patient_position`` (e.g. HFS, HFDL),
        ``multi_frame`` (read from a multi-frame object), ``burned_in_annotation``
        (an image is flagged
        ``BurnedInAnnotation = YES``), ``notes`` (what was left out of a mixed folder, by the
        majority rule of :func:`read_series`; "" when nothing). Missing attributes are
        ``None`` (or "" for text).
    """
    folder = Path(path)
    scan = _scan(folder, patient=patient, pixels=False)
    slices, geometry = _geometry(scan.slices, folder, patient)
    ds = slices[0].ds
    spacing = [float(v) for v in ds.PixelSpacing]
    manufacturer = str(ds.get("Manufacturer", "") or "")
    return {
        "vendor": _vendor(manufacturer),
        "manufacturer": manufacturer,
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "field_strength_t": _float(ds, "MagneticFieldStrength"),
        "repetition_time_ms": _float(ds, "RepetitionTime"),
        "echo_time_ms": _float(ds, "EchoTime"),
        "flip_angle_deg": _float(ds, "FlipAngle"),
        "pixel_spacing_mm": (spacing[0], spacing[1]),
        "slice_thickness_mm": _float(ds, "SliceThickness"),
        "slice_spacing_mm": geometry.spacing[2],
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "n_slices": len(slices),
        "orientation": geometry.slice_plane,
        "obliquity_deg": geometry.obliquity_deg,
        "patient_position": str(ds.get("PatientPosition", "") or ""),
        "multi_frame": any(s.frame is not None for s in slices),
        "burned_in_annotation": any(_is_burned_in(s) for s in slices),
        "notes": "; ".join(scan.notes),
    }


def series_identity(path: str | PathLike[str], *, patient: str | None = None) -> dict[str, str]:
    """Identifying values found in a series, keyed by DICOM keyword (:data:`IDENTITY_KEYWORDS`).

    Values come from the first image file (by file name); attributes absent or empty are left
    out. Meant for writing a key from original id to pseudonym when a user asks for it, and
    for checking that no identity reached the pipeline's outputs. Never write it under
    ``reports/``.
    """
    folder = Path(path)
    slices = _scan(folder, patient=patient, pixels=False).slices
    ds = slices[0].ds if slices[0].source is None else slices[0].source
    found: dict[str, str] = {}
    for keyword in IDENTITY_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, Sequence) and not isinstance(
            value, str) else str(value)
        if text.strip():
            found[keyword] = text
    return found


def _strip(ds: Dataset) -> None:
    """Remove private tags, free text and demographics everywhere in ``ds`` (in place)."""
    ds.remove_private_tags()

    def drop(dataset: Dataset, elem: pydicom.DataElement) -> None:
        if elem.VR in _FREE_TEXT_VRS or elem.keyword in _REMOVED_KEYWORDS:
            del dataset[elem.tag]

    ds.walk(drop)


def deidentify_series(
    src_dir: str | PathLike[str],
    dst_dir: str | PathLike[str],
    *,
    pseudonym: str,
    seed: int | str,
    patient: str | None = None,
) -> Path:
    """Write a de-identified copy of one series; the source is only read.

    dicognito (``Anonymizer(seed=...)``) replaces names, ids, UIDs, dates (shifted),
    institutions and addresses; then PatientName and PatientID are set to ``pseudonym``,
    private tags, every LT/ST/UT element, descriptions and comments, demographics (birth
    date, age, sex, size, weight) and the file preamble and source AE title are removed.
    Geometry and pixel data are kept, so :func:`read_series` gives the same volume.
    Burned-in text in the pixels is not detected.

    Args:
        src_dir: the series folder (checked as in :func:`read_series`).
        dst_dir: an absent or empty folder; receives ``0001.dcm``... in slice order.
        pseudonym: the study's patient id, e.g. "P001".
        seed: seeds dicognito, so the same seed gives the same replacement UIDs and dates.
        patient: id used in error messages (defaults to ``pseudonym``).

    Returns:
        ``dst_dir`` as a Path.
    """
    import dicognito.anonymizer

    patient = pseudonym if patient is None else patient
    src, dst = Path(src_dir), Path(dst_dir)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError("output folder for the de-identified series is not empty",
                         patient=patient, file=dst, hint="give a new or empty folder")
    if dst.resolve() == src.resolve():
        raise InputError("de-identification would overwrite the source series",
                         patient=patient, file=src, hint="give a different output folder")
    slices, _ = _geometry(_scan(src, patient=patient, pixels=True).slices, src, patient)
    if any(s.frame is not None for s in slices):
        raise InputError("de-identified copies of multi-frame objects are not written",
                         patient=patient, file=src,
                         hint="export the series as classic single-frame MR images")
    anonymizer = dicognito.anonymizer.Anonymizer(seed=str(seed))
    dst.mkdir(parents=True, exist_ok=True)
    for index, s in enumerate(slices, start=1):
        ds = s.ds  # our own in-memory copy; the source file is never written
        anonymizer.anonymize(ds)
        _strip(ds)
        ds.PatientName = pseudonym
        ds.PatientID = pseudonym
        meta = ds.file_meta
        for elem in list(meta):
            if elem.keyword not in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
                                    "TransferSyntaxUID", "FileMetaInformationVersion"):
                del meta[elem.tag]
        ds.preamble = b"\0" * 128
        with atomic_open(dst / f"{index:04d}.dcm", "wb") as stream:
            ds.save_as(stream, enforce_file_format=True)
    return dst
