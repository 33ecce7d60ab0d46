"""Reproducibility: one seed for every random source, and a record of the environment.

``set_determinism`` seeds Python, NumPy and PyTorch and asks PyTorch for deterministic
kernels. ``environment_info`` and ``git_state`` describe where a run happened; the study runner
writes them into ``run_manifest.json``. ``checkout_mismatch`` tells when ``magn_lib`` is
imported from another checkout than the one being worked in (an editable install of a second
clone runs that clone's code and notebooks, and writes into its folders).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import platform
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KEY_PACKAGES",
    "check_environment",
    "checkout_mismatch",
    "environment_info",
    "file_blake2b",
    "file_sha256",
    "git_state",
    "package_versions",
    "set_determinism",
]

# distribution name -> import name; the packages a run's numbers depend on
KEY_PACKAGES: dict[str, str] = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "torch": "torch",
    "torchvision": "torchvision",
    "pyradiomics": "radiomics",
    "SimpleITK": "SimpleITK",
    "pydicom": "pydicom",
    "dicognito": "dicognito",
    "nibabel": "nibabel",
    "scikit-learn": "sklearn",
    "statsmodels": "statsmodels",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "grad-cam": "pytorch_grad_cam",
    "dcurves": "dcurves",
    "papermill": "papermill",
    "nbconvert": "nbconvert",
    "nbformat": "nbformat",
    "ipykernel": "ipykernel",
    "jupyterlab": "jupyterlab",
    "PyYAML": "yaml",
    "tqdm": "tqdm",
    "joblib": "joblib",
}


def set_determinism(seed: int) -> None:
    """Seed ``random``, NumPy's global generator and PyTorch (CPU and CUDA) with ``seed``.

    Also selects deterministic algorithms in PyTorch (warning, not failing, where an operation
    has none) and disables cuDNN autotuning, so that two CPU runs with one seed give identical
    numbers. GPU runs are repeatable up to the non-determinism PyTorch itself documents.
    """
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global-state users too
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks: inputs can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_blake2b(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex BLAKE2b (128-bit digest) of a file's bytes: the fast content hash that keys resume
    stamps (about 1 GB/s on one core, faster than SHA-256 and than reading a DICOM file)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions(distributions: dict[str, str] | None = None) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for dist in distributions or KEY_PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def check_environment(packages: dict[str, str] | None = None) -> dict[str, str]:
    """Import every key package; return ``{distribution: version}``.

    Raises:
        RuntimeError: listing every package that is missing or fails to import, with the
            import error, and what to run.
    """
    packages = packages or KEY_PACKAGES
    failures = []
    for dist, module in packages.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import failure is a broken environment
            failures.append(f"{dist} (import {module}): {type(exc).__name__}: {exc}")
    if failures:
        raise RuntimeError(
            "the study environment is incomplete:\n  "
            + "\n  ".join(failures)
            + "\nRun `make setup` (or see README.md, Installation)."
        )
    return {dist: v for dist, v in package_versions(packages).items() if v is not None}


def _gpu_info() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return gpus


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info() -> dict[str, Any]:
    """Python, OS, CPU, GPU and key package versions of this process."""
    import torch

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": _gpu_info(),
        "packages": package_versions(),
    }


def git_state(root: str | Path) -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout at ``root`` (``None`` outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def _checkout_of(folder: Path) -> Path | None:
    """The magn checkout holding ``folder`` (a folder with ``pyproject.toml`` naming the
    ``magn`` project and a ``magn_lib/`` package), or ``None``."""
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if (candidate / "magn_lib").is_dir() and pyproject.is_file():
            try:
                text = pyproject.read_text(encoding="utf-8")
            except OSError:
                return None
            if re.search(r'^name\s*=\s*"magn"\s*$', text, flags=re.MULTILINE):
                return candidate.resolve()
    return None


def checkout_mismatch(*, cwd: str | Path | None = None, prefix: str | Path | None = None,
                      library: str | Path | None = None) -> str | None:
    """Why the ``magn_lib`` in use may not be the code one is working on, or ``None``.

    Compares the checkout ``magn_lib`` is imported from with the checkout holding the working
    folder (``cwd``) and the one holding the Python environment (``prefix``, e.g. its
    ``.venv``); either differing is reported.
    """
    if library is None:
        import magn_lib

        library = Path(magn_lib.__file__).resolve().parent
    imported = Path(library).resolve().parent
    problems = []
    for what, folder in (("the working folder", Path(cwd) if cwd else Path.cwd()),
                         ("this Python environment", Path(prefix or sys.prefix))):
        checkout = _checkout_of(folder.resolve())
        if checkout is not None and checkout != imported:
            problems.append(f"{what} is in the checkout {checkout}")
    if not problems:
        return None
    return (f"magn_lib is imported from {imported}, but " + " and ".join(problems)
            + ": commands run that other checkout's code and notebooks. Run `make setup` in "
            "the checkout you work in (or use its own .venv).")
