"""Fit one cross-validation fold of MAGN, with atomic checkpoints and exact resume.

The optimisation is the paper's (Chen et al. 2022), set by a
:class:`~magn_lib.settings.TrainSettings`: Adam at ``learning_rate`` (1e-3), ×0.9 every 5 epochs
(``StepLR``), batch 16, loss ``BCE + attention_weight · Σ_views MSE`` (:mod:`magn_lib.losses`).
:func:`fit_fold` is four steps: restore (or seed) the fold's state, train one epoch, ask the
:class:`CheckpointPolicy` whether a checkpoint is due, save it. A checkpoint holds the model,
optimiser, scheduler, every random state (torch, CUDA, NumPy, Python, the DataLoader's shuffling
generator), the history so far and the settings it was written with; it is written to a
temporary file and renamed over the old one (``os.replace``), so a killed run leaves either the
previous or the new checkpoint, never half of one. ``resume=True`` continues from it and, on
CPU, ends with the same weights, bit for bit, as a run that was never interrupted.

Datasets yield dicts ``{"images": {view: Tensor[3, S, S]}, "masks": {view: Tensor[S, S]},
"label": Tensor[], "lesion_id": str, "patient_id": str}`` (:mod:`magn_lib.data`).

On CUDA the forward pass runs under bf16 autocast with channels_last tensors (speed); on CPU in
float32.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from magn_lib.errors import ConfigError
from magn_lib.files import save
from magn_lib.losses import magn_loss_parts
from magn_lib.progress import tqdm
from magn_lib.repro import set_determinism
from magn_lib.settings import TrainSettings, settings_record
from magn_lib.stats import binary_metrics

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointPolicy",
    "dataset_labels",
    "fit_fold",
    "predict",
    "resolve_device",
]

# 2: the settings a resume must match are stored under "settings" (TrainSettings field names)
CHECKPOINT_FORMAT = 2


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
    save(path, lambda stream: torch.save(obj, stream))


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


def _pos_weight(train_ds: Dataset) -> float:
    """``n_metastasis / n_MM`` of the training lesions (the BCE weight of the MM class)."""
    labels = dataset_labels(train_ds)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        raise ConfigError("class_weighting needs both classes in the training dataset")
    return (len(labels) - n_pos) / n_pos


def _resume_record(settings: TrainSettings) -> dict[str, Any]:
    """The settings a checkpoint must share with the run resuming it (``epochs`` may grow)."""
    record = settings_record(settings)
    record.pop("epochs", None)
    return record


@dataclass
class _FoldState:
    """Everything a fold's training carries from one epoch to the next (what a checkpoint
    holds): weights, optimiser, scheduler, the shuffling generator and the history so far."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader_gen: torch.Generator
    history: list[dict[str, Any]]
    epochs_done: int = 0

    @classmethod
    def fresh(cls, model: nn.Module, settings: TrainSettings) -> _FoldState:
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=settings.lr_step_epochs, gamma=settings.lr_gamma)
        return cls(model, optimizer, scheduler, torch.Generator(), [])


def _start(state: _FoldState, settings: TrainSettings) -> None:
    """Seed a run that starts from epoch 0."""
    set_determinism(settings.seed)
    state.loader_gen.manual_seed(settings.seed)


def _restore(state: _FoldState, path: Path, settings: TrainSettings) -> None:
    """Continue from the checkpoint at ``path``: weights, optimiser, scheduler, every random
    state and the history. Refuses a checkpoint of other settings or beyond ``epochs``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint {path.name}: unknown format {ckpt.get('format')!r} "
                          f"(this version writes {CHECKPOINT_FORMAT}); delete it to start the "
                          "fold afresh")
    saved, now = ckpt["settings"], _resume_record(settings)
    changed = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
               if saved.get(k) != now.get(k)}
    if changed:
        raise ConfigError(
            f"checkpoint {path.name} was written with other training parameters "
            f"(checkpoint vs now: {changed}); delete it to start the fold afresh"
        )
    if int(ckpt["epoch"]) > settings.epochs:
        raise ConfigError(
            f"checkpoint {path.name} is at epoch {ckpt['epoch']}, beyond the {settings.epochs} "
            "epochs asked for; delete it or ask for at least as many epochs"
        )
    set_determinism(settings.seed)  # deterministic kernels; the random states come from the file
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"], state.loader_gen)
    state.history = list(ckpt["history"])
    state.epochs_done = int(ckpt["epoch"])


def _save(state: _FoldState, path: Path, settings: TrainSettings) -> None:
    """Write the checkpoint of ``state`` atomically."""
    _save_atomic({
        "format": CHECKPOINT_FORMAT,
        "epoch": state.epochs_done,
        "settings": _resume_record(settings),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": _rng_state(state.loader_gen),
        "history": state.history,
    }, path)


@dataclass
class CheckpointPolicy:
    """When a fold writes its checkpoint.

    ``seconds=None``: after every ``every``-th epoch and after the last. Otherwise after an
    epoch when at least ``seconds`` passed since the last checkpoint (or the start), and not
    after the last epoch (the caller keeps the final weights): bounds the work a kill loses
    while keeping checkpoint I/O small when epochs are short.
    """

    every: int = 1
    seconds: float | None = None
    last: float = field(default_factory=time.perf_counter)

    def due(self, epochs_done: int, epochs: int) -> bool:
        if self.seconds is None:
            return epochs_done % self.every == 0 or epochs_done == epochs
        return epochs_done < epochs and time.perf_counter() - self.last >= self.seconds

    def written(self) -> None:
        self.last = time.perf_counter()


def _one_epoch(state: _FoldState, train_ds: Dataset, train_loader: DataLoader,
               val_loader: DataLoader | None, *, device: torch.device, amp: bool,
               attention_weight: float, pos_weight: float | None) -> dict[str, Any]:
    """Train one epoch (and evaluate the held-out loader); returns the epoch's history row."""
    t0 = time.perf_counter()
    epoch = state.epochs_done
    model = state.model
    row: dict[str, Any] = {"epoch": epoch + 1,
                           "learning_rate": state.optimizer.param_groups[0]["lr"]}
    if hasattr(train_ds, "set_epoch"):
        # fresh augmentation draws every epoch, reproducible from (seed, epoch)
        train_ds.set_epoch(epoch)
    model.train()
    means, _ = _epoch_pass(model, train_loader, device=device, amp=amp,
                           attention_weight=attention_weight, pos_weight=pos_weight,
                           optimizer=state.optimizer)
    row.update({f"train_{k}": v for k, v in means.items()})
    state.scheduler.step()
    if val_loader is not None:
        model.eval()
        with torch.no_grad():
            vmeans, vout = _epoch_pass(model, val_loader, device=device, amp=amp,
                                       attention_weight=attention_weight,
                                       pos_weight=pos_weight, optimizer=None)
        row.update({f"val_{k}": v for k, v in vmeans.items()})
        row.update({f"val_{k}": v for k, v in
                    binary_metrics(vout["label"], vout["probability"]).items()})
    row["seconds"] = time.perf_counter() - t0
    state.history.append(row)
    state.epochs_done = epoch + 1
    return row


