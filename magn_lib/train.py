"""Fit one cross-validation fold of MAGN, with atomic checkpoints and exact resume.

The optimisation is the paper's (Chen et al. 2022): Adam at ``lr`` (1e-3), learning rate ×0.9
every 5 epochs (``StepLR``), batch 16, loss ``BCE + attention_weight · Σ_views MSE``
(:mod:`magn_lib.losses`). After every epoch a checkpoint with the model, optimiser, scheduler,
every random state (torch, CUDA, NumPy, Python, the DataLoader's shuffling generator) and the
history so far is written to a temporary file and renamed over the old one (``os.replace``), so a
killed run leaves either the previous or the new checkpoint, never half of one. ``resume=True``
continues from it and, on CPU, ends with the same weights, bit for bit, as a run that was never
interrupted.

Datasets yield dicts ``{"images": {view: Tensor[3, S, S]}, "masks": {view: Tensor[S, S]},
"label": Tensor[], "lesion_id": str, "patient_id": str}`` (:mod:`magn_lib.data`).

On CUDA the forward pass runs under bf16 autocast with channels_last tensors (speed); on CPU in
float32.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from magn_lib.errors import ConfigError
from magn_lib.losses import magn_loss_parts
from magn_lib.progress import tqdm
from magn_lib.repro import set_determinism

__all__ = ["CHECKPOINT_FORMAT", "dataset_labels", "fit_fold", "predict", "resolve_device"]

CHECKPOINT_FORMAT = 1
# parameters that must match for a checkpoint to be resumed (epochs may grow)
_RESUME_KEYS = ("batch_size", "lr", "lr_step_epochs", "lr_gamma", "attention_weight",
                "class_weighting", "seed")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the first CUDA device when one is available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def dataset_labels(ds: Dataset) -> np.ndarray:
    """Labels of a dataset as ``int`` array: its ``labels`` attribute, else item by item."""
    labels = getattr(ds, "labels", None)
    if labels is None:
        labels = [float(ds[i]["label"]) for i in range(len(ds))]
    return np.asarray(labels, dtype=float).astype(int)


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> tuple:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = {v: x.to(device, non_blocking=True, memory_format=fmt)
              for v, x in batch["images"].items()}
    masks = {v: m.to(device, non_blocking=True) for v, m in batch["masks"].items()}
    return images, masks, batch["label"].to(device).float().view(-1)


def _loader(ds: Dataset, *, batch_size: int, shuffle: bool, generator: torch.Generator | None,
            num_workers: int, device: torch.device) -> DataLoader:
    # BatchNorm cannot train on a batch of one when layer4 is 1x1: drop such a last batch
    drop_last = shuffle and len(ds) % batch_size == 1 and len(ds) > 1
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last,
                      pin_memory=device.type == "cuda")


def _rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    # the legacy global generator is what user code (augmentation) may draw from
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
        "loader": loader_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    numpy_state = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                   n["gauss"])
    np.random.set_state(numpy_state)  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)  # atomic rename (os.replace)
    finally:
        tmp.unlink(missing_ok=True)


def _epoch_pass(model: nn.Module, loader: DataLoader, *, device: torch.device, amp: bool,
                attention_weight: float, pos_weight: float | None,
                optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, float], dict]:
    """One pass; trains when ``optimizer`` is given. Returns mean loss parts and predictions."""
    sums: dict[str, float] = {}
    n_seen = 0
    out: dict[str, list] = {"lesion_id": [], "patient_id": [], "label": [], "probability": []}
    for batch in loader:
        images, masks, y = _to_device(batch, device, channels_last=amp)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits, cams = model(images)
        parts = magn_loss_parts(logits, y, cams, masks, attention_weight, pos_weight=pos_weight)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
        b = len(y)
        n_seen += b
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
        out["lesion_id"] += list(batch["lesion_id"])
        out["patient_id"] += list(batch["patient_id"])
        out["label"] += [int(t) for t in batch["label"].view(-1).tolist()]
        out["probability"] += torch.sigmoid(logits.detach().float()).cpu().tolist()
    means = {k: v / max(n_seen, 1) for k, v in sums.items()}
    return means, out


def _binary_summary(labels: list[int], probs: list[float]) -> dict[str, float]:
    y = np.asarray(labels)
    p = np.asarray(probs)
    auc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else math.nan
    return {"auc": float(auc), "acc": float(np.mean((p >= 0.5) == (y == 1)))}


def fit_fold(
    model: nn.Module,
    train_ds: Dataset,
    *,
    val_ds: Dataset | None = None,
    epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    lr_step_epochs: int = 5,
    lr_gamma: float = 0.9,
    attention_weight: float,
    class_weighting: bool = False,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    seed: int,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str | None = None,
    checkpoint_every: int = 1,
    checkpoint_seconds: float | None = None,
) -> pd.DataFrame:
    """Train ``model`` on one fold's training lesions; return the per-epoch history.

    Args:
        model: a :class:`~magn_lib.model.MAGN` (or any module with its ``forward`` contract);
            trained in place and left on the training device, in the train/eval mode it had.
        train_ds: training dataset (items as in the module docstring).
        val_ds: optional held-out dataset evaluated after every epoch (loss, AUC, ACC).
        epochs: total number of epochs (a resumed run trains only the missing ones).
        batch_size, lr, lr_step_epochs, lr_gamma: Adam learning rate ``lr``, multiplied by
            ``lr_gamma`` every ``lr_step_epochs`` epochs.
        attention_weight: ``λ`` of the attention-guidance loss; 0 trains without guidance.
        class_weighting: weight the MM class by ``n_metastasis / n_MM`` in the BCE.
        checkpoint_path: where the per-epoch checkpoint goes; ``None`` writes none.
        resume: continue from ``checkpoint_path`` when it exists (its training parameters must
            match; ``epochs`` may be larger); restores weights, optimiser, scheduler and RNGs.
        seed: seeds torch, NumPy, Python and the shuffling generator at the start of a fresh
            run (the model's own initialisation is the caller's: seed before building it).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_workers: DataLoader worker processes.
        progress: show a progress bar over epochs.
        desc: label of the progress bar.
        checkpoint_every: write the checkpoint every this many epochs (and after the last);
            raise it when checkpoints of large models cost more than their epochs.
        checkpoint_seconds: instead of ``checkpoint_every``: write the checkpoint after an
            epoch when at least this many seconds passed since the last one (or the start),
            and not after the last epoch (the caller keeps the final weights). Bounds the work
            lost to a kill while keeping checkpoint I/O small when epochs are short.

    Returns:
        DataFrame, one row per epoch: ``epoch`` (1-based), ``lr`` (the rate used in that epoch),
        ``train_loss``, ``train_bce``, ``train_attention``, ``train_attention_<view>``,
        ``seconds``, and with ``val_ds`` also ``val_loss``, ``val_bce``, ``val_attention``,
        ``val_attention_<view>``, ``val_auc``, ``val_acc`` (threshold 0.5).
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be at least 1, got {epochs}, {batch_size}")
    if len(train_ds) == 0:
        raise ConfigError("the training dataset is empty")
    dev = resolve_device(device)
    amp = dev.type == "cuda"
    params = {"batch_size": batch_size, "lr": lr, "lr_step_epochs": lr_step_epochs,
              "lr_gamma": lr_gamma, "attention_weight": attention_weight,
              "class_weighting": class_weighting, "seed": seed}
    pos_weight = None
    if class_weighting:
        labels = dataset_labels(train_ds)
        n_pos = int(labels.sum())
        if n_pos == 0 or n_pos == len(labels):
            raise ConfigError("class_weighting needs both classes in the training dataset")
        pos_weight = (len(labels) - n_pos) / n_pos

    was_training = model.training
    model.to(dev)
    if amp:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step_epochs,
                                                gamma=lr_gamma)
    loader_gen = torch.Generator()
    history: list[dict[str, Any]] = []
    start = 0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and path is not None and path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"checkpoint {path.name}: unknown format {ckpt.get('format')!r}")
        changed = {k: (ckpt["params"].get(k), v) for k, v in params.items()
                   if ckpt["params"].get(k) != v}
        if changed:
            raise ConfigError(
                f"checkpoint {path.name} was written with other training parameters "
                f"(checkpoint vs now: {changed}); delete it to start the fold afresh"
            )
        if int(ckpt["epoch"]) > epochs:
            raise ConfigError(
                f"checkpoint {path.name} is at epoch {ckpt['epoch']}, beyond the {epochs} "
                "epochs asked for; delete it or ask for at least as many epochs"
            )
        set_determinism(seed)  # deterministic kernels; the random states come from the file
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], loader_gen)
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
    else:
        set_determinism(seed)
        loader_gen.manual_seed(seed)

    train_loader = _loader(train_ds, batch_size=batch_size, shuffle=True, generator=loader_gen,
                           num_workers=num_workers, device=dev)
    val_loader = None
    if val_ds is not None:
        val_loader = _loader(val_ds, batch_size=batch_size, shuffle=False, generator=None,
                             num_workers=num_workers, device=dev)
    bar = tqdm(total=epochs, initial=min(start, epochs), desc=desc or "fold", unit="epoch",
               disable=not progress, leave=False)
    last_checkpoint = time.perf_counter()
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            if hasattr(train_ds, "set_epoch"):
                # fresh augmentation draws every epoch, reproducible from (seed, epoch)
                train_ds.set_epoch(epoch)
            model.train()
            means, _ = _epoch_pass(model, train_loader, device=dev, amp=amp,
                                   attention_weight=attention_weight, pos_weight=pos_weight,
                                   optimizer=optimizer)
            row.update({f"train_{k}": v for k, v in means.items()})
            scheduler.step()
            if val_loader is not None:
                model.eval()
                with torch.no_grad():
                    vmeans, vout = _epoch_pass(model, val_loader, device=dev, amp=amp,
                                               attention_weight=attention_weight,
                                               pos_weight=pos_weight, optimizer=None)
                row.update({f"val_{k}": v for k, v in vmeans.items()})
                row.update({f"val_{k}": v for k, v in
                            _binary_summary(vout["label"], vout["probability"]).items()})
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if checkpoint_seconds is None:
                due = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs
            else:
                due = (epoch + 1 < epochs
                       and time.perf_counter() - last_checkpoint >= checkpoint_seconds)
            if path is not None and due:
                last_checkpoint = time.perf_counter()
                _save_atomic({
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "params": params,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(loader_gen),
                    "history": history,
                }, path)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    finally:
        bar.close()
        model.train(was_training)
    return pd.DataFrame(history)


