"""Tests of magn_lib.plots: figures carry the expected artists, files are written atomically,
no pyplot state is touched, and Table 2 holds exactly the numbers of the stats functions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from magn_lib import plots, stats  # noqa: E402

CONFIGS = (("magn", "sagittal", 1.0), ("magn", "sagittal+attention", 1.3),
           ("magn", "multi-view+attention", 2.0), ("radiomics", "multi-view", 0.8),
           ("magn", "extra-view", 0.5))


def make_oof(n_patients: int = 30, seed: int = 1234, n_folds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        label = int(i % 3 == 0)
        for j in range(int(rng.integers(1, 3))):
            lesion = {"lesion_id": f"P{i:03d}-L{j + 1}", "patient_id": f"P{i:03d}",
                      "label": label}
            for method, config, sep in CONFIGS:
                z = rng.normal() + sep * (2 * label - 1)
                rows.append({**lesion, "method": method, "config": config,
                             "fold": (i // 3) % n_folds,
                             "probability": float(1 / (1 + np.exp(-z)))})
            for reader, acc in (("reader1", 0.65), ("reader2", 0.7)):
                call = label if rng.random() < acc else 1 - label
                rows.append({**lesion, "method": "reader", "config": reader, "fold": -1,
                             "probability": (6 + 3 * call) / 9 if call else 2 / 9})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def oof() -> pd.DataFrame:
    return make_oof()


def _labelled_lines(fig: Figure) -> list[str]:
    return [ln.get_label() for ln in fig.axes[0].get_lines() if ln.get_gid() != "chance"]


def test_roc_folds_has_one_line_per_fold_plus_pooled_and_reader_points(oof):
    before = plt.get_fignums()
    fig = plots.plot_roc_folds(oof, method="magn", config="multi-view+attention")
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # no pyplot figure created or left open
    labels = _labelled_lines(fig)
    folds = [lb for lb in labels if lb.startswith("fold")]
    assert len(folds) == 3
    assert sum(lb.startswith("pooled") for lb in labels) == 1
    assert sum(lb.startswith("radiomics: multi-view") for lb in labels) == 1
    assert len(labels) == 3 + 1 + 1
    points = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sorted(c.get_gid() for c in points) == ["reader:reader1", "reader:reader2"]
    # the reader point sits at the call's (1 - specificity, sensitivity)
    r1 = oof[oof.config == "reader1"]
    m = stats.binary_metrics(r1.label, r1.probability)
    xy = [c for c in points if c.get_gid() == "reader:reader1"][0].get_offsets()[0]
    assert tuple(xy) == pytest.approx((1 - m["specificity"], m["sensitivity"]))
    # the pooled curve ranks within folds (the fold models' scales differ), labelled so
    ranked = stats.rank_within_folds(oof)
    pooled_auc = stats.binary_metrics(
        *ranked[ranked.config == "multi-view+attention"][["label", "probability"]].T.to_numpy()
    )["auc"]
    assert f"pooled, ranked within folds (AUC {pooled_auc:.2f})" in labels
    raw = plots.plot_roc_folds(oof, ranked=False)
    raw_auc = stats.binary_metrics(
        *oof[oof.config == "multi-view+attention"][["label", "probability"]].T.to_numpy())["auc"]
    assert f"pooled (AUC {raw_auc:.2f})" in _labelled_lines(raw)


def test_reader_points_say_simulated_when_they_are(oof):
    fig = plots.plot_roc_folds(oof, simulated_readers=True)
    points = [c.get_label() for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert points == ["Simulated reader 1 (call)", "Simulated reader 2 (call)"]
    fig = plots.plot_roc_comparison(oof)
    points = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert [c.get_label() for c in points] == ["Radiologist 1 (call)", "Radiologist 2 (call)"]
    # the points are the calls' operating points, not ranks
    r1 = oof[oof.config == "reader1"]
    m = stats.binary_metrics(r1.label, r1.probability)
    assert tuple(points[0].get_offsets()[0]) == pytest.approx(
        (1 - m["specificity"], m["sensitivity"]))


def test_roc_into_given_axes_returns_its_figure(oof):
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.plot_roc_folds(oof, config="sagittal", compare=(), ax=ax) is fig


def test_save_figure_writes_png_and_svg(oof, tmp_path):
    fig = plots.plot_roc_comparison(oof)
    png, svg = plots.save_figure(fig, tmp_path / "sub" / "roc")
    assert png.name == "roc.png" and svg.name == "roc.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert svg.read_text().lstrip().startswith("<?xml") and svg.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["roc.png", "roc.svg"]
    plots.save_figure(fig, tmp_path / "sub" / "roc")  # overwrite in place
    svg_again = (tmp_path / "sub" / "roc.svg").read_text()
    assert svg_again == svg.read_text()


def test_roc_comparison_lines_per_model(oof):
    fig = plots.plot_roc_comparison(oof)
    assert len(_labelled_lines(fig)) == len(CONFIGS)  # readers are points, not lines
    assert len(fig.axes[0].collections) == 2


def test_twelve_models_stay_distinguishable_in_colour_and_in_grey(oof):
    base = oof[oof["method"] != "reader"]
    models = pd.concat([base.assign(config=base["config"] + f" #{k}") for k in range(3)])
    fig = plots.plot_roc_comparison(models)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() != "chance"]
    assert len(lines) == 3 * len(CONFIGS) >= 12
    looks = {(matplotlib.colors.to_hex(ln.get_color()), ln.get_linestyle()) for ln in lines}
    assert len(looks) == len(lines)  # no two curves alike
    assert {c for c, _ in looks} <= {c.lower() for c in plots.PALETTE}
    # neighbours in the legend differ in line style as well, so grey print keeps them apart
    pairs = zip(lines[:-1], lines[1:], strict=True)
    assert all(a.get_linestyle() != b.get_linestyle() for a, b in pairs)
    assert len({tuple(sorted(s.items())) for s in plots.curve_styles(32)}) == 32


def test_palette_is_okabe_ito():
    # Okabe & Ito (2008), Color Universal Design: the eight colours, in any order
    assert {c.upper() for c in plots.PALETTE} == {
        "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}


def test_captioned_figure_shows_its_caption_under_the_image(oof):
    shown = plots.captioned(plots.plot_roc_comparison(oof), "Look at <the> top-left corner.")
    page = shown._repr_html_()
    assert page.startswith('<figure class="magn-figure"><img ')
    assert page.index("data:image/png;base64,") < page.index(
        "<figcaption>Look at &lt;the&gt; top-left corner.</figcaption>")
    with pytest.raises(ValueError, match="caption"):
        plots.captioned(Figure(), " ")
    assert all(len(text) > 40 for text in plots.CAPTIONS.values())


def test_calibration_and_decision_plots(oof):
    models = oof[oof.method != "reader"]
    cal = stats.calibration_table(models, n_bins=4)
    fig = plots.plot_calibration(cal)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() != "perfect"]
    assert len(lines) == len(CONFIGS)
    first = cal[cal.config == "sagittal"]
    np.testing.assert_allclose(lines[0].get_xdata(), first.mean_predicted)
    dc = stats.decision_curve(models, thresholds=np.linspace(0.05, 0.95, 19))
    fig = plots.plot_decision_curve(dc)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert len(labels) == len(CONFIGS) + 2
    assert "treat all as MM" in labels and "treat none" in labels


def test_table2_numbers_equal_the_stats_functions(oof):
    mt = stats.metrics_table(oof, n_resamples=300)
    t2 = plots.table2(metrics=mt)
    assert len(t2) == len(CONFIGS) + 2
    # paper order: MAGN (sagittal before sagittal+attention ... multi-view), then unknown MAGN
    # configs, radiomics, readers
    assert list(t2.config) == ["sagittal", "sagittal+attention", "multi-view+attention",
                               "extra-view", "multi-view", "reader1", "reader2"]
    for r in t2.itertuples():
        m = mt[(mt.method == r.method) & (mt.config == r.config)].iloc[0]
        assert (r.accuracy, r.accuracy_low, r.accuracy_high) == (m.accuracy, m.accuracy_low,
                                                                 m.accuracy_high)
        assert (r.f1, r.f1_low, r.f1_high) == (m.f1, m.f1_low, m.f1_high)
        assert (r.auc, r.auc_low, r.auc_high) == (m.auc, m.auc_low, m.auc_high)
        assert (r.auc_ranked, r.auc_ranked_low, r.auc_ranked_high) == (
            m.auc_ranked, m.auc_ranked_low, m.auc_ranked_high)
        assert (r.auc_delong_low, r.auc_delong_high) == (m.auc_delong_low, m.auc_delong_high)
        assert r.auc_fold_mean == m.auc_fold_mean or np.isnan(r.auc_fold_mean)
    sag = t2[t2.config == "sagittal+attention"].iloc[0]
    assert (sag.paper_accuracy, sag.paper_auc, sag.paper_auc_sd, sag.paper_f1) == (
        0.8061, 0.7492, 0.0671, 0.6893)
    mv = t2[(t2.method == "magn") & (t2.config == "multi-view+attention")].iloc[0]
    assert (mv.paper_accuracy, mv.paper_f1) == (0.8108, 0.7120)
    rad = t2[t2.method == "radiomics"].iloc[0]
    assert rad.paper_auc == 0.7616 and not rad.attention
    assert t2[t2.config == "reader2"].iloc[0].paper_accuracy == 0.6912
    assert np.isnan(t2[t2.config == "extra-view"].iloc[0].paper_accuracy)
    sub = oof[(oof.method == "magn") & (oof.config == "sagittal")]
    assert t2.iloc[0].auc_delong_low == pytest.approx(
        stats.delong_ci(sub.label, sub.probability)[1])
    shown = plots.format_table2(t2)
    assert shown.loc[1, "Attention"] == "✓" and shown.loc[0, "Attention"] == "–"
    assert shown.loc[1, "Paper AUC"] == "0.75 ± 0.07"
    assert shown.loc[5, "Configuration"] == "Radiologist 1"
    assert shown.loc[5, "Section"] == "Radiologist assessment"
    assert shown.loc[0, "ACC"] == (f"{t2.accuracy[0]:.2f} (95 % CI {t2.accuracy_low[0]:.2f}–"
                                   f"{t2.accuracy_high[0]:.2f})")
    assert shown.loc[0, "AUC folds (mean ± SD)"] == (
        f"{t2.auc_fold_mean[0]:.2f} ± {t2.auc_fold_sd[0]:.2f}")
    ranked = "AUC pooled, ranked within folds"
    assert shown.loc[0, ranked] == (f"{t2.auc_ranked[0]:.2f} (95 % CI {t2.auc_ranked_low[0]:.2f}–"
                                    f"{t2.auc_ranked_high[0]:.2f})")
    # the per-fold mean ± SD first, as the paper reports it; lesion-level DeLong secondary
    assert list(shown.columns) == [
        "Section", "Configuration", "Attention", "AUC folds (mean ± SD)", ranked,
        "ACC", "F1", "AUC pooled, lesion-level DeLong", "Paper ACC", "Paper AUC", "Paper F1"]
    simulated = plots.format_table2(t2, simulated_readers=True)
    readers = simulated[t2.method == "reader"]
    assert list(readers["Configuration"]) == ["Simulated reader 1", "Simulated reader 2"]
    assert set(readers["Section"]) == {"Simulated readers (not radiologists)"}


def test_cam_grid_three_views_with_and_without_guidance():
    rng = np.random.default_rng(0)
    views = ("sagittal", "coronal", "axial")
    images = {v: rng.random((3, 32, 32)) for v in views}
    masks = {v: np.zeros((32, 32)) for v in views}
    for m in masks.values():
        m[10:20, 12:22] = 1
    cams = {"with guidance": {v: rng.random((8, 8)) for v in views},
            "without guidance": {v: rng.random((8, 8)) for v in views}}
    fig = plots.plot_cam_grid(images, masks, cams)
    assert len(fig.axes) == 3 * 4
    grid = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in grid[0]] == ["image", "lesion", "with guidance",
                                                  "without guidance"]
    assert [ax.get_ylabel() for ax in grid[:, 0]] == list(views)
    for ax in grid[:, 2:].ravel():
        assert len(ax.get_images()) == 2  # image + heat map
        assert len(ax.collections) >= 1  # mask contour
        heat = ax.get_images()[1].get_array()
        assert heat.min() == 0.0 and heat.max() == 1.0
        assert ax.get_images()[1].get_extent() == ax.get_images()[0].get_extent()
    assert len(grid[0, 0].get_images()) == 1 and not grid[0, 0].collections


def test_crops_grid_per_class():
    rng = np.random.default_rng(0)
    crops = [rng.random((3, 16, 16)) for _ in range(7)]
    labels = [1, 0, 0, 1, 0, 0, 0]
    fig = plots.plot_crops_grid(crops, labels, per_class=4, titles=[f"L{i}" for i in range(7)])
    grid = np.array(fig.axes).reshape(2, 4)
    assert [len(ax.get_images()) for ax in grid[0]] == [1, 1, 0, 0]  # two MM crops
    assert [len(ax.get_images()) for ax in grid[1]] == [1, 1, 1, 1]  # five metastases, four shown
    assert grid[0, 0].get_ylabel() == "MM" and grid[1, 0].get_ylabel() == "Metastasis"
    assert grid[1, 0].get_title() == "L1"
