"""What the embedded cohort imitates: the cohort of Chen et al. 2022 (Front. Oncol.
12:981769), Methods, Table 1 and Table 2. Label 1 = multiple myeloma, 0 = lung-cancer
metastasis."""

from __future__ import annotations

__all__ = ["PAPER_CLASS_COUNTS", "READERS", "SITES", "SIZE_OFFSET_CM", "TABLE1"]

# Methods: patients and lesions per class.
PAPER_CLASS_COUNTS: dict[int, tuple[int, int]] = {1: (79, 81), 0: (138, 188)}
SITES = ("cervical", "thoracic", "lumbar", "sacrococcygeal")
TABLE1 = {
    # label: (age mean, age sd, male count, female count, sites C/T/L/S, size mean cm, size sd)
    1: (58.57, 11.17, 53, 26, (12, 40, 21, 6), 4.03, 1.17),
    0: (56.64, 12.98, 74, 64, (35, 61, 35, 7), 3.85, 1.65),
}
# nominal lesion sizes are offset so that the measured sagittal diameters (which grow with
# cortical expansion and extensions; the same for both classes) follow Table 1
SIZE_OFFSET_CM = -0.2
# Table 2: radiologists' accuracy, AUC and F1 (myeloma positive).
READERS = {"reader1": (0.6544, 0.6417, 0.5562), "reader2": (0.6912, 0.7085, 0.6455)}
