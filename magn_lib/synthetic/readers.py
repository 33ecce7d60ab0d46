"""Simulated radiologists: two readers' calls and confidences on every lesion of the cohort."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import ndtri

from magn_lib.synthetic.paper import READERS

__all__ = ["simulate_readers"]


def simulate_readers(lesions: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Two radiologists' calls (1 = myeloma) and 1-5 confidence per lesion.

    Each reader's latent score is ``mu * (y - 1/2) + 0.5 * a + noise`` (unit variance within a
    class), with ``a`` the lesion's standardised myeloma-likeness in the images, so readers err
    on atypical lesions; ``mu`` gives the paper's AUC (``AUC = Phi(mu / sqrt 2)``) and the
    threshold is set on the cohort to come closest to the paper's accuracy (then F1; Table 2).

    Args:
        lesions: one row per lesion with ``lesion_id, patient_id, label,
            metastasis_likeness``.

    Returns:
        ``lesion_id, patient_id, reader, call, confidence``, one row per reader and lesion.
    """
    y = lesions["label"].to_numpy()
    a = -lesions["metastasis_likeness"].to_numpy(float)
    for label in (0, 1):
        sel = y == label
        if sel.sum() > 1:
            a[sel] = (a[sel] - a[sel].mean()) / (a[sel].std() + 1e-9)
        else:
            a[sel] = 0.0
    rows = []
    for reader, (acc_t, auc_t, f1_t) in READERS.items():
        mu = math.sqrt(2) * float(ndtri(auc_t))
        z = mu * (y - 0.5) + 0.5 * a + math.sqrt(1 - 0.25) * rng.standard_normal(len(y))
        best, best_cost = 0.0, math.inf
        for t in np.unique(np.r_[z, z.max() + 1]):
            call = z >= t
            acc = np.mean(call == (y == 1))
            tp = np.sum(call & (y == 1))
            f1 = 2 * tp / (call.sum() + (y == 1).sum()) if (call.sum() + (y == 1).sum()) else 0.0
            cost = abs(acc - acc_t) + 0.01 * abs(f1 - f1_t)  # accuracy first, then F1
            if cost < best_cost:
                best, best_cost = float(t), cost
        call = (z >= best).astype(int)
        margin = np.abs(z - best)
        cuts = np.quantile(margin, [0.2, 0.4, 0.6, 0.8]) if len(margin) else []
        confidence = 1 + np.searchsorted(cuts, margin, side="right")
        for lid, pid, c, conf in zip(lesions["lesion_id"], lesions["patient_id"], call,
                                     confidence, strict=True):
            rows.append({"lesion_id": lid, "patient_id": pid, "reader": reader, "call": int(c),
                         "confidence": int(conf)})
    return pd.DataFrame(rows)