def fit_fold(
    model: nn.Module,
    train_ds: Dataset,
    settings: TrainSettings,
    *,
    val_ds: Dataset | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    checkpoint_seconds: float | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> pd.DataFrame:
    """Train ``model`` on one fold's training lesions; return the per-epoch history.

    Args:
        model: a :class:`~magn_lib.model.MAGN` (or any module with its ``forward`` contract);
            trained in place and left on the training device, in the train/eval mode it had.
        train_ds: training dataset (items as in the module docstring).
        settings: the optimisation (:class:`~magn_lib.settings.TrainSettings`): Adam at
            ``learning_rate``, multiplied by ``lr_gamma`` every ``lr_step_epochs`` epochs, for
            ``epochs`` epochs (a resumed run trains only the missing ones) of ``batch_size``
            lesions; ``attention_weight`` (0 trains without guidance); ``class_weighting``;
            ``seed`` seeds torch, NumPy, Python and the shuffling generator at the start of a
            fresh run (the model's own initialisation is the caller's: seed before building
            it); ``device`` (``"auto"``, ``"cpu"``, ``"cuda[:N]"``) and ``num_workers``.
        val_ds: optional held-out dataset evaluated after every epoch (loss and the metrics of
            :func:`magn_lib.stats.binary_metrics`).
        checkpoint_path: where the checkpoint goes; ``None`` writes none.
        resume: continue from ``checkpoint_path`` when it exists (written with the same
            settings but for ``epochs``, which may be larger); restores weights, optimiser,
            scheduler and RNGs.
        checkpoint_every, checkpoint_seconds: when the checkpoint is written
            (:class:`CheckpointPolicy`): every this many epochs and after the last, or, with
            ``checkpoint_seconds``, when that many seconds passed since the last one and not
            after the last epoch.
        progress: show a progress bar over epochs.
        desc: label of the progress bar.

    Returns:
        DataFrame, one row per epoch: ``epoch`` (1-based), ``learning_rate`` (the rate used in
        that epoch), ``train_loss``, ``train_bce``, ``train_attention``,
        ``train_attention_<view>``, ``seconds``, and with ``val_ds`` also ``val_loss``,
        ``val_bce``, ``val_attention``, ``val_attention_<view>``, ``val_accuracy``,
        ``val_auc``, ``val_f1``, ``val_sensitivity``, ``val_specificity`` (threshold 0.5).
    """
    if len(train_ds) == 0:
        raise ConfigError("the training dataset is empty")
    dev = resolve_device(settings.device)
    amp = dev.type == "cuda"
    pos_weight = _pos_weight(train_ds) if settings.class_weighting else None

    was_training = model.training
    model.to(dev)
    if amp:
        model.to(memory_format=torch.channels_last)
    state = _FoldState.fresh(model, settings)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and path is not None and path.is_file():
        _restore(state, path, settings)
    else:
        _start(state, settings)

    train_loader = _loader(train_ds, batch_size=settings.batch_size, shuffle=True,
                           generator=state.loader_gen, num_workers=settings.num_workers,
                           device=dev)
    val_loader = None
    if val_ds is not None:
        val_loader = _loader(val_ds, batch_size=settings.batch_size, shuffle=False,
                             generator=None, num_workers=settings.num_workers, device=dev)
    epochs = settings.epochs
    bar = tqdm(total=epochs, initial=min(state.epochs_done, epochs), desc=desc or "fold",
               unit="epoch", disable=not progress, leave=False)
    policy = CheckpointPolicy(every=checkpoint_every, seconds=checkpoint_seconds)
    try:
        while state.epochs_done < epochs:
            row = _one_epoch(state, train_ds, train_loader, val_loader, device=dev, amp=amp,
                             attention_weight=settings.attention_weight, pos_weight=pos_weight)
            if path is not None and policy.due(state.epochs_done, epochs):
                policy.written()
                _save(state, path, settings)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    finally:
        bar.close()
        model.train(was_training)
    return pd.DataFrame(state.history)


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
