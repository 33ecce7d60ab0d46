"""Training throughput of the ``paper`` profile on one GPU, with 1, 2 and 4 trainings sharing it.

    python -m benchmarks gpu                      # needs a CUDA GPU; without one it says so
    MAGN_BENCH_GPU_DRY=1 python -m benchmarks gpu # the same code on the CPU at toy size

1. One training of the ``paper`` configuration multi-view+attention (3 x ResNet50, 256 px,
   batch 16, Adam, float32 as the study trains) in this process: its throughput in view images
   per second (a lesion is 3 images, one per backbone) and its peak GPU memory
   (``torch.cuda.max_memory_allocated``), from which the ``gpus_per_task`` that fits follows.
2. The same grid of 4 folds on a local Ray, ``gpus_per_task`` 1, 0.5 and 0.25 (1, 2 and 4
   trainings at once on the GPU): each fold's throughput from its ``done.json``
   (``n_train x epochs x 3 / train_seconds``), and the whole grid's images per second from its
   wall time (task start-up included).
3. A bare torchvision ResNet50 in bf16 autocast and channels_last at the same batch and size
   (forward, backward, Adam step): the throughput a tuned single-backbone loop reaches on this
   GPU. The ratio says how much of the device one MAGN training uses, and what sharing it buys.

The inputs are toy crops (:class:`tests.helpers.ToyCrops`, generated inside each worker), so
the numbers measure the computation, not the reading of a cohort; ImageNet weights are not
loaded (the throughput does not depend on the initial values).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import Result

DRY = os.environ.get("MAGN_BENCH_GPU_DRY") == "1"
CONFIG = "multi-view+attention"
TASKS_PER_GPU = (1, 2, 4)
N_FOLDS = 4
# (lesions, crop px, batch, epochs): the paper's crop and batch; enough steps per fold that a
# task's start (CUDA context, cuDNN autotuning) is a small part of it
SIZE = (16, 32, 4, 1) if DRY else (320, 256, 16, 2)
BARE_STEPS, BARE_WARMUP = (3, 1) if DRY else (40, 10)
CPUS_PER_TASK = 1 if DRY else 2


@lru_cache(maxsize=1)
def _cohort(n_lesions: int, crop: int):
    """The toy crops, made once per process (each Ray worker builds its own)."""
    from tests.helpers import ToyCrops

    return ToyCrops(_lesions(n_lesions), size=crop, seed=1)


def _lesions(n_lesions: int) -> pd.DataFrame:
    return pd.DataFrame({"lesion_id": [f"P{p:03d}-L1" for p in range(n_lesions)],
                         "patient_id": [f"P{p:03d}" for p in range(n_lesions)],
                         "label": [p % 2 for p in range(n_lesions)]})


def _factory(ids, *, train):
    n_lesions, crop, _, _ = SIZE
    return _cohort(n_lesions, crop).subset(ids)


def _settings(executor: str, gpus_per_task: float):
    from magn_lib.config import load_profile
    from magn_lib.settings import ExecutorSettings, GridSettings

    _, crop, batch, epochs = SIZE
    profile = load_profile("paper", epochs=epochs, batch_size=batch, crop_size=crop,
                           device="cpu" if DRY else "cuda")
    settings = GridSettings.from_profile(profile, track_test=False)
    network = replace(settings.network, weights=None)
    return replace(settings, network=network, keep_weights=False,
                   executor=ExecutorSettings(executor=executor, gpus_per_task=gpus_per_task,
                                             cpus_per_task=CPUS_PER_TASK))


def _fold_rates(out: Path, folds: Sequence[int] = tuple(range(N_FOLDS))) -> list[float]:
    """View images per second of each finished fold, from its ``done.json``."""
    from magn_lib.cv import config_by_name
    from magn_lib.layout import GridPaths

    views = len(config_by_name(CONFIG).views)
    rates = []
    for fold in folds:
        metrics = json.loads(GridPaths(out).fold(CONFIG, fold).done.read_text())["metrics"]
        rates.append(metrics["n_train"] * metrics["epochs"] * views / metrics["train_seconds"])
    return rates


def _grid(out: Path, executor: str, gpus_per_task: float = 1.0) -> tuple[float, list[float]]:
    """Wall seconds of the 4-fold grid and each fold's images per second."""
    from magn_lib.cv import make_folds, run_grid

    folds = make_folds(_lesions(SIZE[0]), n_splits=N_FOLDS, seed=0)
    start = time.perf_counter()
    run_grid(_factory, folds, [CONFIG], _settings(executor, gpus_per_task), out, progress=False)
    return time.perf_counter() - start, _fold_rates(out)


