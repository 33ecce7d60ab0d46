"""Grad-CAM through the grad-cam package, the model's own CAMs, and fidelity numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magn_lib.explain import (
    attention_fidelity,
    class_cams,
    compare_guidance,
    energy_inside,
    gradcam,
    pointing_game,
    summarize_fidelity,
)
from magn_lib.losses import normalized_class_cam
from magn_lib.model import MAGN

VIEWS3 = ("sagittal", "coronal", "axial")


def _images(views, b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {v: torch.rand(b, 3, size, size, generator=g) for v in views}


def _model(views=VIEWS3, shared=False, seed=0):
    torch.manual_seed(seed)
    return MAGN(views=views, backbone="resnet18", shared_backbone=shared)


def _manual_gradcam(model, images, targets, view):
    """Grad-CAM written out (Selvaraju et al. 2017) with autograd, as an independent check."""
    model.eval()
    captured = {}
    layer = model.feature_layer(view)
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("f", o))
    try:
        logits, _ = model(images)
    finally:
        handle.remove()
    feats = captured["f"]
    sign = torch.tensor([1.0 if t == 1 else -1.0 for t in targets])
    (grads,) = torch.autograd.grad((sign * logits).sum(), feats)
    if model.shared_backbone:  # the shared backbone ran once over the views stacked on the batch
        i = model.views.index(view)
        feats, grads = feats.chunk(len(model.views))[i], grads.chunk(len(model.views))[i]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * feats).sum(1, keepdim=True)).detach()
    lo = cam.amin(dim=(2, 3), keepdim=True)
    cam = cam - lo
    cam = cam / (1e-7 + cam.amax(dim=(2, 3), keepdim=True))
    size = images[view].shape[-2:]
    up = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    return up.numpy()


@pytest.mark.parametrize("shared", [False, True])
def test_gradcam_matches_manual_reference(shared):
    model = _model(shared=shared)
    images = _images(VIEWS3, b=2, size=64, seed=1)
    targets = [1, 0]
    maps = gradcam(model, images, targets=targets)
    assert set(maps) == set(VIEWS3)
    for v in VIEWS3:
        assert maps[v].shape == (2, 64, 64)
        assert maps[v].min() >= 0 and maps[v].max() <= 1 + 1e-6
        np.testing.assert_allclose(maps[v], _manual_gradcam(model, images, targets, v),
                                   atol=2e-4)


def test_gradcam_leaves_model_as_found():
    model = _model(views=("axial",)).train()
    model.backbones["axial"].conv1.weight.requires_grad_(False)
    maps = gradcam(model, _images(("axial",), b=3, size=96))
    assert maps["axial"].shape == (3, 96, 96)
    assert model.training
    assert not model.backbones["axial"].conv1.weight.requires_grad
    assert model.classifier.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    # the class explained matters: MM evidence and metastasis evidence differ
    images = _images(("axial",), b=1, size=96, seed=4)
    mm = gradcam(model, images, targets=[1])["axial"]
    met = gradcam(model, images, targets=[0])["axial"]
    assert not np.allclose(mm, met)


def test_class_cams_are_the_loss_maps_upsampled():
    model = _model()
    images = _images(VIEWS3, b=2, size=64, seed=2)
    maps = class_cams(model, images, targets=[0, 1])
    model.eval()
    with torch.no_grad():
        _, cams = model(images)
    for v in VIEWS3:
        a = normalized_class_cam(cams[v], torch.tensor([0, 1]))
        ref = F.interpolate(a[:, None], size=(64, 64), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(maps[v], ref[:, 0].numpy(), atol=1e-6)
        assert maps[v].min() >= 0 and maps[v].max() <= 1


def test_energy_inside_and_pointing_game_hand_cases():
    mask = np.zeros((4, 10, 10))
    mask[:, 2:5, 2:5] = 1  # 9 of 100 pixels
    heat = np.zeros((4, 10, 10))
    heat[0, 3, 3] = 1.0  # all energy inside, peak inside
    heat[1] = 1.0  # uniform: energy fraction = mask fraction; flat map is a miss
    heat[2, 3, 3], heat[2, 8, 8] = 1.0, 3.0  # a quarter inside; peak outside
    heat[3, 3, 6] = 1.0  # peak 2 px right of the mask
    np.testing.assert_allclose(energy_inside(heat, mask), [1.0, 0.09, 0.25, 0.0])
    np.testing.assert_array_equal(pointing_game(heat, mask), [1, 0, 0, 0])
    np.testing.assert_array_equal(pointing_game(heat, mask, tolerance_px=2), [1, 0, 0, 1])
    empty = np.zeros((1, 10, 10))
    assert np.isnan(energy_inside(heat[:1], empty)).all()
    assert np.isnan(pointing_game(heat[:1], empty)).all()
    assert np.isnan(energy_inside(np.zeros((1, 10, 10)), mask[:1])).all()


def test_fidelity_tables(toy_crops):
    ds = toy_crops(4, size=64, lesion_px=30)
    table = compare_guidance(_model(seed=1), _model(seed=2), ds, batch_size=3)
    assert len(table) == 2 * 4 * 3 * 2  # guidance x lesions x views x methods
    assert set(table["guidance"]) == {"guided", "unguided"}
    assert set(table["method"]) == {"cam", "grad-cam"}
    # NaN only where a Grad-CAM map is all zero (ReLU of negative evidence), never for CAMs
    assert table["energy_inside"].dropna().between(0, 1).all()
    assert table.loc[table["method"] == "cam", "energy_inside"].notna().all()
    assert np.allclose(table["mask_fraction"], 900 / 4096)
    summary = summarize_fidelity(table)
    assert len(summary) == 2 * 3 * 2
    assert (summary["n"] == 4).all()
    single = attention_fidelity(_model(views=("coronal",)), ds, methods=("cam",))
    assert set(single["view"]) == {"coronal"} and len(single) == 4
    with pytest.raises(ValueError, match="not among"):
        attention_fidelity(_model(views=("coronal",)), ds, methods=("saliency",))
