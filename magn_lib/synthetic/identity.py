"""The identity a hospital leaves in its DICOM exports, planted so that de-identification can
be tested: names, hospital numbers, dates, addresses (all fictitious)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from magn_lib.synthetic.scanners import HOSPITALS, Vendor

__all__ = ["draw_identity"]

_NAME_SURNAMES = (
    "WANG", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO", "ZHOU", "XU", "SUN", "ZHU", "GUO",
    "LUO", "LIANG", "SONG", "ZHENG", "XIE", "HAN", "TANG", "FENG", "DENG", "CAO", "PENG", "ZENG",
)
_NAME_GIVEN = (
    "XIUYING", "GUOQIANG", "JIANHUA", "MEILING", "ZHIWEI", "HAIYAN", "LIJUAN", "YUFENG",
    "SHUFEN", "WEIDONG", "GUIYING", "JIANGUO", "XIAOMING", "YONGMEI", "DEHUA", "CHUNLAN",
    "WENBIN", "HONGXIA", "ZHENGANG", "YULAN", "SHAOHUA", "LIHONG", "MINGHUI", "FENGYING",
)


def draw_identity(rng: np.random.Generator, plan: dict[str, Any], vendor: Vendor
                  ) -> dict[str, str]:
    """DICOM keyword -> value of the identity planted in one patient's headers."""
    hospital = HOSPITALS[vendor.hospital]
    surname = _NAME_SURNAMES[rng.integers(len(_NAME_SURNAMES))]
    given = _NAME_GIVEN[rng.integers(len(_NAME_GIVEN))]
    referring = (f"{_NAME_SURNAMES[rng.integers(len(_NAME_SURNAMES))]}^"
                 f"{_NAME_GIVEN[rng.integers(len(_NAME_GIVEN))]}")
    study = date(2014, 1, 1) + timedelta(days=int(rng.integers(0, 7 * 365)))
    birth = study - timedelta(days=int(plan["age"] * 365.25 + rng.integers(1, 364)))
    hospital_no = f"{rng.integers(10**8, 10**9):09d}"
    return {
        "PatientName": f"{surname}^{given}",
        "PatientID": f"00{hospital_no}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "AccessionNumber": f"MR{study:%y%m%d}{rng.integers(10**5, 10**6)}",
        "InstitutionName": vendor.institution,
        "InstitutionAddress": f"{rng.integers(100, 999)} {hospital.street}",
        "ReferringPhysicianName": referring,
        "StudyDate": study.strftime("%Y%m%d"),
        "OtherPatientIDs": f"IP{rng.integers(10**6, 10**7)}",
        "PatientTelephoneNumbers": (f"+86 {hospital.phone_area} {rng.integers(1000, 9999)} "
                                    f"{rng.integers(1000, 9999)}"),
    }
