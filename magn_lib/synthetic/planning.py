"""Cohort planning: the knobs of :func:`~magn_lib.synthetic.make_cohort` and the cohort-level
draws (class, demographics, site, scanner, position, lesion count of every patient)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS, SITES, TABLE1
from magn_lib.synthetic.scanners import POSITION_WEIGHTS, POSITIONS, VENDOR_WEIGHTS, VENDORS

__all__ = ["Knobs", "class_counts", "parse_knobs", "plan_cohort"]


@dataclass(frozen=True)
class Knobs:
    """The options of :func:`~magn_lib.synthetic.make_cohort` (documented there)."""

    separability: float = 1.0
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
    n_lesions, vendor, position, seed_seq`` (the patient's own ``SeedSequence``, from which
    everything else about the patient is drawn, so patients do not depend on each other)."""
    root = np.random.SeedSequence(seed)
    cohort_seq, *patient_seqs = root.spawn(n_patients + 1)
    rng = np.random.default_rng(cohort_seq)
    counts = class_counts(n_patients, knobs)
    labels = rng.permutation(np.repeat([1, 0], [counts[1][0], counts[0][0]]))
    plans: list[dict[str, Any]] = [{} for _ in range(n_patients)]
    for label in (1, 0):
        idx = np.flatnonzero(labels == label)
        n, n_les = counts[label]
        age_m, age_sd, male, female, sites, _, _ = TABLE1[label]
        sex = _allocate(len(idx), (male, female), rng)
        site = _allocate(len(idx), sites, rng)
        ages = np.clip(np.round(rng.normal(age_m, age_sd, len(idx))), 17, 86)
        extra = np.zeros(len(idx), int)
        for _ in range(n_les - n):  # extra lesions, at most 3 per patient
            free = np.flatnonzero(extra < 2)
            extra[rng.choice(free)] += 1
        for j, i in enumerate(idx):
            plans[i].update(label=int(label), age=int(ages[j]), sex="MF"[sex[j]],
                            site=SITES[site[j]], n_lesions=int(1 + extra[j]))
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
