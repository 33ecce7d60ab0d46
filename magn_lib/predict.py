"""Score one new lesion with the trained MAGN models of a finished study run (``magn predict``).

The lesion goes through the same steps as the study's lesions: its DICOM series are read
(:func:`magn_lib.dicom.read_series`), its sagittal mask is transferred to the other views
(:func:`magn_lib.transfer.transfer_mask`), the lesion-centred crops are cut with the run's crop
size (:func:`magn_lib.crops.crop_lesion`), and each cross-validation fold's model of the chosen
configuration scores it. The result is one probability of multiple myeloma per fold model and
their mean. Research use only: the models are those of the run, with the run's limitations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from magn_lib.config import Profile, resolve_path
from magn_lib.crops import CropCache, LesionCrops, crop_lesion
from magn_lib.cv import config_by_name, load_fold_model
from magn_lib.data import CropDataset
from magn_lib.dicom import read_series
from magn_lib.errors import InputError
from magn_lib.layout import ReportPaths, WorkPaths
from magn_lib.settings import NetworkSettings
from magn_lib.train import predict
from magn_lib.transfer import transfer_mask

__all__ = ["predict_lesion"]


def _run_record(run_dir: Path) -> dict:
    record_path = ReportPaths(run_dir).run_manifest
    if not record_path.is_file():
        raise InputError(f"no {record_path.name}: not a finished study run", file=run_dir,
                         hint="run `magn study` first, or give its --out folder")
    record = json.loads(record_path.read_text())
    if record.get("status") != "succeeded":
        raise InputError(f"the study run did not succeed (status {record.get('status')!r})",
                         file=record_path)
    return record


def predict_lesion(
    run_dir: str | PathLike[str],
    *,
    series: Mapping[str, str | PathLike[str]],
    mask: str | PathLike[str],
    mask_label: int = 1,
    config: str = "multi-view+attention",
    patient: str = "new patient",
) -> pd.DataFrame:
    """MM probability of one lesion by every fold model of ``config`` in a finished run.

    Args:
        run_dir: the run's report folder (``reports/<run>``), holding its run manifest.
        series: ``{view: DICOM series folder}`` for every view the configuration reads.
        mask: the lesion mask (NIfTI) on the sagittal series' grid, as for the study.
        mask_label: the lesion's value in ``mask``.
        config: the configuration whose fold models score the lesion.
        patient: a name for the patient in error messages.

    Returns:
        One row per fold model (``fold``, ``probability``) and a last row ``fold = "mean"``
        with their mean; ``call`` is "multiple myeloma" when the probability is >= 0.5, else
        "metastasis".

    Raises:
        InputError: a missing view, an unreadable series, a mask off the sagittal grid, a
            lesion outside a view's stack, or a run without the configuration's models.
    """
    run_dir = resolve_path(run_dir)
    record = _run_record(run_dir)
    params = Profile(**record["parameters"])
    network = NetworkSettings.from_profile(params)
    grid_paths = WorkPaths(resolve_path(record["run"]["work_dir"])).grid
    grid = config_by_name(config)
    missing = [v for v in ("sagittal", *grid.views) if v not in series]
    if missing:
        raise InputError(f"no series given for view(s) {', '.join(dict.fromkeys(missing))}",
                         patient=patient, hint="give --sagittal, --coronal and --axial")
    volumes = {view: read_series(series[view], patient=patient)
               for view in dict.fromkeys(("sagittal", *grid.views))}
    drawn = nib.load(resolve_path(mask))
    sagittal = volumes["sagittal"]
    data = np.asanyarray(drawn.dataobj)
    if data.shape[:3] != sagittal.shape[:3] or not np.allclose(drawn.affine, sagittal.affine,
                                                                atol=0.05):
        raise InputError("the mask is not on the sagittal series' grid", patient=patient,
                         file=mask, hint="save the mask on the converted sagittal series")
    lesion = nib.Nifti1Image((np.rint(data) == mask_label).astype(np.uint8), sagittal.affine)
    if not np.asanyarray(lesion.dataobj).any():
        raise InputError(f"the mask holds no voxel of label {mask_label}", patient=patient,
                         file=mask)
    crops = {}
    for view in grid.views:
        view_mask = lesion if view == "sagittal" else transfer_mask(lesion, volumes[view])
        crops[view] = crop_lesion(volumes[view], view_mask, view=view, size=params.crop_size,
                                  lesion_id="new", patient_id=patient)
    cache = CropCache.from_lesions(
        [LesionCrops(lesion_id="new", patient_id=patient, label=0, crops=crops)],
        views=grid.views, crop_size=params.crop_size)
    dataset = CropDataset(cache, views=grid.views)
    folds = grid_paths.trained_folds(grid.name)
    if not folds:
        raise InputError(f"the run kept no trained models of {grid.name}",
                         file=grid_paths.config_dir(grid.name),
                         hint="the study keeps the multi-view models; choose one of those")
    rows = []
    for fold in folds:
        model = load_fold_model(grid_paths.root, grid, fold, network)
        rows.append({"fold": str(fold),
                     "probability": float(predict(model, dataset)["probability"].iloc[0])})
    table = pd.DataFrame(rows)
    table.loc[len(table)] = {"fold": "mean", "probability": table["probability"].mean()}
    table["call"] = np.where(table["probability"] >= 0.5, "multiple myeloma", "metastasis")
    return table
