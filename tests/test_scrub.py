"""Tests for magn_lib.scrub: the one rule for every text written from headers, names and
warnings."""

from __future__ import annotations

import os
import warnings

import pytest

from magn_lib.errors import InputError
from magn_lib.scrub import Scrubber, captured_warnings, escape_name, name_sort_key


def test_scrubber_one_rule_for_every_text(tmp_path):
    series = tmp_path / "manifest" / "dicom" / "WANG_XIUYING_T1"
    scrub = Scrubber.build(labels={series: "P001 sagittal series", tmp_path / "manifest":
                                   "manifest"}, names=["WANG^XIUYING"],
                           secrets=["0012345678", "t1 series sag"])
    text = (f"{series}/IM\udce9.dcm: UID 1.2.840.113619.2.55.3.604688119.969.1 and 1.2.3.04.x; "
            f"{tmp_path / 'manifest' / 'series.csv'}; Wang Xiuying, id 0012345678, T1, MR 3.0; "
            "'T1 series sag' is not the sagittal series")
    out = scrub(text)
    assert out == ("P001 sagittal series/IM\\xe9.dcm: UID [UID] and [UID]; manifest/series.csv; "
                   "[redacted] [redacted], id [redacted], T1, MR 3.0; "
                   "'[redacted]' is not the sagittal series")
    out.encode("utf-8")  # always encodable
    assert scrub.path(tmp_path / "elsewhere" / "x.dcm") == "x.dcm"  # never absolute
    with pytest.warns(UserWarning, match=r"value '\[UID\]'"):
        with captured_warnings(scrub) as messages:
            warnings.warn("value '1.2.3.4.5'", UserWarning, stacklevel=1)
    assert messages == ["value '[UID]'"]


def test_escape_and_sort_undecodable_names():
    latin = os.fsdecode(b"IM-\xe9.dcm")
    assert escape_name(latin) == "IM-\\xe9.dcm"
    assert escape_name(b"a\xffb") == "a\\xffb"
    names = [os.fsdecode(n) for n in (b"b", b"\xe9", b"a", b"\xc3\xa9")]
    assert [os.fsencode(n) for n in sorted(names, key=name_sort_key)] == [
        b"a", b"b", b"\xc3\xa9", b"\xe9"]
    # an error naming such a file can always be written
    err = InputError("truncated", patient="P001", file=f"/x/{latin}")
    assert "IM-\\xe9.dcm" in str(err)
    str(err).encode("utf-8")


def test_error_scrubbed_part_by_part(tmp_path):
    folder = tmp_path / "DOE_JANE"
    scrub = Scrubber.build(labels={folder: "P001 axial series"}, names=["DOE^JANE"])
    err = InputError.combine([
        InputError("slice 1.2.3.4.5 missing", patient="P001", file=folder / "a.dcm",
                   hint="ask Jane"),
        InputError("other", patient="P001", file=tmp_path / "elsewhere" / "DOE.txt"),
    ])
    out = scrub.error(err)
    assert [e.file for e in out.errors] == ["P001 axial series/a.dcm", "[redacted].txt"]
    assert out.errors[0].problem == "slice [UID] missing"
    assert out.errors[0].hint == "ask [redacted]"
