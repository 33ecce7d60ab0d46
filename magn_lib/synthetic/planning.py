"""Cohort planning: the knobs of :func:`~magn_lib.synthetic.make_cohort` and the cohort-level
draws (class, demographics, site, scanner, position, lesion count of every patient)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS, SITES, SIZE_OFFSET_CM, TABLE1
from magn_lib.synthetic.scanners import POSITION_WEIGHTS, POSITIONS, VENDOR_WEIGHTS, VENDORS

__all__ = ["LABEL_FREE", "Knobs", "PRESETS", "class_counts", "parse_knobs", "plan_cohort",
           "pooled_table1"]

#: what ``label_independent`` may name: drawn from the pooled distribution of both classes
LABEL_FREE: tuple[str, ...] = ("size", "lesions", "site", "age", "sex")
#: what is label-independent unless the knob says otherwise: everything at separability 0
#: (a true null), else what the images show besides the lesion's appearance (the lesion's
#: size, its patient's other lesions in the neighbouring vertebrae, the spine region) — age
#: and sex then follow the paper's Table 1 by class.
_DEFAULT_LABEL_FREE = ("size", "lesions", "site")
#: named sets of knobs; knobs given explicitly override the preset's
PRESETS: dict[str, dict[str, Any]] = {
    "null": {"separability": 0.0, "label_independent": LABEL_FREE},
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
    """``{label: (patients, lesions)}``: the knob's, or the paper's proportions."""
    if knobs.class_counts is not None:
        total = sum(p for p, _ in knobs.class_counts.values())
        if total != n_patients:
            raise ValueError(f"class_counts has {total} patients but n_patients={n_patients}")
        return knobs.class_counts
    paper_patients = sum(p for p, _ in PAPER_CLASS_COUNTS.values())
    n_mm = round(n_patients * PAPER_CLASS_COUNTS[1][0] / paper_patients)
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
    seed_seq`` (the patient's own ``SeedSequence``, from which
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
        for i in idx:
            plans[i]["size_cm"] = (float(size_m + SIZE_OFFSET_CM), float(size_sd))
    for idx in groups["lesions"]:
        n_les = sum(counts[lab][1] for lab in set(labels[idx].tolist()))
        extra = np.zeros(len(idx), int)
        for _ in range(n_les - len(idx)):  # extra lesions, at most 3 per patient
            open_ = np.flatnonzero(extra < 2)
            extra[rng.choice(open_)] += 1
        for i, e in zip(idx, extra, strict=True):
            plans[i]["n_lesions"] = int(1 + e)
    vendor_keys = list(VENDOR_WEIGHTS)
    vendors = rng.choice(vendor_keys, size=n_patients, p=list(VENDOR_WEIGHTS.values()))
    positions = rng.choice(POSITIONS, size=n_patients, p=POSITION_WEIGHTS)
    for i, plan in enumerate(plans):
        plan["patient_id"] = f"P{i + 1:03d}"
        plan["vendor"] = knobs.vendors[i % len(knobs.vendors)] if knobs.vendors else vendors[i]
        plan["position"] = (knobs.positions[i % len(knobs.positions)] if knobs.positions
                            else str(positions[i]))
        plan["seed_seq"] = patient_seqs[i]
        plan["vendor"] = str(plan["vendor"])
    return plans
