"""The embedded cohort: a synthetic multi-vendor spine CE-T1 MRI study with known truth.

Each patient is one continuous 3D phantom in world coordinates (millimetres): a curved spine
segment (vertebral bodies with cortical rim and marrow, discs, neural arches with spinous and
transverse processes, canal and cord, paraspinal muscles, subcutaneous fat, lungs or psoas and
aorta) with fat-suppressed post-contrast T1 intensities, and 1-3 lesions in vertebral bodies.
Three DICOM series (sagittal, coronal and an oblique axial stack following the index
vertebra's endplate) are rendered by sampling that same phantom at each series' voxel centres,
averaged over the slice profile, so the views are geometrically consistent the way a real exam
is. The cohort imitates the study of Chen et al. 2022 (Front. Oncol. 12:981769): its three
scanners (1.5 T Siemens, 1.5 T GE, 3.0 T Philips), its Table 1 (age, sex, vertebral site,
tumour size by class) and its class counts; two simulated readers have the operating point
(sensitivity, specificity) that the paper's two radiologists' accuracy and AUC imply, without
looking at the realised cohort (``readers``). That is site A; ``preset="site_b"`` writes a
second, simulated hospital that differs in its scanners (3.0 T Siemens, 3.0 T Canon, 1.5 T GE),
field contrast, protocol, stored scaling, patient positions, prevalence and lesion sizes (the
package's ``README.md`` tabulates both sites); the manifest's ``centre`` column names the site.

Coordinate frames: the phantom is defined in the DICOM patient frame (LPS, mm), which is what
ImagePositionPatient and ImageOrientationPatient are written in; everything this module
reports (truth lesion centres, mask affines, the ``marker_ras`` knob) is world RAS+ mm, the
NIfTI convention, ``ras = diag(-1, -1, 1) @ lps``.

Mask convention (what a correct DICOM-to-NIfTI conversion of the sagittal series gives, and what
ITK-SNAP saves on it): data ``[i, j, k]`` with ``i`` = DICOM column index, ``j`` = row index,
``k`` = slice index in order of increasing position along ``row cosines x column cosines``;
the affine maps ``(i, j, k)`` to RAS+ mm. Label value ``n`` marks the patient's lesion ``n``.

Layout written by :func:`make_cohort`::

    out_dir/manifest/   patients.csv lesions.csv series.csv readers.csv   (data_manifest schema)
                        dicom/<patient>/<series>/*.dcm   masks/<patient>_sagittal.nii.gz
    out_dir/truth/      truth.json  identity.csv  lesions.csv  series.csv
                        masks/<patient>_{sagittal,coronal,axial}.nii.gz   (checks only)

Modules: ``planning`` (knobs, cohort-level draws), ``anatomy`` (the curved spine and its
tissues), ``lesions`` (the lesion specification and how a patient's lesions are drawn),
``render`` (phantom sampling, series rendering), ``scanners`` (vendor protocols and habits,
coil, noise, stored integers), ``prescription`` (slice stacks), ``geometry`` (frames, stacks),
``dicom_writer``, ``identity``, ``masks``, ``readers`` (simulated radiologists), ``patient``,
``cohort`` (:func:`make_cohort`) and ``truth`` (:func:`load_truth`).

Difficulty: every lesion has a latent "metastasis-likeness" ``m`` (metastasis +, myeloma -)
whose class means differ by ``separability``; only the lesion's *structure* follows it (rim
with a dark core vs diffuse mottling, margin irregularity). Its intensity distribution (mean,
SD, percentiles), size, extensions, and the patient's lesion count and site are drawn without
regard to the label (the last three by default; knob ``label_independent``), beside
label-independent marrow variation, vessels and unmasked lesion-like foci of either class.
``separability=0`` (the ``null`` preset) is a true null. The package's ``README.md`` tabulates
what depends on the label and what does not.
"""

from __future__ import annotations

from magn_lib.synthetic.cohort import make_cohort
from magn_lib.synthetic.paper import PAPER_CLASS_COUNTS
from magn_lib.synthetic.planning import Knobs as _Knobs  # noqa: F401  (tests' old names)
from magn_lib.synthetic.planning import plan_cohort as _plan  # noqa: F401
from magn_lib.synthetic.readers import simulate_readers as _simulate_readers  # noqa: F401
from magn_lib.synthetic.scanners import POSITIONS, VENDORS
from magn_lib.synthetic.truth import Truth, load_truth

__all__ = [
    "PAPER_CLASS_COUNTS",
    "POSITIONS",
    "VENDORS",
    "Truth",
    "load_truth",
    "make_cohort",
]
