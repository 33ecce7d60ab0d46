"""Cohort planning: the knobs of :func:`~magn_lib.synthetic.make_cohort`, its presets (the
``null`` cohort, the second site ``site_b``) and the cohort-level draws (class, demographics,
vertebral site, scanner, position, lesion count of every patient)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS, SITES, SIZE_OFFSET_CM, TABLE1
from magn_lib.synthetic.scanners import POSITION_WEIGHTS, POSITIONS, VENDOR_WEIGHTS, VENDORS

__all__ = ["LABEL_FREE", "Knobs", "PRESETS", "SITE_B", "class_counts", "parse_knobs",
           "plan_cohort", "pooled_table1"]

#: what ``label_independent`` may name: drawn from the pooled distribution of both classes
LABEL_FREE: tuple[str, ...] = ("size", "lesions", "site", "age", "sex")
#: what is label-independent unless the knob says otherwise: everything at separability 0
#: (a true null), else what the images show besides the lesion's appearance (the lesion's
#: size, its patient's other lesions in the neighbouring vertebrae, the spine region) — age
#: and sex then follow the paper's Table 1 by class.
_DEFAULT_LABEL_FREE = ("size", "lesions", "site")
#: the second embedded site ("B", Riverside General Hospital): how it differs from site A (the
#: default knobs, the paper's hospital) on every acquisition and case-mix knob; the table in
#: the package's README.md lists both. Nothing here depends on the label: within the site, the
#: site is no proxy for the class (its prevalence of myeloma differs from site A's by design).
SITE_B: dict[str, Any] = {
    "site_name": "B",
    # scanners site A lacks: 3 T Siemens Skyra, 3 T Canon Vantage Titan, 1.5 T GE SIGNA
    # Explorer (three in four patients at 3 T, against three in ten at site A)
    "vendor_weights": {"siemens_3t": 0.40, "canon": 0.35, "ge_explorer": 0.25},
    # lesion enhancement over its surroundings grows with the field (x 1.3 at 3 T)
    "field_contrast": 0.2,
    # one site protocol on every scanner: thicker slices, wider gaps, coarser pixels
    "slice_thickness_mm": 4.5,
    "slice_gap_mm": 0.9,
    "pixel_mm": 0.9,
    # its PACS stores larger integers (16-bit scanners fill more of their range)
    "intensity_scale": 2.5,
    # more feet-first and prone examinations
    "position_weights": {"HFS": 0.45, "FFS": 0.30, "HFP": 0.10, "FFP": 0.05, "HFDR": 0.05,
                         "HFDL": 0.05},
    # a haematology referral centre: more myeloma, found earlier (smaller lesions)
    "myeloma_fraction": 0.55,
    "lesion_size_scale": 0.75,
}
#: named sets of knobs; knobs given explicitly override the preset's
PRESETS: dict[str, dict[str, Any]] = {
    "null": {"separability": 0.0, "label_independent": LABEL_FREE},
    "site_b": SITE_B,
}


@dataclass(frozen=True)
class Knobs:
    """The options of :func:`~magn_lib.synthetic.make_cohort` (documented there)."""

    separability: float = 1.0
    label_independent: tuple[str, ...] | None = None  # None: see _DEFAULT_LABEL_FREE
    distractors: bool = True
    preset: str | None = None
    class_counts: dict[int, tuple[int, int]] | None = None
    vendors: tuple[str, ...] | None = None
    positions: tuple[str, ...] | None = None
    marker_ras: tuple[float, float, float] | None = None
    noise: bool = True
    # the site: what a second hospital differs by (defaults: site A; the site_b preset: SITE_B)
    site_name: str = "A"
    vendor_weights: dict[str, float] | None = None  # None: VENDOR_WEIGHTS (site A's)
    position_weights: dict[str, float] | None = None  # None: POSITION_WEIGHTS (site A's)
    field_contrast: float = 0.0
    slice_thickness_mm: float | None = None  # None: each scanner's protocol
    slice_gap_mm: float | None = None
    pixel_mm: float | None = None
    intensity_scale: float = 1.0
    myeloma_fraction: float | None = None  # None: the paper's 79 of 217 patients
    lesion_size_scale: float = 1.0
    n_jobs: int = -1
    progress: bool = True
    overwrite: bool = False


def parse_knobs(knobs: Mapping[str, Any]) -> Knobs:
    """Validate and normalise ``make_cohort``'s keyword options."""
    known = {f for f in Knobs.__dataclass_fields__}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise TypeError(f"make_cohort: unknown knob(s) {unknown}; known: {sorted(known)}")
    k = dict(knobs)
    if k.get("preset") is not None:
        if k["preset"] not in PRESETS:
            raise ValueError(f"preset: {k['preset']!r} is not one of {sorted(PRESETS)}")
        k = {**PRESETS[k["preset"]], **k}
    if "separability" in k and not (isinstance(k["separability"], int | float)
                                    and k["separability"] >= 0):
        raise ValueError(f"separability must be a number >= 0, got {k['separability']!r}")
    for name, allowed in (("vendors", VENDORS), ("positions", POSITIONS)):
        if k.get(name) is not None:
            values = (k[name],) if isinstance(k[name], str) else tuple(k[name])
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name}: {bad or values!r} not among {list(allowed)}")
            k[name] = values
    if k.get("label_independent") is not None:
        names = k["label_independent"]
        names = (names,) if isinstance(names, str) else tuple(names)
        if names == ("all",):
            names = LABEL_FREE
        bad = [n for n in names if n not in LABEL_FREE]
        if bad:
            raise ValueError(f"label_independent: {bad} not among {list(LABEL_FREE)} (or 'all')")
        k["label_independent"] = tuple(n for n in LABEL_FREE if n in names)
    if k.get("marker_ras") is not None:
        marker = tuple(float(x) for x in k["marker_ras"])
        if len(marker) != 3:
            raise ValueError("marker_ras must be three world RAS+ coordinates in mm")
        k["marker_ras"] = marker
    _check_site_knobs(k)
    if k.get("class_counts") is not None:
        counts = {int(lab): (int(p), int(les)) for lab, (p, les) in k["class_counts"].items()}
        if set(counts) != {0, 1}:
            raise ValueError("class_counts needs labels 0 and 1: {label: (patients, lesions)}")
        for lab, (p, les) in counts.items():
            if p < 0 or not p <= les <= 3 * p:
                raise ValueError(
                    f"class_counts[{lab}] = ({p}, {les}): each patient has 1-3 lesions"
                )
        k["class_counts"] = counts
    return Knobs(**k)


