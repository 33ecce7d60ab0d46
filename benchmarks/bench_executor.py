"""The Ray executor: what it costs and where it pays, on this machine's CPUs.

1. Ray's start-up: ``ray.init`` of a local Ray (2 CPUs, no dashboard) until a first task has
   answered, and the round trip of one more empty task once it runs.
2. The MAGN grid (toy crops, the multi-view pair x 2 folds) at two sizes -- a small one whose
   tasks last about a second, and a larger one whose tasks last several seconds, as a demo
   fold does -- sequential with 2 torch threads vs the Ray executor with 2 tasks x 1 thread
   (start-up included and left out).
3. The other embarrassingly parallel stages, per item as the library runs them: radiomics
   extraction per lesion (pyradiomics on 2D crops) and ingest per patient (DICOM -> NIfTI),
   each with its local joblib pool (2 workers, cold: process start included) vs the same
   function as Ray tasks (start-up included); Grad-CAM fidelity per fold
   (:func:`magn_lib.explain.grid_fidelity` on the larger grid), sequential as the training
   notebook runs it vs one Ray task per fold. Where Ray costs more, the stage keeps its pool
   (or stays sequential).
4. The memory of one ``paper`` training (3 x ResNet50, 256 px, batch 16, Adam) measured on the
   CPU — parameters, gradients, Adam's two moments, and the activations autograd keeps for
   the backward pass (counted by a saved-tensors hook at batch 2 and 4, linear in the batch,
   extrapolated to 16) — and the ``gpus_per_task`` that fits it on common GPU sizes. No GPU is
   used here; ``torch.cuda.max_memory_allocated`` is therefore not available.

The CPU load average is printed: on a machine busy with other work every ratio is noisy.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import Result

CPUS = 2
# the multi-view pair: the configurations whose weights a grid keeps, so Grad-CAM can run
GRID_CONFIGS = ["multi-view", "multi-view+attention"]
# (patients, crop px, epochs): tasks of about a second, and of several seconds
GRID_SIZES = ((16, 64, 2), (32, 128, 3))
RADIOMICS_LESIONS, RADIOMICS_CROP = 16, 96
INGEST_PATIENTS = 4
# one training of the paper profile
PAPER_BATCH, PAPER_CROP, PAPER_VIEWS = 16, 256, 3
# the memory a CUDA context, cuDNN workspaces and the caching allocator's slack take beside
# the tensors (a rule of thumb, not measured here: no GPU)
GPU_OVERHEAD_GB = 2.0
GPU_SIZES_GB = (16, 24, 40, 48, 80, 141)
# a machine busy with other work can take minutes to start Ray
RAY_START_TIMEOUT_S = 900.0


def _load() -> str:
    return f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


# ------------------------------------------------------------------------------------ the grid

def _grid_inputs(n_patients: int, crop: int, epochs: int, executor: str):
    """Folds, dataset factory and grid settings of a toy grid of ``n_patients`` (one lesion
    each), ``crop`` px crops and ``epochs`` epochs."""
    from magn_lib.config import load_profile
    from magn_lib.cv import make_folds
    from magn_lib.settings import ExecutorSettings, GridSettings
    from tests.helpers import ToyCrops

    lesions = pd.DataFrame({"lesion_id": [f"P{p:02d}-L1" for p in range(n_patients)],
                            "patient_id": [f"P{p:02d}" for p in range(n_patients)],
                            "label": [p % 2 for p in range(n_patients)]})
    folds = make_folds(lesions, n_splits=2, seed=0)
    cohort = ToyCrops(lesions, size=crop, seed=1)

    def factory(ids, *, train):
        return cohort.subset(ids)

    settings = GridSettings.from_profile(load_profile("smoke", epochs=epochs, batch_size=8,
                                                      device="cpu"))
    settings = replace(settings, executor=ExecutorSettings(executor=executor, cpus_per_task=1))
    return folds, factory, settings


def _grid(out: Path, executor: str, size: tuple[int, int, int]):
    """Seconds and out-of-fold predictions of the toy grid of ``size`` under ``executor``."""
    from magn_lib.cv import run_grid

    folds, factory, settings = _grid_inputs(*size, executor)
    start = time.perf_counter()
    result = run_grid(factory, folds, GRID_CONFIGS, settings, out, progress=False)
    return time.perf_counter() - start, result.predictions


def _fidelity(grid_dir: Path, size: tuple[int, int, int], ray=None) -> tuple[float, int]:
    """Seconds of :func:`magn_lib.explain.grid_fidelity` over the finished toy grid in
    ``grid_dir`` -- in this process, or (``ray`` given) one Ray task per fold -- and the
    number of folds."""
    from magn_lib.explain import grid_fidelity

    folds, factory, settings = _grid_inputs(*size, "sequential")
    fold_ids = sorted(folds["fold"].unique().tolist())
    start = time.perf_counter()
    if ray is None:
        grid_fidelity(grid_dir, folds, factory, settings.network)
    else:
        remote = ray.remote(num_cpus=1)(grid_fidelity)
        ray.get([remote.remote(grid_dir, folds[folds["fold"] == k], factory, settings.network)
                 for k in fold_ids])
    return time.perf_counter() - start, len(fold_ids)


# ----------------------------------------------------------------------- radiomics and ingest

def _radiomics_tasks() -> list[tuple]:
    from magn_lib.config import project_root
    from magn_lib.radiomics import _canonical, load_settings

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:RADIOMICS_CROP, :RADIOMICS_CROP] - RADIOMICS_CROP / 2
    params = _canonical(load_settings(project_root() / "configs" / "radiomics.yaml"))
    tasks = []
    for i in range(RADIOMICS_LESIONS):
        a, b = rng.uniform(8, 24, 2)
        mask = ((xx / a) ** 2 + (yy / b) ** 2 <= 1).astype(np.uint8)
        image = np.clip(0.35 + 0.25 * mask + rng.normal(0, 0.1, mask.shape), 0, 1)
        tasks.append((params, f"P{i:03d}-L1", image.astype(np.float32), mask, None))
    return tasks


def _joblib(fn, tasks: list[tuple]) -> float:
    import joblib
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # cold: the pool's start is part of the cost
    start = time.perf_counter()
    joblib.Parallel(n_jobs=CPUS, batch_size="auto")(joblib.delayed(fn)(*t) for t in tasks)
    return time.perf_counter() - start


def _serial(fn, tasks: list[tuple]) -> float:
    start = time.perf_counter()
    for task in tasks:
        fn(*task)
    return time.perf_counter() - start


def _on_ray(ray, fn, tasks: list[tuple]) -> float:
    remote = ray.remote(num_cpus=1)(fn)
    start = time.perf_counter()
    ray.get([remote.remote(*t) for t in tasks])
    return time.perf_counter() - start


def _cohort(folder: Path):
    from magn_lib.manifest import load_manifest
    from magn_lib.synthetic import make_cohort

    return load_manifest(make_cohort(folder / "cohort", n_patients=INGEST_PATIENTS, seed=5,
                                     n_jobs=1, progress=False))


def _ingest_tasks(manifest, work: Path) -> list[tuple]:
    """One ``_ingest_patient`` call per patient, into the fresh work folder ``work``."""
    from magn_lib.layout import WorkPaths

    views = tuple(manifest.views)
    return [(manifest, pid, views, WorkPaths(work)) for pid in manifest.patients["patient_id"]]


def _stage_result(name: str, unit: str, serial: float, pool: float, ray_warm: float,
                  startup: float, n: int) -> Result:
    ray_cold = startup + ray_warm
    keep = "keeps its joblib pool" if ray_cold > pool else "pays off on Ray"
    return Result(
        name=f"{name}, {n} {unit}s on Ray ({CPUS} tasks of 1 CPU, start-up included)",
        value=ray_cold, reference=f"the local joblib pool ({CPUS} workers, cold)",
        reference_value=pool,
        note=(f"serial {1000 * serial / n:.0f} ms per {unit}; Ray without its start-up "
              f"{ray_warm:.2f} s; Ray's start-up alone {startup:.1f} s = "
              f"{startup / (serial / n):.0f} {unit}s of serial work: the stage {keep}"),
    )


# ------------------------------------------------------------------------- a paper training

def _paper_memory() -> tuple[dict[str, float], str]:
    """Bytes of one paper-profile training's state and activations (CPU, float32)."""
    from magn_lib.config import load_profile
    from magn_lib.cv import build_model
    from magn_lib.losses import magn_loss
    from magn_lib.settings import NetworkSettings

    network = replace(NetworkSettings.from_profile(load_profile("paper")), weights=None)
    model = build_model("multi-view+attention", network).train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    activations = {}
    for batch in (2, 4):
        seen: dict[tuple[int, int], int] = {}

        def pack(tensor: torch.Tensor, seen=seen) -> torch.Tensor:
            storage = tensor.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
            return tensor

        images = {v: torch.rand(batch, 3, PAPER_CROP, PAPER_CROP) for v in model.views}
        masks = {v: (torch.rand(batch, PAPER_CROP, PAPER_CROP) > 0.7).float()
                 for v in model.views}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits, cams = model(images)
            loss = magn_loss(logits, torch.ones(batch), cams, masks, attention_weight=0.5)
        loss.backward()
        model.zero_grad(set_to_none=True)
        activations[batch] = sum(seen.values())
    per_sample = (activations[4] - activations[2]) / 2
    fixed = activations[2] - 2 * per_sample
    linear = f"{activations[2] / 2**30:.2f} GiB at batch 2, {activations[4] / 2**30:.2f} at 4"
    at_batch = fixed + PAPER_BATCH * per_sample
    return {
        "parameters": param_bytes + buffer_bytes,
        "gradients": param_bytes,
        "adam": 2 * param_bytes,
        "activations": at_batch,
        "n_params": n_params,
    }, linear


