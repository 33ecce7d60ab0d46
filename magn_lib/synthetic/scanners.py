"""The scanners of the embedded sites and the habits of each that a DICOM reader must survive.

Site A (the paper's hospital, "Lakeside") has the paper's three scanners (1.5 T Siemens, 1.5 T
GE, 3.0 T Philips); site B ("Riverside", the ``site_b`` preset of
:func:`~magn_lib.synthetic.make_cohort`) has three others (3.0 T Siemens, 3.0 T Canon, 1.5 T GE).
Everything here depends on the scanner, its hospital or the patient's position on its table,
never on the patient's disease: slice prescriptions (pixel size, thickness, gap), in-plane axis
conventions (patient- or magnet-oriented), receive-coil sensitivity, Rician noise, the stored
integer range and rescale habit, instance numbering, and the hospital's PACS export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "HOSPITALS",
    "POSITIONS",
    "POSITION_MATRIX",
    "POSITION_WEIGHTS",
    "VENDORS",
    "VENDOR_WEIGHTS",
    "CoilSensitivity",
    "Hospital",
    "SeriesSpec",
    "Vendor",
    "inplane_axes",
    "instance_order",
    "rician_noise",
    "to_stored",
]

POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL")
POSITION_WEIGHTS = (0.72, 0.10, 0.08, 0.02, 0.04, 0.04)
# patient LPS -> scanner (gantry) axes; HFS is the identity by definition of the DICOM frame.
POSITION_MATRIX = {
    "HFS": np.eye(3),
    "FFS": np.diag([-1.0, 1.0, -1.0]),
    "HFP": np.diag([-1.0, -1.0, 1.0]),
    "FFP": np.diag([1.0, -1.0, -1.0]),
    "HFDR": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "HFDL": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


@dataclass(frozen=True)
class SeriesSpec:
    """One series protocol of a scanner."""

    thickness: float  # mm
    gap: float  # mm between slabs (SpacingBetweenSlices = thickness + gap)
    pixel: float  # mm, square pixels
    rows: int
    cols: int
    tr: float  # ms
    te: float  # ms
    description: str


@dataclass(frozen=True)
class Hospital:
    """What a hospital's exports share whatever the scanner: its address (planted identity)
    and the private block its PACS adds to every file."""

    street: str  # "<number> <street>" is the planted InstitutionAddress
    phone_area: str  # "+86 <area> ..." of the planted PatientTelephoneNumbers
    pacs_creator: str  # private creator of the PACS block (group 0x0011) holding identity


HOSPITALS: dict[str, Hospital] = {
    "lakeside": Hospital(street="Lakeside Road, East District", phone_area="21",
                         pacs_creator="LAKESIDE PACS EXPORT 1.0"),
    "riverside": Hospital(street="Riverside Avenue, North District", phone_area="25",
                          pacs_creator="RIVERSIDE RIS-PACS 3.2"),
}


@dataclass(frozen=True)
class Vendor:
    """One scanner of an embedded site, with the habits that matter to a reader."""

    key: str
    manufacturer: str
    model: str
    field_t: float
    software: str
    station: str
    institution: str
    patient_oriented: bool  # in-plane axes follow the patient (True) or the magnet
    noise: float  # Rician sigma relative to marrow-lesion contrast ~ 1
    fat_residual: float  # fat-suppression leftovers (relative signal)
    bits_stored: int
    stored_target: float  # stored value of the 99.5th percentile
    rescale: str  # "absent" | "unit" | "philips"
    numbering: str  # instance-number habit: "interleaved" | "reversed" | "random"
    file_pattern: str
    private_creator: str
    series: dict[str, SeriesSpec] = field(default_factory=dict)
    hospital: str = "lakeside"  # key of HOSPITALS
    flip_angle: str = "90"
    private_group: int = 0x0019  # group of the vendor's private block


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        key="siemens", manufacturer="SIEMENS", model="Avanto", field_t=1.5,
        software="syngo MR B17", station="MRC25476", institution="LAKESIDE UNIV HOSPITAL",
        patient_oriented=True, noise=0.030, fat_residual=0.12, bits_stored=12,
        stored_target=1100.0, rescale="absent", numbering="interleaved",
        file_pattern="IM-0001-{n:04d}.dcm", private_creator="SIEMENS MR HEADER",
        series={
            "sagittal": SeriesSpec(3.5, 0.35, 0.75, 240, 240, 520.0, 9.8, "t1_tse_sag_fs_post"),
            "coronal": SeriesSpec(3.5, 0.35, 0.9375, 192, 192, 560.0, 9.8, "t1_tse_cor_fs_post"),
            "axial": SeriesSpec(4.0, 0.4, 0.9, 160, 160, 600.0, 11.0, "t1_tse_tra_fs_post"),
        },
    ),
    "ge": Vendor(
        key="ge", manufacturer="GE MEDICAL SYSTEMS", model="Signa HDxt", field_t=1.5,
        software="15\\LX\\MR Software release:15.0_M4_0910.a", station="GEMR1OC0",
        institution="Lakeside University Hospital", patient_oriented=False, noise=0.036,
        fat_residual=0.16, bits_stored=16, stored_target=2400.0, rescale="unit",
        numbering="reversed", file_pattern="I{n}.dcm", private_creator="GEMS_PARM_01",
        series={
            "sagittal": SeriesSpec(4.0, 0.5, 0.76, 224, 224, 480.0, 10.4, "SAG T1 FS +C"),
            "coronal": SeriesSpec(4.0, 0.5, 0.9375, 208, 176, 500.0, 10.4, "COR T1 FS +C"),
            "axial": SeriesSpec(4.0, 1.0, 0.898, 160, 176, 520.0, 11.2, "AX T1 FS +C"),
        },
    ),
    "philips": Vendor(
        key="philips", manufacturer="Philips Medical Systems", model="Achieva", field_t=3.0,
        software="3.2.3\\3.2.3.1", station="PHILIPS-7KQ2M9", institution="LAKESIDE UH MR3T",
        patient_oriented=False, noise=0.020, fat_residual=0.08, bits_stored=12,
        stored_target=1500.0, rescale="philips", numbering="random", file_pattern="IM_{n:04d}",
        private_creator="Philips MR Imaging DD 001", flip_angle="80", private_group=0x2005,
        series={
            "sagittal": SeriesSpec(3.5, 0.35, 0.70, 240, 240, 550.0, 8.0, "T1W_TSE_SPIR_SAG+C"),
            "coronal": SeriesSpec(3.5, 0.35, 0.9, 192, 192, 550.0, 8.0, "T1W_TSE_SPIR_COR+C"),
            "axial": SeriesSpec(3.5, 0.5, 0.82, 176, 176, 600.0, 8.0, "T1W_TSE_SPIR_TRA+C"),
        },
    ),
    # site B (Riverside): scanners site A lacks
    "siemens_3t": Vendor(
        key="siemens_3t", manufacturer="SIEMENS", model="Skyra", field_t=3.0,
        software="syngo MR E11", station="AWP66052", institution="RIVERSIDE GENERAL HOSPITAL",
        patient_oriented=True, noise=0.017, fat_residual=0.06, bits_stored=12,
        stored_target=1400.0, rescale="absent", numbering="interleaved",
        file_pattern="MR.{n:06d}.dcm", private_creator="SIEMENS CSA HEADER",
        hospital="riverside",
        series={
            "sagittal": SeriesSpec(3.0, 0.3, 0.625, 320, 320, 650.0, 9.0, "t1_tse_sag_fs_post"),
            "coronal": SeriesSpec(3.0, 0.3, 0.78, 256, 256, 650.0, 9.0, "t1_tse_cor_fs_post"),
            "axial": SeriesSpec(3.5, 0.35, 0.7, 224, 224, 700.0, 9.0, "t1_tse_tra_fs_post"),
        },
    ),
    "canon": Vendor(
        key="canon", manufacturer="CANON_MEC", model="Vantage Titan 3T", field_t=3.0,
        software="V6.0*R004", station="CMSRVTITAN", institution="Riverside General Hospital",
        patient_oriented=False, noise=0.019, fat_residual=0.07, bits_stored=16,
        stored_target=2600.0, rescale="unit", numbering="reversed",
        file_pattern="{n:08d}", private_creator="TOSHIBA_MEC_MR3", hospital="riverside",
        private_group=0x700D,
        series={
            "sagittal": SeriesSpec(3.0, 0.5, 0.65, 288, 288, 600.0, 10.0, "T1 SE FS SAG +C"),
            "coronal": SeriesSpec(3.0, 0.5, 0.78, 256, 256, 600.0, 10.0, "T1 SE FS COR +C"),
            "axial": SeriesSpec(4.0, 0.8, 0.72, 224, 224, 620.0, 10.0, "T1 SE FS AX +C"),
        },
    ),
    "ge_explorer": Vendor(
        key="ge_explorer", manufacturer="GE MEDICAL SYSTEMS", model="SIGNA Explorer",
        field_t=1.5, software="26\\LX\\MR Software release:DV26.0_R03_1831.b",
        station="RGHMR15", institution="RIVERSIDE GEN HOSP", patient_oriented=False,
        noise=0.034, fat_residual=0.14, bits_stored=16, stored_target=2400.0, rescale="unit",
        numbering="random", file_pattern="i{n:05d}.MRDC", private_creator="GEMS_PARM_01",
        hospital="riverside",
        series={
            "sagittal": SeriesSpec(4.0, 1.0, 0.86, 224, 224, 500.0, 9.6, "Sag T1 FS post"),
            "coronal": SeriesSpec(4.0, 1.0, 0.94, 192, 192, 500.0, 9.6, "Cor T1 FS post"),
            "axial": SeriesSpec(4.0, 1.0, 0.86, 192, 192, 540.0, 10.2, "Ax T1 FS post"),
        },
    ),
}
#: site A's scanner mix (the paper's three scanners); site B's is in ``planning.PRESETS``
VENDOR_WEIGHTS = {"siemens": 0.36, "ge": 0.34, "philips": 0.30}


def inplane_axes(normal: np.ndarray, position: str, patient_oriented: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cosines (LPS) a scanner writes for a slice with this normal.

    Scanners pick in-plane axes by display convention (sagittal: anterior left, head up;
    coronal: patient right on the left, head up; axial: right on the left, anterior up). Some
    vendors apply it in the patient frame, others in the magnet's frame, so for a prone or
    decubitus patient the latter write rotated or flipped cosines.
    """
    m = np.eye(3) if patient_oriented else POSITION_MATRIX[position]
    n = m @ normal
    dom = int(np.argmax(np.abs(n)))
    pref_row, pref_col = {0: ((0, 1, 0), (0, 0, -1)), 1: ((1, 0, 0), (0, 0, -1)),
                          2: ((1, 0, 0), (0, 1, 0))}[dom]
    r = np.asarray(pref_row, float)
    r = r - (r @ n) * n
    r /= np.linalg.norm(r)
    c = np.asarray(pref_col, float)
    c = c - (c @ n) * n - (c @ r) * r
    c /= np.linalg.norm(c)
    return m.T @ r, m.T @ c