def _one_fold(out: Path) -> tuple[float, float]:
    """Images per second and peak GPU memory (GB; NaN on the CPU) of fold 0 trained in this
    process, exactly as the grid trains one (configuration, fold)."""
    from magn_lib.cv import _run_one, make_folds

    folds = make_folds(_lesions(SIZE[0]), n_splits=N_FOLDS, seed=0)
    if not DRY:
        torch.cuda.reset_peak_memory_stats()
    _run_one(config=CONFIG, fold=0, dataset_factory=_factory, folds=folds,
             settings=_settings("sequential", 1.0), out_dir=out, progress=False,
             data_fingerprint=None)
    peak = float("nan") if DRY else torch.cuda.max_memory_allocated() / 1e9
    return _fold_rates(out, folds=[0])[0], peak


def _bare_resnet50() -> float:
    """Images per second of a torchvision ResNet50 training step (bf16 autocast,
    channels_last, Adam) at the paper's batch and crop size."""
    import torchvision

    _, crop, batch, _ = SIZE
    device = torch.device("cpu" if DRY else "cuda")
    model = torchvision.models.resnet50(weights=None, num_classes=1).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 3, crop, crop, device=device).to(
        memory_format=torch.channels_last)
    target = torch.randint(0, 2, (batch, 1), device=device).float()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(BARE_WARMUP):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(BARE_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return BARE_STEPS * batch / (time.perf_counter() - start)


def run() -> Iterator[Result]:
    if not DRY and not torch.cuda.is_available():
        print("  no CUDA GPU on this machine: nothing measured (the README's gpus_per_task "
              "table is the arithmetic of bench_executor's CPU memory count)")
        return
    from magn_lib.executor import start_local_ray

    n_lesions, crop, batch, epochs = SIZE
    where = "CPU (dry run, toy size)" if DRY else torch.cuda.get_device_name(0)
    gpu_gb = (float("nan") if DRY
              else torch.cuda.get_device_properties(0).total_memory / 1e9)
    print(f"  {where}; {n_lesions} toy lesions, {crop} px, batch {batch}, {epochs} epoch(s), "
          f"{N_FOLDS} folds of {CONFIG}")
    bare = _bare_resnet50()
    with tempfile.TemporaryDirectory(prefix="magn-bench-gpu-") as tmp:
        tmp = Path(tmp)
        single, peak = _one_fold(tmp / "one")
        yield Result(
            name=f"one paper training in this process ({CONFIG}, float32), view images/s",
            value=single, unit="img/s", reference="a bare ResNet50, bf16 + channels_last",
            reference_value=bare, higher_is_better=True,
            note=(f"peak GPU memory {peak:.2f} GB of {gpu_gb:.0f} GB -> up to "
                  f"{int(gpu_gb // (peak + 2.0)) if peak == peak else 'n/a'} trainings fit "
                  "(2 GB each for context and allocator slack)"))
        import ray

        if ray.is_initialized():
            ray.shutdown()
        start_local_ray(num_cpus=os.cpu_count(), num_gpus=0 if DRY else 1)
        try:
            grids = {k: _grid(tmp / f"ray-{k}", "ray", 1.0 / k) for k in TASKS_PER_GPU}
        finally:
            ray.shutdown()
    n_images = N_FOLDS * round(n_lesions * (N_FOLDS - 1) / N_FOLDS) * epochs * 3
    base_wall, _ = grids[1]
    for k, (wall, rates) in grids.items():
        per_fold = sum(rates) / len(rates)
        yield Result(
            name=(f"{k} training(s) per GPU on Ray (gpus_per_task {1 / k:g})" if not DRY else
                  f"dry run on the CPU, gpus_per_task {1 / k:g} (not used: CPU tasks of "
                  f"{CPUS_PER_TASK} CPU)") + ", grid view images/s, task start-up included",
            value=n_images / wall, unit="img/s", reference="a bare ResNet50, bf16 + "
            "channels_last", reference_value=bare, higher_is_better=True,
            note=(f"grid wall {wall:.1f} s (ratio to 1 per GPU {wall / base_wall:.3f}); each "
                  f"fold's own rate {per_fold:.1f} img/s (min {min(rates):.1f}, max "
                  f"{max(rates):.1f})"))
