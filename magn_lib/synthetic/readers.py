"""Simulated readers: two radiologists' calls and confidences on every lesion of the cohort.

The simulated readers are not fitted to the cohort they read. Each one is set by documented
parameters (:class:`ReaderModel`): a sensitivity and a specificity for myeloma (MM, label 1),
derived once, in closed form, from the paper's Table 2, and a noisy latent read drawn for every
lesion with those operating characteristics *in expectation*. The realised accuracy on a cohort
therefore varies from cohort to cohort like a real reader's would; nothing here looks at the
realised cohort's labels to hit a number.

Latent read (equal-variance binormal model). For reader ``r`` and lesion ``i`` of class ``y``::

    z = d * y + e,   e ~ N(0, 1),   call = 1{z >= t}
    t = Phi^-1(specificity),   d = Phi^-1(sensitivity) + Phi^-1(specificity)

so ``P(call = 1 | MM) = sensitivity`` and ``P(call = 0 | metastasis) = specificity`` exactly,
and the AUC of the latent read is ``Phi(d / sqrt 2)``. The error ``e`` is shared in part: a
lesion-level term common to both readers (``shared``: some lesions are hard for everyone) that is
itself partly common to the lesions of one patient (``patient_share``), plus the reader's own
noise, each scaled so that ``e`` stays N(0, 1) (the operating point does not move). Confidence
1-5 comes from the distance ``|z - t|`` by fixed cut points (``CONFIDENCE_CUTS``).

The readers see nothing of the images: their calls depend on the true label and on noise only,
so a cohort with ``separability: 0`` (no class signal in the images) still has informative
simulated readers. Every page that shows them calls them simulated.

Deriving the operating point from the paper (Chen et al. 2022, Table 2; MM prevalence
``pi = 81 / 269`` lesions). For a binary call the AUC is ``(sensitivity + specificity) / 2`` and
the accuracy ``pi * sensitivity + (1 - pi) * specificity``; solving the two::

    sensitivity = (accuracy - 2 (1 - pi) AUC) / (2 pi - 1)
    specificity = 2 AUC - sensitivity

The paper's F1 is not used: for a binary call its three numbers are not jointly consistent (F1 at
the operating point from accuracy and AUC is 0.515 and 0.595 for readers 1 and 2 against the
printed 0.556 and 0.646); accuracy and AUC are the numbers the comparisons rest on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import norm

from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS, READERS

__all__ = [
    "CONFIDENCE_CUTS",
    "READER_MODELS",
    "ReaderModel",
    "operating_point",
    "simulate_readers",
]

# |z - t| (latent SD units) at which confidence steps from 1 to 2, ..., 4 to 5: an unsure call
# (confidence 1) lies within a quarter SD of the reader's threshold
CONFIDENCE_CUTS: tuple[float, float, float, float] = (0.25, 0.5, 1.0, 1.5)


def operating_point(accuracy: float, auc_call: float, prevalence: float) -> tuple[float, float]:
    """Sensitivity and specificity of a binary call with the given accuracy and AUC.

    Closed form (module docstring): ``auc_call = (se + sp) / 2`` and
    ``accuracy = prevalence * se + (1 - prevalence) * sp``.

    Args:
        accuracy: share of cases called correctly, in (0, 1).
        auc_call: AUC of the binary call, in (0.5, 1).
        prevalence: share of positives (MM) among the cases the figures come from; not 0.5
            (there accuracy and AUC coincide and do not fix the operating point).

    Returns:
        ``(sensitivity, specificity)``, both in [0, 1].

    Raises:
        ValueError: prevalence 0.5, or figures that no operating point in [0, 1]^2 can give.
    """
    if abs(2.0 * prevalence - 1.0) < 1e-9:
        raise ValueError("at prevalence 0.5 accuracy equals the call's AUC: give se and sp")
    se = (accuracy - 2.0 * (1.0 - prevalence) * auc_call) / (2.0 * prevalence - 1.0)
    sp = 2.0 * auc_call - se
    if not (0.0 <= se <= 1.0 and 0.0 <= sp <= 1.0):
        raise ValueError(f"accuracy {accuracy} and AUC {auc_call} at prevalence {prevalence} "
                         f"need sensitivity {se:.3f}, specificity {sp:.3f}: outside [0, 1]")
    return float(se), float(sp)


@dataclass(frozen=True)
class ReaderModel:
    """One simulated reader's documented parameters.

    Attributes:
        sensitivity: P(call MM | MM), in (0, 1).
        specificity: P(call metastasis | metastasis), in (0, 1).
        shared: share of the latent error variance common to all readers on a lesion, [0, 1).
        patient_share: share of that common part common to all lesions of a patient, [0, 1].
    """

    sensitivity: float
    specificity: float
    shared: float = 0.3
    patient_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("sensitivity", "specificity"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if not 0.0 <= self.shared < 1.0 or not 0.0 <= self.patient_share <= 1.0:
            raise ValueError("shared must be in [0, 1) and patient_share in [0, 1]")

    @property
    def threshold(self) -> float:
        """``t = Phi^-1(specificity)``: the call is MM when the latent read is >= t."""
        return float(ndtri(self.specificity))

    @property
    def separation(self) -> float:
        """``d = Phi^-1(sensitivity) + Phi^-1(specificity)``: MM mean of the latent read."""
        return float(ndtri(self.sensitivity) + ndtri(self.specificity))

    @property
    def auc_latent(self) -> float:
        """AUC of the latent read, ``Phi(d / sqrt 2)`` (the call + confidence score is close)."""
        return float(norm.cdf(self.separation / math.sqrt(2.0)))


def _paper_models() -> dict[str, ReaderModel]:
    n_mm = PAPER_CLASS_COUNTS[1][1]
    prevalence = n_mm / (n_mm + PAPER_CLASS_COUNTS[0][1])
    out = {}
    for reader, (accuracy, auc, _f1) in READERS.items():
        se, sp = operating_point(accuracy, auc, prevalence)
        out[reader] = ReaderModel(sensitivity=se, specificity=sp)
    return out


# reader1: sensitivity 0.610, specificity 0.674; reader2: 0.752, 0.665 (from the paper's accuracy
# and AUC at its lesion prevalence, see the module docstring)
READER_MODELS: Mapping[str, ReaderModel] = _paper_models()


def simulate_readers(
    lesions: pd.DataFrame,
    rng: np.random.Generator,
    *,
    models: Mapping[str, ReaderModel] | None = None,
) -> pd.DataFrame:
    """Simulated readers' calls (1 = myeloma) and 1-5 confidence for every lesion.

    Args:
        lesions: one row per lesion with ``lesion_id, patient_id, label`` (0/1).
        rng: the generator every draw comes from (the cohort's seed fixes the reads).
        models: reader name -> :class:`ReaderModel`; default :data:`READER_MODELS`.

    Returns:
        ``lesion_id, patient_id, reader, call, confidence``, one row per reader and lesion,
        readers in the order of ``models``.
    """
    models = READER_MODELS if models is None else models
    y = lesions["label"].to_numpy(np.int64)
    n = len(y)
    patient_code, patients = pd.factorize(lesions["patient_id"].astype(str))
    # the common error terms: one per patient and one per lesion, drawn once for all readers
    per_patient = rng.standard_normal(len(patients))[patient_code]
    per_lesion = rng.standard_normal(n)
    rows = []
    for reader, model in models.items():
        common = (math.sqrt(model.patient_share) * per_patient
                  + math.sqrt(1.0 - model.patient_share) * per_lesion)
        error = (math.sqrt(model.shared) * common
                 + math.sqrt(1.0 - model.shared) * rng.standard_normal(n))
        z = model.separation * y + error
        call = (z >= model.threshold).astype(np.int64)
        confidence = 1 + np.searchsorted(CONFIDENCE_CUTS, np.abs(z - model.threshold),
                                         side="right")
        rows.append(pd.DataFrame({
            "lesion_id": lesions["lesion_id"].to_numpy(),
            "patient_id": lesions["patient_id"].to_numpy(), "reader": reader,
            "call": call, "confidence": confidence.astype(np.int64),
        }))
    columns = ["lesion_id", "patient_id", "reader", "call", "confidence"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)[columns]
