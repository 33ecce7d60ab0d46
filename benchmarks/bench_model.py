"""Cost of MAGN's extras: one training step vs three bare torchvision ResNet steps.

A MAGN step (3 views, attention guidance on, batch 16: forward with LSE pooling and CAMs, BCE +
0.5 · Σ attention MSE, backward, Adam) is compared with three bare torchvision ResNets of the same
depth on the same batch (forward with average pooling and a linear head to one logit, BCE,
backward, Adam, one network per view). The networks' convolutions are identical, so the ratio is
the overhead of LSE pooling, the CAMs and the attention loss; target ≤ 1.10. Steps of the two
kinds alternate and the best of several is kept, so load from other processes affects both.

A third line times one ``fit_fold`` epoch on 60 synthetic lesions (what sizes the ``demo``
profile) against the same number of bare MAGN steps: the pipeline's own overhead (data loading,
collation, logging, checkpoint-free).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn.functional as F
import torchvision

from benchmarks.common import Result
from magn_lib.losses import magn_loss
from magn_lib.model import MAGN
from magn_lib.settings import TrainSettings
from magn_lib.train import fit_fold
from tests.helpers import ToyCrops

VIEWS = ("sagittal", "coronal", "axial")
BATCH = 16


def _batch(size: int, seed: int = 0) -> tuple[dict, dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {v: torch.rand(BATCH, 3, size, size, generator=g) for v in VIEWS}
    masks = {v: (torch.rand(BATCH, size, size, generator=g) > 0.8).float() for v in VIEWS}
    labels = (torch.arange(BATCH) % 2).float()
    return images, masks, labels


def _interleaved(fns: list, repeat: int) -> list[float]:
    for fn in fns:  # warm-up: allocator, oneDNN primitive caches
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _step_ratio(backbone: str, size: int, repeat: int) -> Result:
    torch.manual_seed(0)
    images, masks, labels = _batch(size)
    magn = MAGN(VIEWS, backbone=backbone).train()
    magn_opt = torch.optim.Adam(magn.parameters(), lr=1e-3)
    bare = [torchvision.models.get_model(backbone, num_classes=1).train() for _ in VIEWS]
    bare_opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in bare]

    def magn_step() -> None:
        logits, cams = magn(images)
        loss = magn_loss(logits, labels, cams, masks, attention_weight=0.5)
        magn_opt.zero_grad(set_to_none=True)
        loss.backward()
        magn_opt.step()

    def bare_steps() -> None:
        for net, opt, v in zip(bare, bare_opts, VIEWS, strict=True):
            loss = F.binary_cross_entropy_with_logits(net(images[v]).squeeze(1), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t_magn, t_bare = _interleaved([magn_step, bare_steps], repeat)
    return Result(
        name=f"MAGN train step (3 views, attention, {backbone}, {size} px, batch {BATCH})",
        value=t_magn, reference=f"3 bare torchvision {backbone} steps", reference_value=t_bare,
        target=1.10, note=f"torch threads {torch.get_num_threads()}",
    )


def _epoch(n_lesions: int = 60, size: int = 96) -> Result:
    torch.manual_seed(0)
    model = MAGN(VIEWS, backbone="resnet18")
    ds = ToyCrops(n_lesions, size=size, views=VIEWS, seed=1)
    settings = TrainSettings(epochs=2, batch_size=BATCH, learning_rate=1e-3,
                             attention_weight=0.5, seed=0, device="cpu")
    fit_fold(model, ds, replace(settings, epochs=1), progress=False)  # warm-up
    history = fit_fold(model, ds, settings, progress=False)
    epoch = float(history["seconds"].min())
    images, masks, labels = _batch(size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def steps() -> None:
        for _ in range(-(-n_lesions // BATCH)):
            logits, cams = model(images)
            loss = magn_loss(logits, labels, cams, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    (t_steps,) = _interleaved([steps], 3)
    return Result(
        name=f"fit_fold epoch, {n_lesions} lesions, 3 views, resnet18, {size} px",
        value=epoch, reference=f"{-(-n_lesions // BATCH)} bare MAGN steps of batch {BATCH}",
        reference_value=t_steps, note=f"torch threads {torch.get_num_threads()}",
    )


def run() -> list[Result]:
    return [_step_ratio("resnet18", 96, repeat=7), _step_ratio("resnet50", 128, repeat=3),
            _epoch()]
