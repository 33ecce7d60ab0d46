"""MAGN: the multi-view attention-guided network of Chen et al. 2022 (Front. Oncol. 12:981769).

One torchvision ResNet feature extractor per view (the paper's "respectively"; one shared
extractor is an option), log-sum-exp (LSE) pooling of each view's last feature maps, the pooled
features of all views concatenated, one linear layer to a single logit, and a sigmoid for the
probability of multiple myeloma (label 1). ``forward`` also returns, per view, the class
activation map (CAM; Zhou et al. 2016) computed from the feature maps already at hand and that
view's slice of the linear weights, so the attention-guidance loss (:mod:`magn_lib.losses`)
costs no second pass.

Input normalisation: crops arrive in [0, 1]. When ImageNet-pretrained weights (the torchvision
enum or a local checkpoint) were actually loaded, the model subtracts the ImageNet mean and
divides by its standard deviation inside ``forward``, as those weights expect; a model trained
from He-uniform initialisation sees the [0, 1] crops unchanged (its first BatchNorm adapts).
``MAGN.normalize`` says which applies; the ``normalize`` argument overrides the choice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from magn_lib.config import BACKBONES, POOLINGS, VIEWS
from magn_lib.errors import ConfigError, InputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAGN",
    "POOLINGS",
    "ResNetFeatures",
    "he_uniform_init",
    "lse_pool",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_FEATURE_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def lse_pool(x: Tensor, r: float) -> Tensor:
    """Log-sum-exp pooling over the spatial axes: ``(1/r) · log(mean_{h,w} exp(r · x))``.

    Computed as ``(logsumexp(r · x) − log(h·w)) / r``, which never overflows. It tends to the
    spatial maximum as ``r → ∞`` and to the spatial mean as ``r → 0`` (Pinheiro & Collobert
    2015; the pooling of Chen et al. 2022). Half-precision inputs are pooled in float32.

    Args:
        x: feature maps, ``Tensor[B, C, h, w]``.
        r: sharpness, ``r > 0``.

    Returns:
        ``Tensor[B, C]`` (float32 for half-precision input, else ``x``'s dtype).
    """
    if r <= 0:
        raise ValueError(f"lse_pool: r must be positive, got {r}")
    if x.dim() != 4:
        raise ValueError(f"lse_pool: expected Tensor[B, C, h, w], got shape {tuple(x.shape)}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    h, w = x.shape[-2:]
    return (torch.logsumexp(r * x.flatten(2), dim=2) - math.log(h * w)) / r


def he_uniform_init(module: nn.Module) -> nn.Module:
    """He-uniform ("He Uniform initializer", Chen et al. 2022) for every conv and linear weight.

    ``kaiming_uniform_`` with its defaults (``a=0``, fan-in) draws from U(−√(6/fan_in),
    √(6/fan_in)), Keras' ``he_uniform``. Biases are set to zero; BatchNorm keeps weight 1 and
    bias 0. Changes ``module`` in place and returns it; draws from torch's global generator.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class ResNetFeatures(nn.Module):
    """A torchvision ResNet up to and including ``layer4`` (no average pooling, no fc).

    Submodule names equal torchvision's, so a torchvision ``state_dict`` (without ``fc.*``)
    loads directly. ``forward``: ``Tensor[B, 3, H, W] -> Tensor[B, C, ⌈H/32⌉, ⌈W/32⌉]`` with
    ``C`` = 512 (resnet18/34) or 2048 (resnet50).
    """

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"backbone: {backbone!r} is not one of {BACKBONES}")
        net = torchvision.models.get_model(backbone, weights=None)
        for name in _RESNET_PARTS:
            setattr(self, name, getattr(net, name))
        self.out_channels = _FEATURE_CHANNELS[backbone]

    def forward(self, x: Tensor) -> Tensor:
        for name in _RESNET_PARTS:
            x = getattr(self, name)(x)
        return x


# backbone -> why its ImageNet weights could not be had; asked once per process, so that a grid
# of 40 models does not wait 40 times for a network that is not there
_UNAVAILABLE: dict[str, str] = {}


def _load_imagenet_state_dict(backbone: str) -> dict[str, Tensor]:
    """torchvision's default ImageNet weights for ``backbone`` (downloads into the torch cache)."""
    enum = torchvision.models.get_model_weights(backbone)
    return enum.DEFAULT.get_state_dict(progress=False, check_hash=True)