def _gpus_per_task(total_gb: float, gpu_gb: float) -> float:
    """The smallest of 1, 1/2, 1/3, 1/4, ... of a GPU of ``gpu_gb`` that holds ``total_gb``."""
    for share in range(8, 0, -1):
        if total_gb <= gpu_gb / share:
            return 1 / share
    return float(np.ceil(total_gb / gpu_gb))


def _memory_result() -> Result:
    memory, linear = _paper_memory()
    state = memory["parameters"] + memory["gradients"] + memory["adam"]
    total_gb = (state + memory["activations"]) / 1e9
    shares = ", ".join(f"{gb} GB -> {_gpus_per_task(total_gb + GPU_OVERHEAD_GB, gb):.3g}"
                       for gb in GPU_SIZES_GB)
    return Result(
        name=f"paper training memory (3 x ResNet50, {PAPER_CROP} px, batch {PAPER_BATCH}, "
             "float32, Adam), measured on the CPU",
        value=total_gb, unit="GB", reference="its parameters + gradients + Adam state",
        reference_value=state / 1e9,
        note=(f"{memory['n_params'] / 1e6:.1f} M parameters; activations kept for backward "
              f"{memory['activations'] / 1e9:.2f} GB ({linear}, extrapolated linearly); "
              f"no GPU here, so with ~{GPU_OVERHEAD_GB:g} GB for CUDA context and allocator "
              f"slack, gpus_per_task by GPU memory: {shares}"),
    )


