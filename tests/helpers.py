"""What the tests and the benchmarks share: the toy lesion dataset, the small embedded cohort's
specification, and where the real reference data live.

The pytest fixtures built on these are in ``conftest.py``; benchmarks import this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from magn_lib.config import VIEWS, project_root

__all__ = [
    "SMALL_COHORT",
    "CohortSpec",
    "ToyCrops",
    "assert_matches_itk",
    "edit_dicom",
    "make_small_cohort",
    "make_trained_run",
    "reference_data_root",
    "sitk_read",
    "to_enhanced_mr",
]


def reference_data_root() -> Path | None:
    """``$MAGN_REFERENCE_DATA`` or ``../shared/reference-data`` beside the checkout, if present."""
    candidates = [
        os.environ.get("MAGN_REFERENCE_DATA"),
        project_root().parent / "shared" / "reference-data",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


class ToyCrops(Dataset):
    """Synthetic lesion crops with the item contract of :class:`magn_lib.data.CropDataset`.

    Items: ``{"images": {view: float32 Tensor[3, S, S] in [0, 1]}, "masks": {view: Tensor[S, S]
    0/1}, "label": Tensor[] (1 = MM), "lesion_id": str, "patient_id": str}``. In each view a
    square lesion of ``lesion_px`` pixels (its mask) lies at a random place on a noisy
    background; MM lesions are brighter than metastases. Deterministic in ``seed``;
    :meth:`subset` gives the same items for some of the lesions (what a cross-validation
    dataset factory returns).

    Args:
        lesions: a number ``n`` (lesions ``P000-L1`` ... of patients ``P000`` ..., labels
            alternating 0, 1) or a table with ``lesion_id``, ``patient_id`` and ``label``.
        size: crop size ``S`` in pixels.
        views: the views of every item.
        seed: the draws of the whole dataset, lesion after lesion.
        lesion_px: side of the square lesion (default ``size // 3``).

    Attributes:
        items: the items, in order (tests may change them in place).
        labels: the labels as ``list[int]`` (what :func:`magn_lib.train.dataset_labels` reads).
    """

    def __init__(self, lesions: int | pd.DataFrame = 8, *, size: int = 32,
                 views: Sequence[str] = VIEWS, seed: int = 0,
                 lesion_px: int | None = None) -> None:
        if isinstance(lesions, int):
            table = pd.DataFrame({"lesion_id": [f"P{i:03d}-L1" for i in range(lesions)],
                                  "patient_id": [f"P{i:03d}" for i in range(lesions)],
                                  "label": [i % 2 for i in range(lesions)]})
        else:
            table = lesions.reset_index(drop=True)
        rng = np.random.default_rng(seed)
        side = lesion_px or size // 3
        self.labels = [int(v) for v in table["label"]]
        self.items = []
        for lesion_id, patient_id, label in zip(table["lesion_id"], table["patient_id"],
                                                self.labels, strict=True):
            images, masks = {}, {}
            for view in views:
                mask = np.zeros((size, size), dtype=np.float32)
                r, c = rng.integers(0, size - side, 2)
                mask[r:r + side, c:c + side] = 1
                img = rng.normal(0.3, 0.05, (3, size, size)) + mask * (0.6 if label else 0.3)
                images[view] = torch.from_numpy(np.clip(img, 0, 1).astype(np.float32))
                masks[view] = torch.from_numpy(mask)
            self.items.append({"images": images, "masks": masks,
                               "label": torch.tensor(float(label)),
                               "lesion_id": str(lesion_id), "patient_id": str(patient_id)})

    def subset(self, lesion_ids: Sequence[str]) -> ToyCrops:
        """The same items for ``lesion_ids`` only, in that order."""
        position = {item["lesion_id"]: i for i, item in enumerate(self.items)}
        out = object.__new__(ToyCrops)
        out.items = [self.items[position[str(i)]] for i in lesion_ids]
        out.labels = [int(item["label"]) for item in out.items]
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass(frozen=True)
class CohortSpec:
    """The tests' small embedded cohort: patients that exercise every scanner and the unusual
    patient positions, with a bright marker planted at a known world point (RAS+ mm, near where
    the phantoms' spines lie)."""

    n_patients: int = 4
    seed: int = 3
    # supine, prone, decubitus, feet first
    positions: tuple[str, ...] = ("HFS", "HFP", "HFDL", "FFS")
    vendors: tuple[str, ...] = ("ge", "philips", "siemens", "philips")
    marker_ras: tuple[float, float, float] = (3.3, -41.7, 6.1)


SMALL_COHORT = CohortSpec()


def make_small_cohort(root: Path, spec: CohortSpec = SMALL_COHORT) -> Path:
    """Write the cohort of ``spec`` into ``root`` (``manifest/`` and ``truth/`` inside, a few
    seconds); returns ``root``."""
    from magn_lib.synthetic import make_cohort

    make_cohort(root, n_patients=spec.n_patients, seed=spec.seed, n_jobs=1, progress=False,
                positions=spec.positions, vendors=spec.vendors, marker_ras=spec.marker_ras)
    return root


def sitk_read(folder: Path) -> sitk.Image:
    """A DICOM series folder read by SimpleITK (the independent reference), as float32."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def assert_matches_itk(img: nib.Nifti1Image, folder: Path) -> None:
    """Every ITK voxel centre of ``folder`` (LPS -> RAS) is one of ``img``'s within 0.01 mm,
    with the same intensity."""
    ref = sitk_read(folder)
    ref_data = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)  # ITK array view is [k, j, i]
    assert sorted(ref_data.shape) == sorted(img.shape)
    index = np.indices(ref_data.shape).reshape(3, -1).T.astype(float)
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    lps = index * np.array(ref.GetSpacing()) @ direction.T + np.array(ref.GetOrigin())
    ras = lps * np.array([-1.0, -1.0, 1.0])
    ours = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), ras)).astype(int)
    assert (ours >= 0).all() and (ours < np.array(img.shape)).all()
    linear = np.ravel_multi_index(tuple(ours.T), img.shape)
    assert np.unique(linear).size == linear.size  # a bijection between the grids
    distance = np.linalg.norm(nib.affines.apply_affine(img.affine, ours) - ras, axis=1)
    assert distance.max() < 0.01
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(data[tuple(ours.T)], ref_data.reshape(-1))


def build_crop_cache_of(root: Path, *, n_patients: int, seed: int, crop_size: int,
                        views: Sequence[str] = ("sagittal", "coronal", "axial"), **knobs):
    """Generate an embedded cohort under ``root`` and run ingest, mask transfer and crops on it
    (what notebooks 01-02 do). Returns ``(crop cache, ingest lesions table, ingest patients
    table)``; the benchmarks use it too."""
    from magn_lib.ingest import ingest_cohort
    from magn_lib.layout import RunPaths
    from magn_lib.manifest import load_manifest
    from magn_lib.stages import build_crop_cache, transfer_cohort
    from magn_lib.synthetic import make_cohort

    manifest_dir = make_cohort(root / "cohort", n_patients=n_patients, seed=seed,
                               progress=False, **knobs)
    paths = RunPaths(report_dir=root / "reports", work_dir=root / "work")
    manifest = load_manifest(manifest_dir, views=tuple(views))
    ingest = ingest_cohort(manifest, paths.work_dir, n_jobs=-1, progress=False)
    transfer = transfer_cohort(ingest, progress=False)
    cache = build_crop_cache(ingest, transfer, paths.crop_cache, views=tuple(views),
                             crop_size=crop_size, progress=False)
    read = {"dtype": {"lesion_id": str, "patient_id": str}}
    return (cache, pd.read_csv(paths.ingest_table("lesions"), **read),
            pd.read_csv(paths.ingest_table("patients"), **read))


def make_trained_run(root: Path, *, class_counts: dict[int, tuple[int, int]] | None = None,
                     seed: int = 11, crop_size: int = 32, n_folds: int = 2,
                     configs: Sequence[str] = ("multi-view",), backbone: str = "resnet18",
                     shared_backbone: bool = False, epochs: int = 1, batch_size: int = 4,
                     radiomics: bool = False, cohort_seed: int | None = None):
    """A finished study run, made with the library's stages instead of the notebooks (seconds):
    a simulated cohort under ``root/cohort`` (``class_counts``: ``{label: (patients,
    lesions)}``, default 2 MM patients with 2 lesions and 2 metastasis patients with 3), its
    ingest, mask transfer and crop cache, a tiny
    grid of ``configs`` trained on patient-grouped folds, and the report folder's files that
    ``magn export`` reads (run record, folds, out-of-fold predictions); with ``radiomics``
    also the radiomics baseline's out-of-fold predictions (notebook 04's, on the same folds).
    ``cohort_seed`` (default ``seed``) seeds the simulated cohort only.

    Returns:
        A namespace: ``manifest`` (folder), ``report`` and ``work`` (the run's folders),
        ``paths`` (:class:`~magn_lib.layout.RunPaths`), ``profile``, ``oof`` (predictions).
    """
    import json
    from types import SimpleNamespace

    from magn_lib.config import load_profile
    from magn_lib.crops import read_cache
    from magn_lib.cv import ensure_folds, run_grid
    from magn_lib.data import dataset_factory
    from magn_lib.ingest import ingest_cohort
    from magn_lib.layout import RunPaths
    from magn_lib.manifest import load_manifest
    from magn_lib.report import save_table
    from magn_lib.settings import GridSettings
    from magn_lib.stages import build_crop_cache, transfer_cohort
    from magn_lib.synthetic import make_cohort

    class_counts = class_counts or {1: (2, 2), 0: (2, 3)}
    n_patients = sum(n for n, _ in class_counts.values())
    profile = load_profile("smoke", n_patients=n_patients, seed=seed, crop_size=crop_size,
                           n_folds=n_folds, epochs=epochs, batch_size=batch_size,
                           backbone=backbone, shared_backbone=shared_backbone,
                           n_bootstrap=200, device="cpu", augment=False,
                           keep_weights=list(configs))
    manifest_dir = make_cohort(root / "cohort", n_patients=n_patients,
                               seed=seed if cohort_seed is None else cohort_seed, n_jobs=1,
                               progress=False, class_counts=class_counts)
    paths = RunPaths(report_dir=root / "reports" / "run", work_dir=root / "work" / "run")
    ingest = ingest_cohort(load_manifest(manifest_dir), paths.work_dir, progress=False)
    transfer = transfer_cohort(ingest, progress=False)
    build_crop_cache(ingest, transfer, paths.crop_cache, views=VIEWS, crop_size=crop_size,
                     progress=False)
    cache = read_cache(paths.crop_cache)
    folds = ensure_folds(cache.lesions(), paths.folds_csv, n_splits=n_folds, seed=seed)
    make = dataset_factory(cache, views=VIEWS, augment=False, seed=seed)
    grid = run_grid(make, folds, list(configs), GridSettings.from_profile(profile,
                                                                         track_test=False),
                    paths.grid_dir, progress=False)
    save_table(grid.predictions, paths.oof("magn"))
    if radiomics:
        from magn_lib.radiomics import cross_validate_radiomics, extract_crop_features

        features = {view: extract_crop_features(
            cache.image[view], cache.mask[view], cache.lesion_id,
            settings=profile.radiomics_settings, present=cache.present[view],
            spacing=cache.spacing[view], view=view, n_jobs=1, cache_dir=paths.radiomics_dir,
            progress=False)[0] for view in VIEWS}
        radiomics_oof, _ = cross_validate_radiomics(
            features, folds, classifier=profile.radiomics_classifier,
            top_k=profile.radiomics_top_k, keep=profile.radiomics_keep, seed=profile.seed)
        save_table(radiomics_oof, paths.oof("radiomics"))
    paths.run_manifest.write_text(json.dumps({
        "status": "succeeded", "magn_version": "test", "git": {"commit": None, "dirty": None},
        "parameters": profile.to_dict(),
        "run": {"work_dir": str(paths.work_dir), "embedded_cohort": True},
    }))
    return SimpleNamespace(manifest=manifest_dir, report=paths.report_dir,
                           work=paths.work_dir, paths=paths, profile=profile,
                           oof=grid.predictions)


def edit_dicom(path: Path, **changes: object) -> None:
    """Rewrite one DICOM file with attributes changed (a value of ``None`` deletes one)."""
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


# Attributes that belong to one slice in a classic series and to a frame's functional groups
# in an Enhanced MR object.
_PER_SLICE = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
              "SliceThickness", "RescaleSlope", "RescaleIntercept", "RescaleType",
              "InstanceNumber", "SOPInstanceUID", "SliceLocation", "PixelData",
              "WindowCenter", "WindowWidth", "SpacingBetweenSlices")


def to_enhanced_mr(folder: Path, out_file: Path, *, functional_groups: bool = True) -> Path:
    """Convert a classic single-frame MR series folder into one Enhanced MR (multi-frame) file.

    Frames keep the files' order by name (not the spatial order); each frame's position goes
    to its ``PlanePositionSequence`` and its rescale to ``PixelValueTransformationSequence``
    in ``PerFrameFunctionalGroupsSequence``; pixel spacing, slice thickness and orientation to
    ``SharedFunctionalGroupsSequence`` (DICOM PS3.3 C.7.6.16). With ``functional_groups=False``
    the object has frames but no functional groups (what a broken converter writes).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    first = slices[0]
    ds = Dataset()
    for elem in first:
        if elem.keyword not in _PER_SLICE:
            ds.add(elem)
    sop_uid = generate_uid(entropy_srcs=[str(first.SeriesInstanceUID), "enhanced"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(slices)
    if functional_groups:
        shared, measures, orientation = Dataset(), Dataset(), Dataset()
        measures.PixelSpacing = first.PixelSpacing
        measures.SliceThickness = first.SliceThickness
        orientation.ImageOrientationPatient = first.ImageOrientationPatient
        shared.PixelMeasuresSequence = DicomSequence([measures])
        shared.PlaneOrientationSequence = DicomSequence([orientation])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        frames = []
        for s in slices:
            frame, position, rescale = Dataset(), Dataset(), Dataset()
            position.ImagePositionPatient = s.ImagePositionPatient
            rescale.RescaleSlope = s.get("RescaleSlope", 1)
            rescale.RescaleIntercept = s.get("RescaleIntercept", 0)
            rescale.RescaleType = "US"
            frame.PlanePositionSequence = DicomSequence([position])
            frame.PixelValueTransformationSequence = DicomSequence([rescale])
            frames.append(frame)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_file, enforce_file_format=True)
    return out_file
