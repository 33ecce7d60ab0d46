"""Training one fold: overfitting, attention guidance, exact resume, seeded repeatability."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from magn_lib.errors import ConfigError
from magn_lib.model import MAGN
from magn_lib.repro import set_determinism
from magn_lib.settings import TrainSettings
from magn_lib.train import CHECKPOINT_FORMAT, dataset_labels, fit_fold, predict

VIEWS3 = ("sagittal", "coronal", "axial")


def _settings(**changes) -> TrainSettings:
    """The paper's optimisation (Adam 1e-3) on the CPU, with ``changes``."""
    return TrainSettings(**{"learning_rate": 1e-3, "device": "cpu", **changes})


class KilledAfter(Dataset):
    """Raises after ``n`` item reads: a run killed in the middle of an epoch."""

    def __init__(self, ds, n):
        self.ds, self.n, self.reads = ds, n, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.n:
            raise KeyboardInterrupt("killed")
        return self.ds[i]


def _model(views=("axial",), seed=0):
    set_determinism(seed)
    return MAGN(views=views, backbone="resnet18")


def test_tiny_model_overfits_eight_samples(toy_crops):
    ds = toy_crops(8, size=32, views=("axial",), seed=1)
    # shuffle the labels so that only memorising can fit them
    for item, label in zip(ds.items, [1, 0, 0, 1, 1, 0, 1, 0], strict=True):
        item["label"] = torch.tensor(float(label))
    model = _model()
    history = fit_fold(model, ds, _settings(epochs=30, batch_size=8, attention_weight=0.0,
                                            seed=0), progress=False)
    assert history["train_bce"].iloc[-1] < 0.05 < history["train_bce"].iloc[0]
    pred = predict(model, ds, batch_size=8)
    assert ((pred["probability"] >= 0.5).astype(int) == pred["label"]).all()


def test_attention_guidance_lowers_cam_mask_error(toy_crops):
    # 64 px -> 2x2 CAM grid; a 32 px lesion covers one to four cells
    ds = toy_crops(8, size=64, views=("axial",), seed=2, lesion_px=32)
    settings = _settings(epochs=8, batch_size=8, seed=0)
    guided = fit_fold(_model(), ds, replace(settings, attention_weight=1.0), progress=False)
    unguided = fit_fold(_model(), ds, replace(settings, attention_weight=0.0), progress=False)
    first, last = guided["train_attention"].iloc[0], guided["train_attention"].iloc[-1]
    assert last < 0.6 * first
    assert last < 0.6 * unguided["train_attention"].iloc[-1]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_kill_equals_uninterrupted(tmp_path, toy_crops):
    views = ("axial",)
    ds = toy_crops(6, size=48, views=views, seed=3)  # 2x2 CAMs
    settings = _settings(epochs=3, batch_size=4, lr_step_epochs=1, lr_gamma=0.5,
                         attention_weight=0.5, seed=11)
    kw = dict(progress=False)
    full_model = _model(views, seed=5)
    full = fit_fold(full_model, ds, settings, **kw)  # never interrupted, no checkpoint

    ckpt = tmp_path / "killed.pt"
    model = _model(views, seed=5)
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of epoch 2
        fit_fold(model, KilledAfter(ds, n=len(ds) + 3), settings, checkpoint_path=ckpt, **kw)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and saved["format"] == CHECKPOINT_FORMAT
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files

    torch.manual_seed(999)  # disturb every random state a resumed run must restore
    np.random.seed(999)  # noqa: NPY002
    fresh = _model(views, seed=123)  # other initial weights: the checkpoint must replace them
    resumed = fit_fold(fresh, ds, settings, checkpoint_path=ckpt, resume=True, **kw)
    assert _same_weights(fresh, full_model)
    cols = [c for c in full.columns if c != "seconds"]
    pd.testing.assert_frame_equal(resumed[cols], full[cols])
    assert list(full["learning_rate"]) == [1e-3, 5e-4, 2.5e-4]

    # the finished checkpoint resumes to a no-op; changed training parameters are refused,
    # where the work runs is not a training parameter
    again = fit_fold(fresh, ds, replace(settings, num_workers=1),
                     checkpoint_path=ckpt, resume=True, **kw)
    assert len(again) == 3 and _same_weights(fresh, full_model)
    with pytest.raises(ConfigError, match="other training parameters.*learning_rate"):
        fit_fold(fresh, ds, replace(settings, learning_rate=1e-2), checkpoint_path=ckpt,
                 resume=True, **kw)
    with pytest.raises(ConfigError, match="beyond the 2 epochs"):
        fit_fold(fresh, ds, replace(settings, epochs=2), checkpoint_path=ckpt, resume=True, **kw)


