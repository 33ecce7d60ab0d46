"""Writing a whole cohort: plan, patients (in parallel), manifests, reader calls and truth."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magn_lib.files import write_csv, write_json
from magn_lib.synthetic.patient import generate_patient
from magn_lib.synthetic.planning import parse_knobs, plan_cohort
from magn_lib.synthetic.readers import simulate_readers

__all__ = ["PHANTOM_VERSION", "make_cohort"]

#: the generative model's version: a cohort of another version is never reused
PHANTOM_VERSION = 2


def make_cohort(out_dir: str | PathLike[str], *, n_patients: int, seed: int, **knobs: Any) -> Path:
    """Write the embedded synthetic cohort and return its manifest folder.

    Args:
        out_dir: folder to create; receives ``manifest/`` (what the pipeline reads through
            :func:`magn_lib.manifest.load_manifest`) and ``truth/`` (for checks only).
        n_patients: number of patients (``smoke`` 12, ``demo`` 60, ``paper`` 217).
        seed: the cohort's seed; the same seed and knobs give byte-identical files.
        **knobs:
            separability (float, default 1.0): class signal strength in the lesions'
                structure (rim vs mottling, margin); 0 = none (a true null: with the default
                ``label_independent`` nothing else depends on the label either).
            label_independent (sequence of "size", "lesions", "site", "age", "sex", or
                "all"): drawn for all patients from both classes' pooled distribution
                instead of by class. Default: all at separability 0; else size, lesions
                per patient and site (what the images show), age and sex by class as in the
                paper's Table 1 (lesions per patient by class when ``class_counts`` is given).
            preset ("null" | "site_b"): a named set of knobs; explicit knobs override it.
                "null": ``separability=0, label_independent="all"``. "site_b": the second
                embedded site (``planning.SITE_B``; table "knob | site A | site B" in the
                package's README.md), which differs from site A (the default knobs) in every
                site knob below.
            distractors (bool, default True): label-independent marrow variation, the
                basivertebral vein and unmasked lesion-like foci of either class and
                haemangioma-like foci in other vertebrae.
            class_counts ({label: (patients, lesions)}): per-class counts; by default the
                paper's proportions (79/81 myeloma, 138/188 metastasis for 217 patients).
            vendors, positions (sequence of str): cycle these scanners (``VENDORS`` keys) or
                patient positions (``POSITIONS``) over the patients instead of drawing them.
            marker_ras ((x, y, z) world RAS+ mm): plant a bright point there in every patient
                (each stack is shifted, never rotated, to contain it).
            site_name (str, default "A"): the manifest's ``centre`` column (patients.csv).
            vendor_weights ({VENDORS key: weight}): the site's scanner mix, drawn per patient
                (default site A's ``scanners.VENDOR_WEIGHTS``: the paper's three scanners).
                Field strength, noise, fat suppression, stored bits and DICOM habits follow
                the scanner.
            field_contrast (float, default 0): every lesion's enhancement is multiplied by
                ``1 + field_contrast * (field strength - 1.5 T)`` (0: the same at any field).
            slice_thickness_mm, slice_gap_mm, pixel_mm (float, default None: each scanner's
                protocol): the site's protocol for every series of every scanner (rows and
                columns follow the pixel size, so each series keeps its field of view).
            intensity_scale (float, default 1): factor on the scanners' stored-integer target
                (the stored 99.5th percentile; the scanner's bit depth still caps it).
            position_weights ({POSITIONS value: weight}): patient positions drawn per patient
                (default site A's ``scanners.POSITION_WEIGHTS``).
            myeloma_fraction (float in (0, 1), default None: the paper's 79 of 217): share of
                patients with myeloma (lesions per patient of each class: the paper's).
            lesion_size_scale (float, default 1): factor on the mean and SD of the nominal
                lesion diameter.
            noise (bool, default True): Rician noise; n_jobs (int, default -1): parallel
                patients (joblib; results do not depend on it); progress (bool): tqdm bar;
                overwrite (bool): replace an existing cohort in ``out_dir``.

        The generative model (what depends on the label and what does not) is tabulated in
        the package's ``README.md``.

    Returns:
        The manifest folder ``out_dir/manifest``. A complete cohort already in ``out_dir`` made
        with the same ``n_patients``, ``seed`` and knobs is reused as it is (resume).

    Raises:
        FileExistsError: ``out_dir`` holds a cohort made with other parameters and
            ``overwrite`` is false.
        TypeError, ValueError: unknown knob or bad value.
    """
    from joblib import Parallel, delayed

    from magn_lib.progress import tqdm

    if isinstance(n_patients, bool) or not isinstance(n_patients, int) or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    opts = parse_knobs(knobs)
    out = Path(out_dir)
    manifest_dir, truth_dir = out / "manifest", out / "truth"
    recipe = {"n_patients": n_patients, "seed": seed, "knobs": _recipe_knobs(knobs),
              "phantom": PHANTOM_VERSION}
    stamp = truth_dir / "truth.json"
    if stamp.is_file() and not opts.overwrite:
        with open(stamp) as f:
            found = json.load(f)
        if {k: found.get(k) for k in recipe} == recipe:
            return manifest_dir  # already generated with these parameters: resume
        found = {k: found.get(k) for k in recipe}
        raise FileExistsError(f"{out} holds a cohort made with other parameters ({found}); "
                              "pass overwrite=True to replace it")
    # no completed cohort here (or overwrite): clear what a previous attempt left
    shutil.rmtree(manifest_dir, ignore_errors=True)
    shutil.rmtree(truth_dir, ignore_errors=True)
    manifest_dir.mkdir(parents=True)
    truth_dir.mkdir(parents=True)
    plans = plan_cohort(n_patients, seed, opts)
    jobs = (delayed(generate_patient)(plan, manifest_dir, truth_dir, opts) for plan in plans)
    n_jobs = 1 if n_patients == 1 else opts.n_jobs
    results = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(jobs), total=n_patients,
                        desc="generating cohort", unit="patient", disable=not opts.progress))
    patients = pd.DataFrame([r["patient"] for r in results])
    lesions = pd.DataFrame([les for r in results for les in r["lesions"]])
    cohort_rng = np.random.default_rng(np.random.SeedSequence([seed, 7331]))
    readers = simulate_readers(lesions, cohort_rng)
    # the pipeline's manifest (data_manifest schema)
    write_csv(patients[["patient_id", "age", "sex", "site", "centre"]],
              manifest_dir / "patients.csv")
    lesions_out = lesions[["lesion_id", "patient_id", "label"]].copy()
    lesions_out["mask"] = [next(r["mask"] for r in results if r["patient"]["patient_id"] == p)
                           for p in lesions["patient_id"]]
    lesions_out["mask_label"] = lesions["mask_label"]
    lesions_out["vertebra"] = lesions["vertebra"]
    lesions_out["size_cm"] = lesions["size_cm"]
    write_csv(lesions_out, manifest_dir / "lesions.csv")
    write_csv(pd.DataFrame([s for r in results for s in r["series"]]), manifest_dir / "series.csv")
    write_csv(readers, manifest_dir / "readers.csv")
    # truth (never read by the pipeline)
    write_csv(patients, truth_dir / "patients.csv")
    write_csv(lesions, truth_dir / "lesions.csv")
    write_csv(pd.DataFrame([r["identity"] for r in results]), truth_dir / "identity.csv")
    write_csv(pd.DataFrame([s for r in results for s in r["truth_series"]]),
              truth_dir / "series.csv")
    # written last: its presence marks a complete cohort
    write_json(stamp, {**recipe,
                       "coordinate_frame": "world RAS+ mm (NIfTI); DICOM tags are LPS",
                       "mask_convention": "data[i=DICOM column, j=row, k=slice along row x col]"})
    return manifest_dir


def _recipe_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs that change the cohort, JSON-normalised (order-insensitive keys)."""
    out = {}
    for key in sorted(knobs):
        if key in ("progress", "n_jobs", "overwrite"):
            continue
        value = knobs[key]
        if isinstance(value, Mapping):  # class_counts {label: (p, l)}, {name: weight}
            value = {str(k): list(v) if isinstance(v, tuple | list) else v
                     for k, v in sorted(value.items())}
        elif isinstance(value, tuple | list) or hasattr(value, "tolist"):
            value = [float(x) if key == "marker_ras" else x for x in np.asarray(value).tolist()]
        out[key] = value
    return json.loads(json.dumps(out))
