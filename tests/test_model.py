"""MAGN network: shapes, CAM from features and weights, LSE pooling, initialisation, weights."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

import magn_lib.model as model_mod
from magn_lib.errors import ConfigError, InputError
from magn_lib.model import IMAGENET_MEAN, IMAGENET_STD, MAGN, he_uniform_init, lse_pool


def _images(views, b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {v: torch.rand(b, 3, size, size, generator=g) for v in views}


@pytest.mark.parametrize("views", [("axial",), ("sagittal", "coronal", "axial")])
def test_output_and_cam_shapes(views):
    torch.manual_seed(0)
    model = MAGN(views=views, backbone="resnet18").eval()
    logits, cams = model(_images(views, b=3, size=64))
    assert logits.shape == (3,)
    assert set(cams) == set(views)
    for v in views:
        assert cams[v].shape == (3, 2, 2)  # 64 px / stride 32
    assert model.classifier.in_features == 512 * len(views)


def test_resnet50_feature_channels():
    torch.manual_seed(0)
    model = MAGN(views=("axial",), backbone="resnet50")
    assert model.feature_channels == 2048
    assert model.classifier.in_features == 2048
    assert not hasattr(model.backbones["axial"], "fc")
    assert not hasattr(model.backbones["axial"], "avgpool")


@pytest.mark.parametrize("shared", [False, True])
def test_cam_and_logit_equal_hand_computation(shared):
    torch.manual_seed(1)
    views = ("sagittal", "coronal", "axial")
    model = MAGN(views=views, backbone="resnet18", shared_backbone=shared).eval()
    images = _images(views, b=2, size=64, seed=3)
    with torch.no_grad():
        logits, cams = model(images)
        w = model.classifier.weight[0]
        c = model.feature_channels
        pooled = []
        for i, v in enumerate(views):
            f = model.backbones["shared" if shared else v](images[v])  # independent pass
            # CAM_v(i, j) = sum_k w_{v,k} F_{v,k}(i, j), written out as a loop over channels
            hand = torch.zeros(f.shape[0], f.shape[2], f.shape[3])
            for k in range(c):
                hand += w[i * c + k] * f[:, k]
            torch.testing.assert_close(cams[v], hand, rtol=1e-4, atol=1e-4)
            flat = 10.0 * f.flatten(2).double()
            pooled.append(((flat.exp().mean(2)).log() / 10.0).float())
        hand_logits = torch.cat(pooled, 1) @ w + model.classifier.bias
    torch.testing.assert_close(logits, hand_logits, rtol=1e-4, atol=1e-4)


def test_cam_is_differentiable_in_weights_and_features():
    torch.manual_seed(0)
    model = MAGN(views=("axial",), backbone="resnet18")
    _, cams = model(_images(("axial",)))
    cams["axial"].sum().backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.backbones["axial"].layer4[1].conv2.weight.grad.abs().sum() > 0


def _lse_reference(x: torch.Tensor, r: float) -> torch.Tensor:
    """(1/r) log(mean exp(r x)) in float64, written directly from the definition."""
    x = x.double().flatten(2)
    return torch.log(torch.mean(torch.exp(r * x), dim=2)) / r


def test_lse_pool_matches_definition_and_logsumexp():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    for r in (0.5, 1.0, 10.0):
        got = lse_pool(x, r)
        torch.testing.assert_close(got, _lse_reference(x, r))
        via_torch = (torch.logsumexp(r * x.flatten(2), 2) - math.log(12)) / r
        torch.testing.assert_close(got, via_torch)


def test_lse_pool_limits_max_and_mean():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    mx = x.amax(dim=(2, 3))
    mean = x.mean(dim=(2, 3))
    errs = [(lse_pool(x, r) - mx).abs().max().item() for r in (1.0, 10.0, 100.0, 1e4)]
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < math.log(25) / 1e4 + 1e-12  # bound: 0 <= max - lse <= log(hw) / r
    torch.testing.assert_close(lse_pool(x, 1e-6), mean, rtol=0, atol=1e-5)
    # monotone between the mean and the max
    for r in (0.1, 1.0, 10.0):
        p = lse_pool(x, r)
        assert torch.all(p >= mean - 1e-12) and torch.all(p <= mx + 1e-12)


def test_lse_pool_stable_for_large_inputs():
    x = torch.full((1, 2, 3, 3), 1000.0)
    x[0, 1, 1, 1] = 2000.0
    naive = torch.log(torch.mean(torch.exp(10.0 * x.flatten(2)), dim=2)) / 10.0
    assert not torch.isfinite(naive).all()  # the textbook formula overflows here
    got = lse_pool(x, 10.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0, 0], torch.tensor(1000.0))
    torch.testing.assert_close(got[0, 1], torch.tensor(2000.0 - math.log(9) / 10.0))
    half = lse_pool(x.to(torch.bfloat16), 10.0)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    with pytest.raises(ValueError, match="positive"):
        lse_pool(x, 0.0)


@pytest.mark.parametrize("pooling,ref", [("avg", lambda f: f.mean((2, 3))),
                                         ("max", lambda f: f.amax((2, 3)))])
def test_other_poolings(pooling, ref):
    torch.manual_seed(0)
    model = MAGN(views=("axial",), backbone="resnet18", pooling=pooling).eval()
    images = _images(("axial",))
    with torch.no_grad():
        f = model.features(images)["axial"]
        expected = ref(f) @ model.classifier.weight[0] + model.classifier.bias
        torch.testing.assert_close(model(images)[0], expected, rtol=1e-5, atol=1e-5)


def test_he_uniform_bounds():
    torch.manual_seed(0)
    layer = torch.nn.Linear(1000, 300)
    he_uniform_init(layer)
    bound = math.sqrt(6 / 1000)
    assert layer.weight.abs().max() <= bound
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert torch.all(layer.bias == 0)
    torch.manual_seed(0)
    model = MAGN(views=("axial",), backbone="resnet18")
    conv = model.backbones["axial"].conv1.weight  # fan_in = 3 * 7 * 7
    assert conv.abs().max() <= math.sqrt(6 / 147)
    assert model.init_report == {"requested": None, "used": "he_uniform", "message": ""}
    assert model.normalize is False


def test_imagenet_unavailable_falls_back_loudly(monkeypatch):
    def offline(backbone):
        raise OSError("no network")

    monkeypatch.setattr(model_mod, "_load_imagenet_state_dict", offline)
    monkeypatch.setattr(model_mod, "_UNAVAILABLE", {})
    with pytest.warns(RuntimeWarning, match="unavailable"):
        model = MAGN(views=("axial",), backbone="resnet18", weights="imagenet")
    assert model.init_report["requested"] == "imagenet"
    assert model.init_report["used"] == "he_uniform"
    assert "no network" in model.init_report["message"]
    assert model.normalize is False

    def must_not_be_called(backbone):
        raise AssertionError("a known-unavailable download was tried again")

    monkeypatch.setattr(model_mod, "_load_imagenet_state_dict", must_not_be_called)
    with pytest.warns(RuntimeWarning, match="no network"):
        again = MAGN(views=("axial",), backbone="resnet18", weights="imagenet")
    assert again.init_report == model.init_report


def test_imagenet_weights_loaded_and_normalised(monkeypatch):
    torch.manual_seed(5)
    reference = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(model_mod, "_load_imagenet_state_dict", lambda backbone: reference)
    monkeypatch.setattr(model_mod, "_UNAVAILABLE", {})
    model = MAGN(views=("sagittal", "axial"), backbone="resnet18", weights="imagenet").eval()
    assert model.init_report["used"] == "imagenet" and model.normalize
    for v in ("sagittal", "axial"):
        torch.testing.assert_close(model.backbones[v].conv1.weight, reference["conv1.weight"])
    # normalisation inside forward equals feeding pre-normalised crops to an un-normalising model
    images = _images(("sagittal", "axial"))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    plain = MAGN(views=("sagittal", "axial"), backbone="resnet18", normalize=False).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = model(images)[0]
        b = plain({v: (x - mean) / std for v, x in images.items()})[0]
    torch.testing.assert_close(a, b)


def test_local_checkpoint(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = MAGN(views=("axial",), backbone="resnet18", weights=path)
    assert model.init_report["used"] == str(path)
    torch.testing.assert_close(model.backbones["axial"].layer3[0].conv1.weight,
                               net.layer3[0].conv1.weight)
    with pytest.raises(InputError, match="does not exist"):
        MAGN(views=("axial",), backbone="resnet18", weights=tmp_path / "missing.pth")
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(InputError, match="do not fit a resnet18"):
        MAGN(views=("axial",), backbone="resnet18", weights=tmp_path / "r50.pth")


def test_bad_arguments_and_missing_view():
    with pytest.raises(ConfigError, match="views"):
        MAGN(views=("axial", "axial"), backbone="resnet18")
    with pytest.raises(ConfigError, match="views"):
        MAGN(views=("transverse",), backbone="resnet18")
    with pytest.raises(ConfigError, match="backbone"):
        MAGN(views=("axial",), backbone="vgg16")
    with pytest.raises(ConfigError, match="pooling"):
        MAGN(views=("axial",), backbone="resnet18", pooling="median")
    model = MAGN(views=("axial", "coronal"), backbone="resnet18")
    with pytest.raises(InputError, match="coronal"):
        model(_images(("axial",)))


def test_predict_proba_restores_mode_and_ignores_extra_views():
    torch.manual_seed(0)
    model = MAGN(views=("axial",), backbone="resnet18").train()
    p = model.predict_proba(_images(("axial", "sagittal"), b=4))
    assert model.training
    assert p.shape == (4,) and torch.all((p >= 0) & (p <= 1))
