"""MAGN loss: hand-computed toy batch, sign and normalisation of the CAM, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from magn_lib.losses import downsample_mask, magn_loss, magn_loss_parts, normalized_class_cam


def _toy():
    logits = torch.tensor([0.5, -1.0])
    targets = torch.tensor([1.0, 0.0])  # MM, metastasis
    cams = {
        "axial": torch.tensor([[[1.0, 3.0], [2.0, 5.0]],
                               [[4.0, -2.0], [0.0, 2.0]]]),
        "sagittal": torch.tensor([[[0.0, 0.0], [0.0, 1.0]],
                                  [[7.0, 7.0], [7.0, 7.0]]]),  # constant map for sample 2
    }
    axial_mask = np.zeros((2, 4, 4), dtype=np.float32)
    axial_mask[0, 2:, 2:] = 1  # lower-right cell fully inside
    axial_mask[1, 0, :] = 1  # half of each upper cell
    sag_mask = np.zeros((2, 4, 4), dtype=np.float32)
    sag_mask[0, 0, 0] = 1  # a quarter of the upper-left cell
    masks = {"axial": torch.from_numpy(axial_mask), "sagittal": torch.from_numpy(sag_mask)}
    return logits, targets, cams, masks


def _hand_loss(attention_weight: float) -> float:
    # BCE with logits, written out: -[y log s(z) + (1-y) log(1-s(z))], mean over the batch
    def sig(z):
        return 1 / (1 + math.exp(-z))

    bce = -(math.log(sig(0.5)) + math.log(1 - sig(-1.0))) / 2
    # axial, sample 1 (MM, sign +1): A = [[1,3],[2,5]] -> (A-1)/4 = [[0,.5],[.25,1]]
    #   mask cells [[0,0],[0,1]] -> squared errors 0, .25, .0625, 0
    # axial, sample 2 (metastasis, sign -1): A = [[-4,2],[0,-2]] -> (A+4)/6 = [[0,1],[2/3,1/3]]
    #   mask cells [[.5,.5],[0,0]] -> .25, .25, 4/9, 1/9
    axial = (0 + 0.25 + 0.0625 + 0 + 0.25 + 0.25 + 4 / 9 + 1 / 9) / 8
    # sagittal, sample 1: A = [[0,0],[0,1]] normalised the same; mask [[.25,0],[0,0]]
    #   -> .0625, 0, 0, 1 ; sample 2: constant map -> normalised 0; mask all 0 -> 0
    sagittal = (0.0625 + 0 + 0 + 1 + 0) / 8
    return bce + attention_weight * (axial + sagittal)


def test_loss_equals_hand_computation():
    logits, targets, cams, masks = _toy()
    for weight in (0.5, 1.0):
        got = magn_loss(logits, targets, cams, masks, attention_weight=weight)
        assert got.item() == pytest.approx(_hand_loss(weight), rel=1e-6)
    parts = magn_loss_parts(logits, targets, cams, masks, attention_weight=0.5)
    assert parts["attention_sagittal"].item() == pytest.approx((0.0625 + 1) / 8, rel=1e-6)
    assert parts["attention"].item() == pytest.approx(
        parts["attention_axial"].item() + parts["attention_sagittal"].item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(
        parts["bce"].item() + 0.5 * parts["attention"].item(), rel=1e-6)


def test_bce_matches_torch_reference_and_pos_weight():
    logits, targets, cams, masks = _toy()
    parts = magn_loss_parts(logits, targets, cams, masks, attention_weight=0.0, pos_weight=3.0)
    z, y = logits.double(), targets.double()
    hand = -(3.0 * y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    assert parts["bce"].item() == pytest.approx(hand.mean().item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(parts["bce"].item(), rel=1e-7)
    assert parts["attention"].item() > 0  # still measured for logging


def test_normalized_class_cam_sign_range_and_constant_maps():
    cam = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]],
                        [[5.0, 5.0], [5.0, 5.0]]])
    a = normalized_class_cam(cam, torch.tensor([1, 0, 1]))
    torch.testing.assert_close(a[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    torch.testing.assert_close(a[1], torch.tensor([[1.0, 2 / 3], [1 / 3, 0.0]]))  # negated
    torch.testing.assert_close(a[2], torch.zeros(2, 2))
    assert torch.all((a >= 0) & (a <= 1))


def test_downsample_mask_is_area_mean():
    g = np.random.default_rng(0)
    m = (g.random((3, 12, 12)) > 0.6).astype(np.float32)
    got = downsample_mask(torch.from_numpy(m), (3, 3)).numpy()
    expected = m.reshape(3, 3, 4, 3, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_gradients_reach_cams_only_when_guided():
    logits, targets, cams, masks = _toy()
    logits = logits.clone().requires_grad_(True)
    cams = {v: c.clone().requires_grad_(True) for v, c in cams.items()}
    magn_loss(logits, targets, cams, masks, attention_weight=0.5).backward()
    assert cams["axial"].grad.abs().sum() > 0
    assert torch.isfinite(cams["sagittal"].grad).all()  # constant map: eps-safe, no NaN
    cams2 = {v: c.detach().clone().requires_grad_(True) for v, c in cams.items()}
    magn_loss(logits.detach().requires_grad_(True), targets, cams2, masks,
              attention_weight=0.0).backward()
    assert all(c.grad is None for c in cams2.values())


def test_inputs_not_modified_and_missing_mask_view():
    logits, targets, cams, masks = _toy()
    before = {v: c.clone() for v, c in cams.items()}
    magn_loss(logits, targets, cams, masks)
    for v in cams:
        assert torch.equal(cams[v], before[v])
    with pytest.raises(KeyError, match="sagittal"):
        magn_loss(logits, targets, cams, {"axial": masks["axial"]})
