"""A tiny embedded cohort shared by the tests of one process (generated once, a few seconds).

Four patients that exercise every scanner and the unusual patient positions, with a bright
marker planted at a known world point.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

MARKER_RAS = (3.3, -41.7, 6.1)  # world RAS+ mm, near where the phantoms' spines lie
POSITIONS = ("HFS", "HFP", "HFDL", "FFS")  # supine, prone, decubitus, feet first
VENDORS = ("ge", "philips", "siemens", "philips")
N_PATIENTS = 4
SEED = 3


@functools.lru_cache(maxsize=1)
def small_cohort() -> Path:
    """The cohort folder (``manifest/`` and ``truth/`` inside); removed at exit."""
    from magn_lib.synthetic import make_cohort

    root = Path(tempfile.mkdtemp(prefix="magn-cohort-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    make_cohort(root, n_patients=N_PATIENTS, seed=SEED, n_jobs=1, progress=False,
                positions=POSITIONS, vendors=VENDORS, marker_ras=MARKER_RAS)
    return root
