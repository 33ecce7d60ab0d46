from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from magn_lib.repro import check_environment, environment_info, git_state, set_determinism


def _draws():
    legacy = np.random.rand(3).tolist()  # noqa: NPY002 - the global state is what is seeded
    return random.random(), legacy, torch.rand(3).tolist()


def test_set_determinism_repeats_every_source():
    set_determinism(123)
    first = _draws()
    set_determinism(123)
    assert _draws() == first
    set_determinism(124)
    assert _draws() != first


def test_same_seed_same_initial_weights():
    set_determinism(5)
    a = torch.nn.Linear(4, 2).weight.detach().clone()
    set_determinism(5)
    assert torch.equal(torch.nn.Linear(4, 2).weight, a)


def test_check_environment_reports_every_missing_package():
    with pytest.raises(RuntimeError, match=r"(?s)not-a-pkg.*also-missing.*make setup"):
        check_environment({"not-a-pkg": "not_a_module_x", "also-missing": "nor_this_one_y"})
    assert "numpy" in check_environment({"numpy": "numpy"})


def test_environment_info_fields():
    info = environment_info()
    for key in ("python", "os", "cpu", "cpu_count", "cuda_available", "gpus", "packages"):
        assert key in info
    assert info["packages"]["torch"].startswith("2.")


def test_git_state_outside_a_repository(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    from magn_lib.repro import file_sha256

    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_sha256(path, chunk=4096) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_checkout_mismatch_names_both_checkouts(tmp_path):
    from magn_lib.repro import checkout_mismatch

    def checkout(name):
        root = tmp_path / name
        (root / "magn_lib").mkdir(parents=True)
        (root / "pyproject.toml").write_text('[project]\nname = "magn"\nversion = "0"\n')
        return root

    mine, other = checkout("mine"), checkout("other")
    (mine / "notebooks").mkdir()
    (mine / ".venv").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    same = checkout_mismatch(cwd=mine / "notebooks", prefix=mine / ".venv",
                             library=mine / "magn_lib")
    assert same is None
    assert checkout_mismatch(cwd=outside, prefix=outside, library=other / "magn_lib") is None
    message = checkout_mismatch(cwd=mine / "notebooks", prefix=mine / ".venv",
                                library=other / "magn_lib")
    assert f"imported from {other.resolve()}" in message
    assert f"working folder is in the checkout {mine.resolve()}" in message
    assert "this Python environment" in message and "make setup" in message
    # a folder that merely holds a pyproject.toml of another project is no checkout
    (outside / "magn_lib").mkdir()
    (outside / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert checkout_mismatch(cwd=outside, prefix=outside, library=mine / "magn_lib") is None
