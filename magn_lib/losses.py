"""The MAGN training loss: classification plus attention guidance (Chen et al. 2022, eqs. 1–4).

``L = BCE(logit, y) + λ · Σ_views MSE(Â_v, M_v)`` where, per sample and view,

* ``A_v = s_y · CAM_v`` is the class activation map of the *true* class: the model has one MM
  logit, so the metastasis map is its negation (``s_y = +1`` for MM, label 1; ``−1`` for
  metastasis, label 0);
* ``Â_v = (A_v − min A_v) / max(max A_v − min A_v, eps)`` is min-max normalised per sample
  (a constant map becomes 0, never NaN);
* ``M_v`` is the lesion mask area-downsampled to the CAM grid (``adaptive_avg_pool2d``), so a
  grid cell holds the fraction of its area inside the lesion;
* MSE is the plain mean over batch and grid; the paper's minus sign before it is a slip.

``λ = 0.5`` in the paper. :func:`magn_loss_parts` returns the components for logging.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["downsample_mask", "magn_loss", "magn_loss_parts", "normalized_class_cam"]

_EPS = 1e-6


def normalized_class_cam(cam: Tensor, targets: Tensor, *, eps: float = _EPS) -> Tensor:
    """The true-class CAM ``s_y · cam``, min-max normalised to [0, 1] per sample.

    Args:
        cam: raw MM-logit CAM, ``Tensor[B, h, w]`` (as returned by ``MAGN.forward``).
        targets: labels ``Tensor[B]`` (1 = MM, 0 = metastasis; float or int).
        eps: floor of the per-sample range; a constant map normalises to 0.

    Returns:
        ``Tensor[B, h, w]`` float32 in [0, 1], differentiable in ``cam``.
    """
    cam = cam.float()
    sign = (2.0 * targets.float() - 1.0).view(-1, 1, 1)
    a = sign * cam
    flat = a.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1)
    return (a - lo) / (hi - lo).clamp_min(eps)


def downsample_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-downsample masks ``Tensor[B, H, W]`` (0/1 or soft) to ``size`` = ``(h, w)``.

    Each output cell is the mean of the input pixels it covers (``adaptive_avg_pool2d``).
    """
    return F.adaptive_avg_pool2d(mask.float().unsqueeze(1), size).squeeze(1)


def magn_loss_parts(
    logits: Tensor,
    targets: Tensor,
    cams: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    attention_weight: float = 0.5,
    *,
    pos_weight: float | Tensor | None = None,
) -> dict[str, Tensor]:
    """The MAGN loss and its parts.

    Args:
        logits: ``Tensor[B]`` MM logits.
        targets: ``Tensor[B]`` labels, 1 = MM, 0 = metastasis.
        cams: ``{view: Tensor[B, h, w]}`` raw CAMs from ``MAGN.forward``.
        masks: ``{view: Tensor[B, H, W]}`` lesion masks at input resolution (needs every view
            in ``cams``).
        attention_weight: ``λ``; 0 turns guidance off (the attention terms are then still
            computed for logging, without gradient).
        pos_weight: optional BCE weight of the positive (MM) class, e.g. ``n_neg / n_pos``.

    Returns:
        ``{"loss": total, "bce": ..., "attention": Σ_v MSE_v, "attention_<view>": MSE_v}``,
        scalar float32 tensors; only ``"loss"`` carries the graph for ``backward``.
    """
    targets = targets.float().view(-1)
    logits = logits.float().view(-1)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    missing = [v for v in cams if v not in masks]
    if missing:
        raise KeyError(f"masks lack view(s) {missing} needed by the attention loss")
    parts: dict[str, Tensor] = {}
    with torch.set_grad_enabled(torch.is_grad_enabled() and attention_weight != 0):
        total_attention = logits.new_zeros(())
        for view, cam in cams.items():
            a = normalized_class_cam(cam, targets)
            m = downsample_mask(masks[view].to(a.device), tuple(a.shape[-2:]))
            mse = F.mse_loss(a, m)
            parts[f"attention_{view}"] = mse.detach()
            total_attention = total_attention + mse
    loss = bce + attention_weight * total_attention if attention_weight != 0 else bce
    return {"loss": loss, "bce": bce.detach(), "attention": total_attention.detach(), **parts}


def magn_loss(
    logits: Tensor,
    targets: Tensor,
    cams: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    attention_weight: float = 0.5,
    *,
    pos_weight: float | Tensor | None = None,
) -> Tensor:
    """``BCE + attention_weight · Σ_views MSE(normalised true-class CAM, downsampled mask)``.

    See :func:`magn_loss_parts` for the arguments; returns the scalar total loss.
    """
    return magn_loss_parts(
        logits, targets, cams, masks, attention_weight, pos_weight=pos_weight
    )["loss"]