def _load_checkpoint_state_dict(path: Path) -> dict[str, Tensor]:
    """A backbone ``state_dict`` from a local file: a bare state_dict, or one under the key
    ``state_dict`` / ``model``; ``module.`` and ``backbone.`` prefixes are removed."""
    if not path.is_file():
        raise InputError(
            "pretrained-weights checkpoint does not exist",
            file=path,
            hint="set `weights` to an existing .pth file, 'imagenet' or null (train from scratch)",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's input problem
        raise InputError(
            f"cannot read the weights checkpoint ({type(exc).__name__}: {exc})",
            file=path,
            hint="save it with torch.save(model.state_dict(), path)",
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise InputError("checkpoint does not hold a state_dict", file=path)
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


class MAGN(nn.Module):
    """Multi-view attention-guided network (Chen et al. 2022, Figure 3).

    Args:
        views: the views the model reads, a non-empty subset of ``("sagittal", "coronal",
            "axial")``; a single view gives the single-view ablations of Table 2.
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (the paper's).
        pooling: ``"lse"`` (the paper's), ``"avg"`` or ``"max"`` spatial pooling.
        weights: ``None`` (He-uniform from scratch, the paper's initialiser), ``"imagenet"``
            (torchvision's default weights enum for the backbone) or a path to a local
            checkpoint holding a torchvision ResNet or backbone ``state_dict``. When ImageNet
            weights cannot be obtained (no network, no cached file) the model falls back to
            He-uniform, warns, and records it in ``init_report``. A checkpoint path that does
            not exist or does not fit raises :class:`~magn_lib.errors.InputError`.
        lse_r: LSE sharpness ``r`` (default 10).
        shared_backbone: one feature extractor for all views instead of one per view.
        normalize: apply ImageNet mean/std to the [0, 1] input; ``None`` = exactly when
            pretrained weights were loaded.

    Attributes:
        init_report: ``{"requested", "used", "message"}`` — the weights asked for, what the
            backbones were initialised with (``"he_uniform"``, ``"imagenet"`` or the path), and
            why they differ (empty when they do not). The pipeline copies it into the run
            manifest.
        normalize: whether ImageNet normalisation is applied in ``forward``.
        feature_channels: ``C``, channels of one view's feature maps.
    """

    def __init__(
        self,
        views: Sequence[str] = VIEWS,
        backbone: str = "resnet50",
        pooling: str = "lse",
        weights: str | Path | None = None,
        *,
        lse_r: float = 10.0,
        shared_backbone: bool = False,
        normalize: bool | None = None,
    ) -> None:
        super().__init__()
        views = tuple(views)
        if not views or len(set(views)) != len(views) or any(v not in VIEWS for v in views):
            raise ConfigError(f"views: {views!r} must be distinct views from {VIEWS}")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling: {pooling!r} is not one of {POOLINGS}")
        if lse_r <= 0:
            raise ConfigError(f"lse_r: must be positive, got {lse_r}")
        self.views = views
        self.backbone_name = backbone
        self.pooling = pooling
        self.lse_r = float(lse_r)
        self.shared_backbone = bool(shared_backbone)
        keys = ("shared",) if shared_backbone else views
        self.backbones = nn.ModuleDict({k: ResNetFeatures(backbone) for k in keys})
        self.feature_channels = _FEATURE_CHANNELS[backbone]
        self.classifier = nn.Linear(len(views) * self.feature_channels, 1)
        he_uniform_init(self)
        self.init_report = self._load_weights(weights)
        pretrained = self.init_report["used"] != "he_uniform"
        self.normalize = pretrained if normalize is None else bool(normalize)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _load_weights(self, weights: str | Path | None) -> dict[str, Any]:
        if weights is None:
            return {"requested": None, "used": "he_uniform", "message": ""}
        requested = str(weights)
        if requested == "imagenet":
            reason = _UNAVAILABLE.get(self.backbone_name)
            if reason is None:
                try:
                    state = _load_imagenet_state_dict(self.backbone_name)
                except Exception as exc:  # no network / no cache: documented fallback, reported
                    reason = _UNAVAILABLE[self.backbone_name] = f"{type(exc).__name__}: {exc}"
            if reason is not None:
                message = (
                    f"ImageNet weights for {self.backbone_name} are unavailable ({reason}); the "
                    "backbones were initialised He-uniform and train from scratch instead. Put "
                    "the torchvision weight file in the torch hub cache (or give a local .pth "
                    "path) to use pretrained weights."
                )
                warnings.warn(message, RuntimeWarning, stacklevel=3)
                return {"requested": requested, "used": "he_uniform", "message": message}
            used = "imagenet"
        else:
            path = Path(weights).expanduser()
            state = _load_checkpoint_state_dict(path)
            used = str(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        for backbone in self.backbones.values():
            try:
                backbone.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise InputError(
                    f"the weights do not fit a {self.backbone_name} backbone ({exc})",
                    file=None if used == "imagenet" else used,
                    hint="give weights of the same ResNet depth as `backbone`",
                ) from exc
        return {"requested": requested, "used": used, "message": ""}

    def feature_layer(self, view: str) -> nn.Module:
        """The last convolutional stage (``layer4``) of ``view``'s backbone (Grad-CAM target)."""
        if view not in self.views:
            raise KeyError(f"view {view!r} is not one of this model's views {self.views}")
        return self.backbones["shared" if self.shared_backbone else view].layer4

    def features(self, images: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per view, the last feature maps ``Tensor[B, C, h, w]`` (``h, w`` = input / 32)."""
        missing = [v for v in self.views if v not in images]
        if missing:
            raise InputError(
                f"the batch lacks view(s) {missing} that this model reads (it has "
                f"{sorted(images)})",
                hint="build the dataset with every view of the configuration",
            )
        xs = [images[v] for v in self.views]
        if self.normalize:
            xs = [(x - self.mean.to(x.dtype)) / self.std.to(x.dtype) for x in xs]
        if self.shared_backbone:
            # one pass over all views stacked along the batch: same result, fewer kernel calls
            feats = self.backbones["shared"](torch.cat(xs)).chunk(len(self.views))
            return dict(zip(self.views, feats, strict=True))
        return {v: self.backbones[v](x) for v, x in zip(self.views, xs, strict=True)}

    def pool(self, x: Tensor) -> Tensor:
        """Spatial pooling ``Tensor[B, C, h, w] -> Tensor[B, C]`` as chosen by ``pooling``."""
        if self.pooling == "lse":
            return lse_pool(x, self.lse_r)
        if self.pooling == "avg":
            return x.mean(dim=(2, 3))
        return x.amax(dim=(2, 3))

    def forward(self, images: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and per-view class activation maps.

        Args:
            images: ``{view: Tensor[B, 3, H, W]}`` in [0, 1] (2.5D: three adjacent slices as
                channels); extra views are ignored.

        Returns:
            ``(logits, cams)``: ``logits`` ``Tensor[B]`` (MM vs metastasis, before the
            sigmoid); ``cams[v]`` ``Tensor[B, h, w]`` = ``Σ_k w_{v,k} F_{v,k}``, the raw CAM of
            the MM logit on view ``v``'s feature grid, where ``w_v`` is ``v``'s slice of the
            linear weights (no bias, no sign, no normalisation; differentiable — the
            attention loss trains on it).
        """
        feats = self.features(images)
        pooled = torch.cat([self.pool(feats[v]) for v in self.views], dim=1)
        logits = self.classifier(pooled.to(self.classifier.weight.dtype)).squeeze(1)
        w = self.classifier.weight.view(len(self.views), self.feature_channels)
        cams = {}
        for i, v in enumerate(self.views):
            f = feats[v]
            cams[v] = torch.einsum("bchw,c->bhw", f, w[i].to(f.dtype))
        return logits, cams

    @torch.no_grad()
    def predict_proba(self, images: Mapping[str, Tensor]) -> Tensor:
        """Probability of multiple myeloma, ``Tensor[B]`` in [0, 1] (sigmoid of the logit).

        Runs in eval mode and restores the mode the model was in.
        """
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(images)[0].float())
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return (
            f"views={self.views}, backbone={self.backbone_name!r}, pooling={self.pooling!r}, "
            f"lse_r={self.lse_r}, shared_backbone={self.shared_backbone}, "
            f"normalize={self.normalize}, init={self.init_report['used']!r}"
        )
