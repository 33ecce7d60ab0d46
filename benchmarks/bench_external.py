"""External validation invents no performance (slow): a site without signal gives AUC 0.5.

    python -m benchmarks external                                  # 5 seeds, 30 patients each
    MAGN_EXTERNAL_SEEDS=3 MAGN_EXTERNAL_N=20 python -m benchmarks external

A small MAGN grid and its radiomics baseline are trained on a simulated site A with signal
(the library's stages, as ``tests.helpers.make_trained_run`` runs them) and exported once; then
for each seed a simulated site B with ``separability: 0`` (the ``site_b`` preset where this
checkout has it, else the default site; nothing in the images depends on the label) is scored by
``magn_lib.external.validate_external``. Target (issue 13): the external AUC averaged over the
seeds lies in 0.5 ± 0.1, for MAGN and for the frozen radiomics pipeline.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result
from tests.helpers import make_trained_run

TOLERANCE = 0.1


def _site_b(out: Path, n_patients: int, seed: int) -> tuple[Path, str]:
    from magn_lib.synthetic import make_cohort

    try:
        return make_cohort(out, n_patients=n_patients, seed=seed, preset="site_b",
                           separability=0.0, progress=False), "site_b preset"
    except (TypeError, ValueError):  # a checkout without the second site's preset
        return make_cohort(out, n_patients=n_patients, seed=seed, separability=0.0,
                           progress=False), "default site (no site_b preset here)"


def external_aucs(n_seeds: int, n_patients: int, tmp: Path) -> tuple[dict[str, list[float]],
                                                                       str, float]:
    """External AUC of each frozen method on ``n_seeds`` null sites B; the site used; seconds."""
    from magn_lib.bundle import export_bundle, load_bundle
    from magn_lib.external import load_external, validate_external

    start = time.perf_counter()
    run = make_trained_run(tmp / "site_a", crop_size=48, class_counts={1: (5, 8), 0: (5, 8)},
                           epochs=2, shared_backbone=True, radiomics=True)
    bundle = load_bundle(export_bundle(run.report, tmp / "site_a.magn"))
    aucs: dict[str, list[float]] = {"magn": [], "radiomics": []}
    which = ""
    for seed in range(1, n_seeds + 1):
        manifest, which = _site_b(tmp / f"site_b_{seed}", n_patients, 1000 + seed)
        result = load_external(validate_external(bundle, manifest, tmp / f"validation_{seed}",
                                                 n_resamples=200, seed=seed, n_jobs=-1))
        for method in aucs:
            entry = result.metrics["methods"].get(method)
            if entry is not None and entry["auc"]["estimate"] is not None:
                aucs[method].append(float(entry["auc"]["estimate"]))
        print(f"  seed {1000 + seed}: " + ", ".join(f"{m} AUC {v[-1]:.3f}"
                                                    for m, v in aucs.items() if v), flush=True)
    return aucs, which, time.perf_counter() - start


def run() -> list[Result]:
    n_seeds = int(os.environ.get("MAGN_EXTERNAL_SEEDS", "5"))
    n_patients = int(os.environ.get("MAGN_EXTERNAL_N", "30"))
    with tempfile.TemporaryDirectory() as tmp:
        aucs, which, seconds = external_aucs(n_seeds, n_patients, Path(tmp))
    results = []
    for method, values in aucs.items():
        if not values:
            continue
        mean = float(np.mean(values))
        results.append(Result(
            f"{method}: |mean external AUC - 0.5| at a site B without signal "
            f"(separability 0, {which}, {len(values)} seeds x {n_patients} patients)",
            abs(mean - 0.5), "tolerance", TOLERANCE, unit="", target=1.0,
            note=f"mean AUC {mean:.3f} (seeds: {', '.join(f'{v:.2f}' for v in values)}); "
                 f"{seconds:.0f} s"))
    return results