def run() -> Iterator[Result]:
    """The measurements, each yielded as soon as it is taken (the Ray start can take minutes
    on a busy machine)."""
    import ray

    from magn_lib.errors import ConfigError
    from magn_lib.executor import start_local_ray
    from magn_lib.ingest import _ingest_patient
    from magn_lib.radiomics import _crop_task

    yield _memory_result()
    torch_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="magn-bench-executor-") as tmp:
        tmp = Path(tmp)
        load_before = _load()
        torch.set_num_threads(CPUS)
        sequential = {size: _grid(tmp / f"seq-{i}", "sequential", size)
                      for i, size in enumerate(GRID_SIZES)}
        cam_serial, n_folds = _fidelity(tmp / f"seq-{len(GRID_SIZES) - 1}", GRID_SIZES[-1])
        torch.set_num_threads(torch_threads)

        rad_tasks = _radiomics_tasks()
        rad_serial = _serial(_crop_task, rad_tasks)
        rad_pool = _joblib(_crop_task, rad_tasks)
        manifest = _cohort(tmp)
        ingest_serial = _serial(_ingest_patient, _ingest_tasks(manifest, tmp / "serial"))
        ingest_pool = _joblib(_ingest_patient, _ingest_tasks(manifest, tmp / "pool"))
        for name, unit, serial, pool, n in (
                ("radiomics extraction", "lesion", rad_serial, rad_pool, len(rad_tasks)),
                ("ingest", "patient", ingest_serial, ingest_pool, INGEST_PATIENTS)):
            yield Result(name=f"{name}, {n} {unit}s, serial", value=serial,
                         reference=f"the local joblib pool ({CPUS} workers, cold)",
                         reference_value=pool, higher_is_better=True,
                         note=f"{1000 * serial / n:.0f} ms per {unit}; {_load()}")

        if ray.is_initialized():
            ray.shutdown()
        start = time.perf_counter()
        try:
            start_local_ray(num_cpus=CPUS, num_gpus=0, timeout_s=RAY_START_TIMEOUT_S)
        except ConfigError as exc:
            print(f"  Ray did not start, so no Ray measurement ({_load()}): {exc}")
            return
        ray.get(ray.remote(num_cpus=1)(lambda: None).remote())
        startup = time.perf_counter() - start
        try:
            empty = ray.remote(num_cpus=1)(lambda: None)
            start = time.perf_counter()
            ray.get(empty.remote())
            round_trip = time.perf_counter() - start
            on_ray = {size: _grid(tmp / f"ray-{i}", "ray", size)
                      for i, size in enumerate(GRID_SIZES)}
            cam_ray, _ = _fidelity(tmp / f"seq-{len(GRID_SIZES) - 1}", GRID_SIZES[-1], ray)
            rad_ray = _on_ray(ray, _crop_task, rad_tasks)
            ingest_ray = _on_ray(ray, _ingest_patient, _ingest_tasks(manifest, tmp / "ray"))
        finally:
            ray.shutdown()
        load_after = _load()
    yield Result(
        name="Ray start-up (local, 2 CPUs, until a first task answered)", value=startup,
        reference="one empty task once Ray runs", reference_value=round_trip,
        note=f"{load_before} before, {load_after} after",
    )
    for size in GRID_SIZES:
        n_patients, crop, epochs = size
        seq_seconds, seq_predictions = sequential[size]
        ray_seconds, ray_predictions = on_ray[size]
        same = ray_predictions.equals(seq_predictions)
        per_task = seq_seconds / (len(GRID_CONFIGS) * 2)
        yield Result(
            name=f"MAGN grid ({len(GRID_CONFIGS)} configurations x 2 folds, {n_patients} "
                 f"patients, {crop} px, {epochs} epochs) on Ray, {CPUS} tasks x 1 thread, "
                 "start-up included",
            value=ray_seconds + startup, reference=f"sequential, {CPUS} torch threads",
            reference_value=seq_seconds,
            note=f"{per_task:.1f} s per task sequentially; without the start-up: "
                 f"{ray_seconds:.1f} s (ratio {ray_seconds / seq_seconds:.3f}); predictions "
                 f"equal to the sequential run's: {same} (they need not be: {CPUS} threads vs "
                 "1 thread per task sum in another order)",
        )
    cam_ray_cold = cam_ray + startup
    yield Result(
        name=f"Grad-CAM fidelity, {n_folds} folds of the larger grid, one Ray task per fold "
             "(start-up included)",
        value=cam_ray_cold, reference=f"sequential, {CPUS} torch threads, as notebook 03 runs it",
        reference_value=cam_serial,
        note=(f"{cam_serial / n_folds:.2f} s per fold sequentially; Ray without its start-up "
              f"{cam_ray:.2f} s; the stage "
              + ("stays sequential" if cam_ray_cold > cam_serial else "pays off on Ray")),
    )
    yield _stage_result("radiomics extraction", "lesion", rad_serial, rad_pool, rad_ray,
                        startup, len(rad_tasks))
    yield _stage_result("ingest", "patient", ingest_serial, ingest_pool, ingest_ray, startup,
                        INGEST_PATIENTS)
