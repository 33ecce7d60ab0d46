"""Shared fixtures: where the real public reference data live (skip cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from magn_lib.config import project_root


def reference_data_root() -> Path | None:
    """``$MAGN_REFERENCE_DATA`` or ``../shared/reference-data`` beside the checkout, if present."""
    candidates = [
        os.environ.get("MAGN_REFERENCE_DATA"),
        project_root().parent / "shared" / "reference-data",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def reference_data() -> Path:
    root = reference_data_root()
    if root is None:
        pytest.skip(
            "real reference data not found: set MAGN_REFERENCE_DATA or place it at "
            "../shared/reference-data beside the checkout"
        )
    return root