def _weights(name: str, value: Any, allowed: Sequence[str]) -> dict[str, float]:
    """A ``{category: weight}`` knob checked and normalised to sum 1 (order: ``allowed``)."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{name} must be a non-empty mapping {{name: weight}}, got {value!r}")
    bad = [key for key in value if key not in allowed]
    if bad:
        raise ValueError(f"{name}: {bad} not among {list(allowed)}")
    weights = {key: value[key] for key in allowed if key in value}
    if any(isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0
           for w in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"{name}: weights must be numbers >= 0, not all 0; got {value!r}")
    total = float(sum(weights.values()))
    return {key: float(w) / total for key, w in weights.items()}


def _check_site_knobs(k: dict[str, Any]) -> None:
    """Validate (and normalise in place) the knobs of the site."""
    if not isinstance(k.get("site_name", "A"), str) or not k.get("site_name", "A"):
        raise ValueError(f"site_name must be a non-empty string, got {k['site_name']!r}")
    if k.get("vendor_weights") is not None:
        k["vendor_weights"] = _weights("vendor_weights", k["vendor_weights"], tuple(VENDORS))
    if k.get("position_weights") is not None:
        k["position_weights"] = _weights("position_weights", k["position_weights"], POSITIONS)
    checks = {
        "field_contrast": (lambda v: v > -1 / 1.5, "a number > -0.67 (gain per tesla above 1.5 T)"),
        "slice_thickness_mm": (lambda v: 0.5 <= v <= 10, "null or a thickness in 0.5-10 mm"),
        "slice_gap_mm": (lambda v: 0 <= v <= 5, "null or a gap in 0-5 mm"),
        "pixel_mm": (lambda v: 0.3 <= v <= 2, "null or a pixel size in 0.3-2 mm"),
        "intensity_scale": (lambda v: 0.05 <= v <= 20, "a factor in 0.05-20"),
        "myeloma_fraction": (lambda v: 0 < v < 1, "null or a share in (0, 1)"),
        "lesion_size_scale": (lambda v: 0.3 <= v <= 2, "a factor in 0.3-2"),
    }
    for name, (ok, what) in checks.items():
        value = k.get(name)
        if value is None and name in ("slice_thickness_mm", "slice_gap_mm", "pixel_mm",
                                      "myeloma_fraction"):
            continue
        if name not in k:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            raise ValueError(f"{name} must be {what}, got {value!r}")
        k[name] = float(value)


def label_free(knobs: Knobs) -> tuple[str, ...]:
    """The variables drawn without regard to the label under these knobs."""
    if knobs.label_independent is not None:
        return knobs.label_independent
    free = LABEL_FREE if knobs.separability == 0 else _DEFAULT_LABEL_FREE
    if knobs.class_counts is not None:  # per-class lesion counts asked for: keep them
        free = tuple(n for n in free if n != "lesions")
    return free


def pooled_table1(counts: dict[int, tuple[int, int]] | None = None) -> tuple:
    """Table 1's row for both classes together, in ``TABLE1``'s layout: age mean and SD (of the
    mixture), male and female counts, site counts, size mean and SD (of the mixture)."""
    w = {lab: TABLE1[lab][2] + TABLE1[lab][3] for lab in (0, 1)}
    total = sum(w.values())

    def mixture(i_mean: int, i_sd: int) -> tuple[float, float]:
        mean = sum(w[lab] * TABLE1[lab][i_mean] for lab in (0, 1)) / total
        var = sum(w[lab] * (TABLE1[lab][i_sd] ** 2 + (TABLE1[lab][i_mean] - mean) ** 2)
                  for lab in (0, 1)) / total
        return mean, var ** 0.5

    age_m, age_sd = mixture(0, 1)
    size_m, size_sd = mixture(5, 6)
    sites = tuple(a + b for a, b in zip(TABLE1[0][4], TABLE1[1][4], strict=True))
    return (age_m, age_sd, TABLE1[0][2] + TABLE1[1][2], TABLE1[0][3] + TABLE1[1][3], sites,
            size_m, size_sd)


def class_counts(n_patients: int, knobs: Knobs) -> dict[int, tuple[int, int]]:
    """``{label: (patients, lesions)}``: the knob's, or the paper's proportions (of patients
    with myeloma: the ``myeloma_fraction`` knob's when given; lesions per patient of each
    class: the paper's)."""
    if knobs.class_counts is not None:
        total = sum(p for p, _ in knobs.class_counts.values())
        if total != n_patients:
            raise ValueError(f"class_counts has {total} patients but n_patients={n_patients}")
        return knobs.class_counts
    paper_patients = sum(p for p, _ in PAPER_CLASS_COUNTS.values())
    if knobs.myeloma_fraction is None:
        n_mm = round(n_patients * PAPER_CLASS_COUNTS[1][0] / paper_patients)
    else:
        n_mm = round(n_patients * knobs.myeloma_fraction)
    if n_patients >= 2:
        n_mm = min(max(n_mm, 1), n_patients - 1)
    counts = {}
    for label, n in ((1, n_mm), (0, n_patients - n_mm)):
        p, les = PAPER_CLASS_COUNTS[label]
        counts[label] = (n, min(3 * n, max(n, round(n * les / p))))
    return counts


def _allocate(n: int, weights: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """``n`` category indices in proportion to ``weights`` (largest remainder), shuffled."""
    w = np.asarray(weights, float) / np.sum(weights)
    base = np.floor(w * n).astype(int)
    rest = n - base.sum()
    order = np.argsort(-(w * n - base), kind="stable")
    base[order[:rest]] += 1
    out = np.repeat(np.arange(len(w)), base)
    return rng.permutation(out)


def plan_cohort(n_patients: int, seed: int, knobs: Knobs) -> list[dict[str, Any]]:
    """Cohort-level draws, one dict per patient: ``patient_id, label, age, sex, site,
    n_lesions, size_cm`` (mean, SD of the nominal lesion diameter), ``vendor, position,
    centre`` (the site's name), ``seed_seq`` (the patient's own ``SeedSequence``, from which
    everything else about the patient is drawn, so patients do not depend on each other)."""
    root = np.random.SeedSequence(seed)
    cohort_seq, *patient_seqs = root.spawn(n_patients + 1)
    rng = np.random.default_rng(cohort_seq)
    counts = class_counts(n_patients, knobs)
    labels = rng.permutation(np.repeat([1, 0], [counts[1][0], counts[0][0]]))
    free = label_free(knobs)
    pooled = pooled_table1()
    plans: list[dict[str, Any]] = [{"label": int(lab)} for lab in labels]
    # every variable is drawn per class, or for all patients together from both classes'
    # pooled distribution when it is label-independent (then the class cannot show in it)
    groups = {name: ([np.flatnonzero(labels == lab) for lab in (1, 0)] if name not in free
                     else [np.arange(n_patients)]) for name in LABEL_FREE}

    def row(idx: np.ndarray) -> tuple:
        labs = set(labels[idx].tolist())
        return TABLE1[labs.pop()] if len(labs) == 1 else pooled

    groups = {name: [idx for idx in group if len(idx)] for name, group in groups.items()}

    for idx in groups["sex"]:
        _, _, male, female, *_ = row(idx)
        for i, sx in zip(idx, _allocate(len(idx), (male, female), rng), strict=True):
            plans[i]["sex"] = "MF"[sx]
    for idx in groups["site"]:
        for i, st in zip(idx, _allocate(len(idx), row(idx)[4], rng), strict=True):
            plans[i]["site"] = SITES[st]
    for idx in groups["age"]:
        age_m, age_sd = row(idx)[:2]
        for i, age in zip(idx, np.clip(np.round(rng.normal(age_m, age_sd, len(idx))), 17, 86),
                          strict=True):
            plans[i]["age"] = int(age)
    for idx in groups["size"]:
        size_m, size_sd = row(idx)[5:7]
        scale = knobs.lesion_size_scale
        for i in idx:
            plans[i]["size_cm"] = ((float(size_m + SIZE_OFFSET_CM), float(size_sd))
                                   if scale == 1.0 else
                                   (float((size_m + SIZE_OFFSET_CM) * scale),
                                    float(size_sd * scale)))
    for idx in groups["lesions"]:
        n_les = sum(counts[lab][1] for lab in set(labels[idx].tolist()))
        extra = np.zeros(len(idx), int)
        for _ in range(n_les - len(idx)):  # extra lesions, at most 3 per patient
            open_ = np.flatnonzero(extra < 2)
            extra[rng.choice(open_)] += 1
        for i, e in zip(idx, extra, strict=True):
            plans[i]["n_lesions"] = int(1 + e)
    vendor_weights = VENDOR_WEIGHTS if knobs.vendor_weights is None else knobs.vendor_weights
    vendors = rng.choice(list(vendor_weights), size=n_patients, p=list(vendor_weights.values()))
    position_weights = (POSITION_WEIGHTS if knobs.position_weights is None else
                        [knobs.position_weights.get(p, 0.0) for p in POSITIONS])
    positions = rng.choice(POSITIONS, size=n_patients, p=position_weights)
    for i, plan in enumerate(plans):
        plan["patient_id"] = f"P{i + 1:03d}"
        plan["vendor"] = knobs.vendors[i % len(knobs.vendors)] if knobs.vendors else vendors[i]
        plan["position"] = (knobs.positions[i % len(knobs.positions)] if knobs.positions
                            else str(positions[i]))
        plan["seed_seq"] = patient_seqs[i]
        plan["centre"] = knobs.site_name
        plan["vendor"] = str(plan["vendor"])
    return plans
