"""Reading back what the generator knows and the pipeline must not see (``truth/``)."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import pandas as pd

__all__ = ["Truth", "load_truth"]


@dataclass(frozen=True)
class Truth:
    """What the generator knows and the pipeline must not see.

    Attributes:
        root: the ``truth/`` folder.
        patients: per patient: label, demographics, scanner, position, phantom parameters.
        lesions: per lesion: label, mask label, pattern, irregularity, involvement, latent
            metastasis-likeness, nominal and measured size, centre in world RAS+ mm.
        identity: the identity planted in each patient's DICOM headers.
        series: per patient and view: folder, true-mask path (relative to the cohort folder),
            grid, tilt, RAS+ affine (JSON).
    """

    root: Path
    patients: pd.DataFrame
    lesions: pd.DataFrame
    identity: pd.DataFrame
    series: pd.DataFrame

    def mask_path(self, patient_id: str, view: str) -> Path:
        """The true lesion mask of ``view`` (multi-label, ``mask_label`` per lesion)."""
        return self.root / "masks" / f"{patient_id}_{view}.nii.gz"

    def planted_strings(self) -> set[str]:
        """Every planted identity value (and the name's parts), to search outputs for leaks."""
        out: set[str] = set()
        for _, row in self.identity.drop(columns="patient_id").iterrows():
            for value in row.astype(str):
                out.add(value)
                if "^" in value:
                    out.update(p for p in value.split("^") if len(p) >= 5)
                    out.add(value.replace("^", " "))
        return out


def load_truth(cohort_dir: str | PathLike[str]) -> Truth:
    """Load the truth of a cohort written by :func:`~magn_lib.synthetic.make_cohort`.

    Args:
        cohort_dir: the ``out_dir`` given to ``make_cohort``, or its manifest folder.
    """
    path = Path(cohort_dir)
    root = path / "truth" if (path / "truth").is_dir() else path.parent / "truth"
    if not (root / "truth.json").is_file():
        raise FileNotFoundError(f"no truth/truth.json under {path} or its parent")
    read = {"dtype": {"patient_id": str}, "keep_default_na": False}
    return Truth(
        root=root,
        patients=pd.read_csv(root / "patients.csv", **read),
        lesions=pd.read_csv(root / "lesions.csv", **read),
        identity=pd.read_csv(root / "identity.csv", dtype=str, keep_default_na=False),
        series=pd.read_csv(root / "series.csv", **read),
    )