def test_two_runs_with_one_seed_are_identical(toy_crops):
    ds = toy_crops(6, size=32, views=VIEWS3, seed=4)

    def run(seed):
        model = _model(VIEWS3, seed=seed)
        fit_fold(model, ds, _settings(epochs=2, batch_size=4, attention_weight=0.5, seed=seed),
                 progress=False)
        return predict(model, ds, batch_size=4)

    a, b, c = run(7), run(7), run(8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["probability"], c["probability"])


def test_predict_table_and_mode_restored(toy_crops):
    ds = toy_crops(5, size=32, views=("axial",), seed=5)
    model = _model().train()
    pred = predict(model, ds, batch_size=2)
    assert model.training
    assert list(pred.columns) == ["lesion_id", "patient_id", "label", "probability"]
    assert list(pred["lesion_id"]) == [f"P{i:03d}-L1" for i in range(5)]
    assert pred["label"].tolist() == [0, 1, 0, 1, 0]
    assert pred["probability"].between(0, 1).all()
    # eval mode: the same as calling the model in eval mode directly
    model.eval()
    with torch.no_grad():
        direct = torch.sigmoid(model({"axial": torch.stack([ds[i]["images"]["axial"]
                                                            for i in range(5)])})[0])
    np.testing.assert_allclose(pred["probability"], direct.numpy(), rtol=1e-5, atol=1e-6)


def test_validation_history_and_class_weighting(toy_crops):
    train, val = toy_crops(6, size=32, seed=6), toy_crops(4, size=32, seed=7)
    model = _model(VIEWS3)
    model.eval()
    history = fit_fold(model, train, _settings(epochs=2, batch_size=4, attention_weight=0.5,
                                               class_weighting=True, seed=0),
                       val_ds=val, progress=False)
    assert not model.training  # mode restored
    for col in ("epoch", "learning_rate", "train_loss", "train_bce", "train_attention",
                "train_attention_axial", "val_loss", "val_accuracy", "val_auc", "val_f1",
                "val_sensitivity", "val_specificity", "seconds"):
        assert col in history.columns
    assert history["epoch"].tolist() == [1, 2]
    assert dataset_labels(train).tolist() == [0, 1, 0, 1, 0, 1]
    one_class = toy_crops(3, size=32, seed=8)
    one_class.labels = [0, 0, 0]
    with pytest.raises(ConfigError, match="both classes"):
        fit_fold(model, one_class, _settings(epochs=1, attention_weight=0.0,
                                             class_weighting=True, seed=0), progress=False)


def test_training_draws_new_augmentations_each_epoch(toy_crops):
    class Recorder(Dataset):
        def __init__(self, inner):
            self.inner, self.epochs = inner, []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            return self.inner[i]

    data = Recorder(toy_crops(8, size=32, views=("axial",)))
    fit_fold(_model(), data, _settings(epochs=3, batch_size=4, attention_weight=0.0, seed=0),
             progress=False)
    assert data.epochs == [0, 1, 2]


def test_time_based_checkpoints(tmp_path, toy_crops):
    ds = toy_crops(8, size=32, views=("axial",))
    settings = _settings(epochs=3, batch_size=4, attention_weight=0.0, seed=0)
    rare = tmp_path / "rare.pt"
    fit_fold(_model(), ds, settings, checkpoint_path=rare, checkpoint_seconds=1e9,
             progress=False)
    assert not rare.exists()  # never due, and never after the last epoch
    often = tmp_path / "often.pt"
    fit_fold(_model(), ds, settings, checkpoint_path=often, checkpoint_seconds=0.0,
             progress=False)
    assert torch.load(often, weights_only=True)["epoch"] == 2  # every epoch but the last
