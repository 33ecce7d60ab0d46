"""Cohort-level stages after ingest: mask transfer with QC, the crop cache, the inclusion flow.

This is the paper's Fig. 2 applied to a whole cohort after ingest
(:func:`magn_lib.ingest.ingest_cohort`):

- :func:`transfer_cohort` moves every lesion's sagittal mask onto each other view's grid with
  :func:`magn_lib.transfer.transfer_mask`, writes it to the work folder
  (:meth:`magn_lib.layout.WorkPaths.mask`), and measures each transferred mask against the
  sagittal one (volume, centroid). A lesion whose transferred mask is empty or implausibly
  small or large in a view is **flagged with the reason** and left out of the analysis set —
  never silently dropped, never silently kept.
- :func:`compare_with_truth` scores the transferred masks against true masks (the embedded
  cohort's phantom truth): Dice, average symmetric surface distance, 95 % Hausdorff distance.
- :func:`build_crop_cache` cuts the lesion-centred 2.5D crops of every analysed lesion and view
  (:func:`magn_lib.crops.crop_lesion`) into one cache file that training and radiomics read.
- :func:`inclusion_flow` counts patients and lesions per class from the manifest to the
  analysis set (the paper's Fig. 1), and :func:`exclusions` lists every exclusion with its
  reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from magn_lib import __version__
from magn_lib.crops import (
    CropCache,
    LesionCrops,
    crop_lesion,
    display_frame,
    read_cache,
    write_cache,
)
from magn_lib.errors import InputError
from magn_lib.files import write_csv
from magn_lib.ingest import EXCLUSION_COLUMNS, IngestResult, save_nifti
from magn_lib.layout import TRANSFER_TABLES, WorkPaths
from magn_lib.transfer import (
    dice,
    mask_centroid_world,
    mask_volume_mm3,
    surface_distances,
    transfer_mask,
)

__all__ = [
    "QC_COLUMNS",
    "TransferResult",
    "exclusions",
    "inclusion_flow",
    "patient_table",
    "scanner_table",
    "build_crop_cache",
    "compare_with_truth",
    "transfer_cohort",
    "transfer_example",
    "truth_masks",
]

# A transferred mask whose volume is outside this range of the sagittal mask's volume is
# implausible: the lesion is partly outside the target stack, or the geometry is wrong.
PLAUSIBLE_VOLUME_RATIO = (0.25, 4.0)
# ... and so is one whose centroid moved by more than this (mm).
PLAUSIBLE_CENTROID_SHIFT_MM = 10.0
#: Columns of the transfer QC table (one row per lesion and target view).
QC_COLUMNS = ("lesion_id", "patient_id", "label", "view", "vendor", "sagittal_volume_mm3",
              "volume_mm3", "volume_ratio", "centroid_shift_mm", "n_voxels", "flagged", "reason")


@dataclass(frozen=True)
class TransferResult:
    """Outcome of :func:`transfer_cohort`.

    Attributes:
        qc: one row per lesion and target view: ``lesion_id, patient_id, label, view,
            vendor, sagittal_volume_mm3, volume_mm3, volume_ratio, centroid_shift_mm,
            n_voxels, flagged, reason``.
        lesions: the lesions kept for analysis (no flag in any view).
        exclusions: ``EXCLUSION_COLUMNS``; one row per flagged lesion (all its reasons).
        work_dir: the work folder (named by :attr:`paths`): every view's mask of a lesion is
            ``paths.mask(lesion_id, view)``, the sagittal one as ingest wrote it.
    """

    qc: pd.DataFrame
    lesions: pd.DataFrame
    exclusions: pd.DataFrame
    work_dir: Path

    @property
    def paths(self) -> WorkPaths:
        return WorkPaths(self.work_dir)

    @classmethod
    def load(cls, work_dir: str | Path) -> TransferResult:
        """The result of an earlier :func:`transfer_cohort` into ``work_dir``."""
        paths = WorkPaths(Path(work_dir))
        if not paths.transfer_table("lesions").is_file():
            raise FileNotFoundError(
                f"no transfer results in {paths.transfer_dir}: run the cohort notebook (01) or "
                "transfer_cohort"
            )
        ids = {"patient_id": str, "lesion_id": str}
        read = {name: pd.read_csv(paths.transfer_table(name), dtype=ids, keep_default_na=False,
                                  na_values=[""])
                for name in TRANSFER_TABLES}
        read["qc"]["reason"] = read["qc"]["reason"].fillna("")
        read["qc"]["flagged"] = read["qc"]["flagged"].astype(bool)  # typed when empty too
        return cls(**read, work_dir=paths.work_dir)


def _flag(n_voxels: int, ratio: float, shift: float, view: str) -> str:
    if n_voxels == 0:
        return (f"{view} mask is empty after transfer (the lesion lies outside the {view} "
                "stack's field of view, or the geometry is wrong)")
    lo, hi = PLAUSIBLE_VOLUME_RATIO
    if not lo <= ratio <= hi:
        return (f"{view} mask volume is {ratio:.0%} of the sagittal mask's (plausible "
                f"{lo:.0%}–{hi:.0%}): lesion partly outside the {view} stack?")
    if shift > PLAUSIBLE_CENTROID_SHIFT_MM:
        return (f"{view} mask centroid is {shift:.1f} mm from the sagittal mask's "
                f"(> {PLAUSIBLE_CENTROID_SHIFT_MM:g} mm): inconsistent geometry?")
    return ""


def transfer_cohort(
    ingest: IngestResult,
    *,
    views: Sequence[str] = ("coronal", "axial"),
    progress: bool = True,
) -> TransferResult:
    """Transfer every ingested lesion's sagittal mask onto the other views (see module doc).

    Args:
        ingest: the ingest stage's result (volumes and sagittal masks under its work folder).
        views: target views (sagittal is the source and is not transferred).
        progress: show a tqdm bar.
    """
    from magn_lib.progress import tqdm

    vendor = {}
    if not ingest.series.empty and "vendor" in ingest.series:
        sagittal = ingest.series[ingest.series["view"] == "sagittal"]
        vendor = dict(zip(sagittal["patient_id"], sagittal["vendor"], strict=True))
    targets = [v for v in views if v != "sagittal"]
    paths = ingest.paths
    grids: dict[tuple[str, str], nib.Nifti1Image] = {}
    rows = []
    for lesion in tqdm(list(ingest.lesions.itertuples()), desc="transfer", unit="lesion",
                       disable=not progress):
        source = nib.load(paths.mask(lesion.lesion_id, "sagittal"))
        source_volume = mask_volume_mm3(source)
        source_centroid = mask_centroid_world(source)
        for view in targets:
            key = (lesion.patient_id, view)
            if key not in grids:
                grids[key] = nib.load(paths.volume(*key))
            moved = transfer_mask(source, grids[key])
            save_nifti(moved, paths.mask(lesion.lesion_id, view))
            n_voxels = int(np.count_nonzero(np.asanyarray(moved.dataobj)))
            volume = mask_volume_mm3(moved)
            ratio = volume / source_volume if source_volume else float("nan")
            shift = (float(np.linalg.norm(mask_centroid_world(moved) - source_centroid))
                     if n_voxels else float("nan"))
            reason = _flag(n_voxels, ratio, shift, view)
            rows.append({
                "lesion_id": lesion.lesion_id, "patient_id": lesion.patient_id,
                "label": lesion.label, "view": view, "vendor": vendor.get(lesion.patient_id),
                "sagittal_volume_mm3": source_volume, "volume_mm3": volume,
                "volume_ratio": ratio, "centroid_shift_mm": shift, "n_voxels": n_voxels,
                "flagged": bool(reason), "reason": reason,
            })
        # the lesion's volumes stay cached per patient; free them once the patient is done
        grids = {k: v for k, v in grids.items() if k[0] == lesion.patient_id}
    qc = pd.DataFrame(rows, columns=list(QC_COLUMNS))  # no rows when only sagittal is used
    flagged = qc[qc["flagged"].astype(bool)]
    exclusions = pd.DataFrame(
        [
            {"patient_id": pid, "lesion_id": lid, "label": int(group["label"].iloc[0]),
             "stage": "transfer", "reason": "; ".join(group["reason"])}
            for (pid, lid), group in flagged.groupby(["patient_id", "lesion_id"], sort=False)
        ],
        columns=list(EXCLUSION_COLUMNS),
    )
    kept = ingest.lesions[~ingest.lesions["lesion_id"].isin(exclusions["lesion_id"])]
    kept = kept.reset_index(drop=True)
    for name, frame in (("qc", qc), ("exclusions", exclusions), ("lesions", kept)):
        write_csv(frame, paths.transfer_table(name))
    return TransferResult(qc=qc, lesions=kept, exclusions=exclusions, work_dir=ingest.work_dir)


def truth_masks(cohort_dir: str | Path) -> Callable[[str, str], nib.Nifti1Image] | None:
    """For the embedded cohort: ``(lesion_id, view) -> true binary mask`` on that view's grid;
    ``None`` for a cohort without phantom truth (a user's own)."""
    from magn_lib.synthetic import load_truth

    try:
        truth = load_truth(cohort_dir)
    except FileNotFoundError:
        return None
    lesions = truth.lesions.set_index("lesion_id")

    def true_mask(lesion_id: str, view: str) -> nib.Nifti1Image | None:
        if lesion_id not in lesions.index:
            return None
        row = lesions.loc[lesion_id]
        img = nib.load(truth.mask_path(row["patient_id"], view))
        data = np.asanyarray(img.dataobj) == int(row["mask_label"])
        return nib.Nifti1Image(data.astype(np.uint8), img.affine)

    return true_mask


def compare_with_truth(
    result: TransferResult,
    true_mask: Callable[[str, str], nib.Nifti1Image | None],
) -> pd.DataFrame:
    """Score every transferred mask against its true mask on the same grid.

    Args:
        result: the transfer stage's result.
        true_mask: ``(lesion_id, view) -> binary mask image`` on the target grid, or None
            when there is no truth for that lesion.

    Returns:
        ``result.qc`` with ``dice``, ``assd_mm``, ``hd95_mm`` columns added (NaN without truth;
        an empty transferred mask scores Dice 0 and infinite distances).
    """
    scores = []
    for row in result.qc.itertuples():
        truth = true_mask(row.lesion_id, row.view)
        if truth is None:
            scores.append((np.nan, np.nan, np.nan))
            continue
        moved = nib.load(result.paths.mask(row.lesion_id, row.view))
        d = dice(moved, truth)
        surface = surface_distances(moved, truth)
        scores.append((0.0 if np.isnan(d) else d, surface.average_mm, surface.hd95_mm))
    qc = result.qc.copy()
    qc[["dice", "assd_mm", "hd95_mm"]] = np.array(scores, dtype=float).reshape(-1, 3)
    return qc


def build_crop_cache(
    ingest: IngestResult,
    transfer: TransferResult,
    path: str | Path,
    *,
    views: Sequence[str],
    crop_size: int,
    progress: bool = True,
) -> CropCache:
    """Cut every analysed lesion's crops in ``views`` into one cache file (reused if current).

    The cache is rebuilt only when the lesions, views, crop size or any source volume or mask
    changed (a checksum over their cheap signatures is kept in its provenance).

    Returns:
        The :class:`~magn_lib.crops.CropCache` (also written to ``path``).
    """
    from magn_lib.progress import tqdm

    path = Path(path)
    lesions = transfer.lesions
    volumes, masks = ingest.paths, transfer.paths  # one work folder, as transfer_cohort wrote it
    inputs = []
    for lesion in lesions.itertuples():
        for view in views:
            for f in (volumes.volume(lesion.patient_id, view), masks.mask(lesion.lesion_id, view)):
                st = f.stat()
                inputs.append([f.relative_to(ingest.work_dir).as_posix(), st.st_size,
                               st.st_mtime_ns])
    key = {"views": list(views), "crop_size": int(crop_size), "inputs": inputs,
           "magn_version": __version__}
    key_text = json.dumps(key, sort_keys=True)
    if path.is_file():
        try:
            cached = read_cache(path)
        except InputError:  # a cache of an older format: rebuilt below
            cached = None
        if cached is not None and cached.provenance.get("inputs_key") == key_text:
            return cached

    records = []
    for lesion in tqdm(list(lesions.itertuples()), desc="crops", unit="lesion",
                       disable=not progress):
        crops = {}
        for view in views:
            image = nib.load(volumes.volume(lesion.patient_id, view))
            mask = nib.load(masks.mask(lesion.lesion_id, view))
            try:
                crops[view] = crop_lesion(image, mask, view=view, size=crop_size,
                                          lesion_id=lesion.lesion_id,
                                          patient_id=lesion.patient_id)
            except InputError:
                crops[view] = None  # only after a QC flag, which already excluded the lesion
        records.append(LesionCrops(lesion_id=lesion.lesion_id, patient_id=lesion.patient_id,
                                   label=int(lesion.label), crops=crops))
    cache = CropCache.from_lesions(records, views=views, crop_size=crop_size,
                                   provenance={"inputs_key": key_text})
    write_cache(path, cache)
    return cache


def exclusions(*results: IngestResult | TransferResult) -> pd.DataFrame:
    """Every exclusion of the given stages, in stage order (``EXCLUSION_COLUMNS``)."""
    frames = [r.exclusions for r in results if not r.exclusions.empty]
    if not frames:
        return pd.DataFrame(columns=list(EXCLUSION_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(EXCLUSION_COLUMNS)]


def inclusion_flow(
    lesions: pd.DataFrame, ingest: IngestResult, transfer: TransferResult
) -> pd.DataFrame:
    """Patients and lesions per class at each step: manifest, ingested, analysed.

    Args:
        lesions: the manifest's lesion table (``lesion_id, patient_id, label``).

    Returns:
        One row per step with ``patients_mm, lesions_mm, patients_met, lesions_met``
        (MM = label 1, metastasis = label 0) and the totals.
    """
    steps = [
        ("in the manifest", lesions),
        ("DICOM read (ingest)", ingest.lesions),
        ("masks transferred to every view (analysed)", transfer.lesions),
    ]
    rows = []
    for step, table in steps:
        row = {"step": step}
        for label, name in ((1, "mm"), (0, "met")):
            part = table[table["label"].astype(int) == label]
            row[f"patients_{name}"] = part["patient_id"].nunique()
            row[f"lesions_{name}"] = len(part)
        row["patients"] = table["patient_id"].nunique()
        row["lesions"] = len(table)
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_example(
    ingest: IngestResult,
    transfer: TransferResult,
    lesion_id: str,
    *,
    views: Sequence[str],
    crop_size: int,
) -> dict[str, dict[str, np.ndarray]]:
    """One lesion in every view as the paper's Fig. 2 shows it: slice, mask, crop.

    Returns:
        ``{view: {"slice": float32 [H, W], "mask": uint8 [H, W], "crop": float32 [S, S],
        "crop_mask": uint8 [S, S], "box": int [4] (top, left, bottom, right) of the crop in
        the slice}}``, all in the view's display orientation (radiological convention), the
        slice being the one with the largest mask area.
    """
    lesion = ingest.lesions.set_index("lesion_id").loc[lesion_id]
    out = {}
    for view in views:
        image = nib.load(ingest.paths.volume(lesion["patient_id"], view))
        mask = nib.load(transfer.paths.mask(lesion_id, view))
        crop = crop_lesion(image, mask, view=view, size=crop_size, lesion_id=lesion_id)
        frame = display_frame(image.affine, view)
        stack = frame.stack(np.asanyarray(image.dataobj))
        mask_stack = frame.stack(np.asanyarray(mask.dataobj))
        best = int(np.argmax(mask_stack.reshape(len(mask_stack), -1).sum(axis=1)))
        rows, cols = np.nonzero(mask_stack[best])
        top = int(np.floor(rows.mean() + 0.5)) - crop_size // 2
        left = int(np.floor(cols.mean() + 0.5)) - crop_size // 2
        out[view] = {
            "slice": np.asarray(stack[best], dtype=np.float32),
            "mask": np.asarray(mask_stack[best] > 0, dtype=np.uint8),
            "crop": crop.image[1],
            "crop_mask": crop.mask,
            "box": np.array([top, left, top + crop_size, left + crop_size]),
        }
    return out


_SITE_BY_LEVEL = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacrococcygeal"}


def patient_table(patients: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """One row per patient for Table 1: ``patient_id, label, age, sex, site, tumour_size_cm,
    n_lesions``.

    The tumour size of a patient is the largest maximum diameter (cm, sagittal) of its lesions,
    as the paper measures it; the site is the patients table's ``site`` or, when blank, the
    region of the patient's first lesion's ``vertebra`` (C/T/L/S).
    """
    by_patient = lesions.groupby("patient_id", sort=False)
    table = patients[["patient_id"]].copy()
    table["label"] = table["patient_id"].map(by_patient["label"].first()).astype(int)
    table["age"] = pd.to_numeric(patients["age"], errors="coerce").astype(float)
    table["sex"] = patients["sex"]
    site = patients["site"] if "site" in patients else pd.Series(pd.NA, index=patients.index)
    if "vertebra" in lesions:
        first_level = by_patient["vertebra"].first().astype(str).str[:1].str.upper()
        from_level = table["patient_id"].map(first_level).map(_SITE_BY_LEVEL)
        site = site.where(site.notna() & (site.astype(str) != ""), from_level)
    table["site"] = site
    if "size_cm" in lesions:
        sizes = pd.to_numeric(lesions["size_cm"], errors="coerce").groupby(
            lesions["patient_id"]).max()
        table["tumour_size_cm"] = table["patient_id"].map(sizes).astype(float)
    table["n_lesions"] = table["patient_id"].map(by_patient.size()).astype(int)
    return table


def scanner_table(series: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Patients per scanner (vendor and field strength of the sagittal series) and class.

    Returns:
        A crosstab: rows ``"<vendor> <field> T"`` plus ``all``; columns ``MM``, ``metastasis``,
        ``all``.
    """
    sagittal = series[series["view"] == "sagittal"]
    labels = lesions.groupby("patient_id")["label"].first().rename("label").reset_index()
    table = sagittal.merge(labels, on="patient_id")
    field = pd.to_numeric(table["field_strength_t"], errors="coerce")
    scanner = table["vendor"].fillna("unknown") + field.map(
        lambda t: "" if pd.isna(t) else f" {t:g} T")
    cls = table["label"].astype(int).map({1: "MM", 0: "metastasis"})
    return pd.crosstab(scanner.rename("scanner"), cls.rename("class"), margins=True,
                       margins_name="all")