@dataclass(frozen=True, eq=False)
class CoilSensitivity:
    """Smooth multiplicative receive-coil sensitivity, ~1 at the spine.

    The coil lies under the patient's back (scanner +Y): the log signal falls linearly with
    distance from it, plus a gentle polynomial in the scanner's other axes.
    """

    position: str  # DICOM PatientPosition: maps patient LPS to scanner axes
    centre: np.ndarray  # (3,) LPS mm where the sensitivity is 1 (index vertebral body)
    decay: float  # log-intensity drop per 100 mm from the coil
    poly: np.ndarray  # (3,) coefficients of z/100, x/100 and (z/100)^2 in scanner axes

    @classmethod
    def draw(cls, position: str, centre: np.ndarray, rng: np.random.Generator
             ) -> CoilSensitivity:
        decay = rng.uniform(0.25, 0.45)
        return cls(position=position, centre=centre, decay=decay, poly=rng.normal(0, 0.06, 3))

    def on_grid(self, base: np.ndarray, step_r: np.ndarray, step_c: np.ndarray, rows: int,
                cols: int) -> np.ndarray:
        """Sensitivity (float32, ``(rows, cols)``) on the LPS grid
        ``base + r * step_r + c * step_c``."""
        m = POSITION_MATRIX[self.position]
        r = np.arange(rows, dtype=np.float64)[:, None]
        c = np.arange(cols, dtype=np.float64)[None, :]
        q0, qr, qc = m @ (base - self.centre), m @ step_r, m @ step_c  # scanner axes
        qx, qy, qz = (q0[a] + r * qr[a] + c * qc[a] for a in range(3))
        log_b = self.decay * qy / 100.0
        log_b = log_b + self.poly[0] * qz / 100 + self.poly[1] * qx / 100
        log_b = log_b + self.poly[2] * (qz / 100) ** 2
        return np.exp(log_b).astype(np.float32)


def rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``img`` plus complex Gaussian noise of SD ``sigma`` per channel (float32)."""
    s = np.float32(sigma)
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * s
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * s
    return np.sqrt((img + n1) ** 2 + n2 ** 2)


def to_stored(img: np.ndarray, vendor: Vendor, rng: np.random.Generator
              ) -> tuple[np.ndarray, float, float]:
    """Scale a float image to the vendor's stored integers; returns (stored uint16, slope,
    intercept) with ``value = stored * slope + intercept``."""
    hi = float(np.percentile(img, 99.5)) or 1.0
    top = float(img.max()) or 1.0
    max_stored = 2 ** vendor.bits_stored - 1
    gain = min(vendor.stored_target * rng.uniform(0.85, 1.15) / hi, max_stored / top)
    stored = np.clip(np.rint(img * gain), 0, max_stored).astype(np.uint16)
    if vendor.rescale == "philips":
        slope = round(float(rng.uniform(1.2, 3.2)), 5)
        intercept = 0.0
    else:
        slope, intercept = 1.0, 0.0
    return stored, slope, intercept


def instance_order(n: int, habit: str, rng: np.random.Generator) -> np.ndarray:
    """Instance number (1-based) of each slice in spatial order; never spatial order itself."""
    if habit == "interleaved":  # odd slices acquired first, then even
        acq = np.r_[np.arange(0, n, 2), np.arange(1, n, 2)]
        order = np.empty(n, int)
        order[acq] = np.arange(1, n + 1)
    elif habit == "reversed":
        order = np.arange(n, 0, -1)
    else:
        order = rng.permutation(n) + 1
    if n > 1 and np.all(np.diff(order) > 0):
        order = order[::-1].copy()
    return order