@torch.no_grad()
def predict(
    model: nn.Module,
    ds: Dataset,
    *,
    batch_size: int = 32,
    device: str | None = None,
    num_workers: int = 0,
) -> pd.DataFrame:
    """MM probabilities for every item of ``ds``, in dataset order.

    Runs in eval mode without gradients; restores the model's train/eval mode and device.

    Args:
        model: a trained :class:`~magn_lib.model.MAGN`.
        ds: dataset with the items of the module docstring.
        batch_size: items per forward pass.
        device: ``None`` = where the model is; ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` move it
            there for the call.
        num_workers: DataLoader worker processes.

    Returns:
        DataFrame with ``lesion_id``, ``patient_id`` (str), ``label`` (int 0/1) and
        ``probability`` (float in [0, 1], sigmoid of the logit).
    """
    original = next(model.parameters()).device
    dev = original if device is None else resolve_device(device)
    amp = dev.type == "cuda"
    was_training = model.training
    model.to(dev)
    model.eval()
    try:
        loader = _loader(ds, batch_size=batch_size, shuffle=False, generator=None,
                         num_workers=num_workers, device=dev)
        out: dict[str, list] = {"lesion_id": [], "patient_id": [], "label": [],
                                "probability": []}
        for batch in loader:
            images = {v: x.to(dev) for v, x in batch["images"].items()}
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                logits, _ = model(images)
            out["lesion_id"] += [str(s) for s in batch["lesion_id"]]
            out["patient_id"] += [str(s) for s in batch["patient_id"]]
            out["label"] += [int(t) for t in batch["label"].view(-1).tolist()]
            out["probability"] += torch.sigmoid(logits.float()).cpu().tolist()
    finally:
        model.to(original)
        model.train(was_training)
    return pd.DataFrame(out).astype({"label": int, "probability": float})
