"""Tests of magn_lib.stats against SciPy, statsmodels, scikit-learn, pROC's published values and
an independent O(n^2) DeLong written here from DeLong et al. (1988)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from magn_lib import stats
from magn_lib.errors import InputError

# --------------------------------------------------------------------------------------------
# fixtures


def make_oof(n_patients: int = 40, seed: int = 1234, n_folds: int = 5) -> pd.DataFrame:
    """Two MAGN configs and one radiomics config on the same lesions, 1-3 lesions a patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        label = int(i % 3 == 0)  # about a third MM, as in the paper
        for j in range(int(rng.integers(1, 4))):
            base = rng.normal()
            for method, config, sep in (("magn", "sagittal", 1.0),
                                        ("magn", "multi-view+attention", 2.0),
                                        ("radiomics", "multi-view", 0.7)):
                z = base * 0.5 + rng.normal() + sep * (2 * label - 1)
                rows.append({"method": method, "config": config, "fold": i % n_folds,
                             "lesion_id": f"P{i:03d}-L{j + 1}", "patient_id": f"P{i:03d}",
                             "label": label, "probability": float(1 / (1 + np.exp(-z)))})
    return pd.DataFrame(rows)


def naive_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. 1988 (Biometrics 44:837) straight from the definitions, O(m n).

    psi(X, Y) = 1 if X > Y, 1/2 if X = Y, 0 otherwise; theta_r = mean psi over all (case,
    control) pairs; V10_r(X_i) = mean_j psi(X_i, Y_j), V01_r(Y_j) = mean_i psi(X_i, Y_j);
    S10_rs = sum_i (V10_r - theta_r)(V10_s - theta_s) / (m - 1), S01 likewise over controls /
    (n - 1); S = S10 / m + S01 / n.
    """
    pos = [s[y == 1] for s in scores]
    neg = [s[y == 0] for s in scores]
    m, n = len(pos[0]), len(neg[0])
    k = len(scores)
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    theta = np.zeros(k)
    for r in range(k):
        for i in range(m):
            for j in range(n):
                x, yy = pos[r][i], neg[r][j]
                psi = 1.0 if x > yy else (0.5 if x == yy else 0.0)
                v10[r, i] += psi / n
                v01[r, j] += psi / m
                theta[r] += psi / (m * n)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = sum((v10[r, i] - theta[r]) * (v10[s, i] - theta[s])
                            for i in range(m)) / (m - 1)
            s01[r, s] = sum((v01[r, j] - theta[r]) * (v01[s, j] - theta[s])
                            for j in range(n)) / (n - 1)
    return theta, s10 / m + s01 / n


# --------------------------------------------------------------------------------------------
# Table 1


def _clinical(rng: np.random.Generator, n: tuple[int, int] = (60, 90)) -> pd.DataFrame:
    lab = np.r_[np.ones(n[0], int), np.zeros(n[1], int)]
    return pd.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(sum(n))],
        "label": lab,
        "age": np.r_[rng.normal(58, 11, n[0]), rng.normal(56, 12, n[1])],
        "tumour_size_cm": np.r_[rng.lognormal(1.0, 0.8, n[0]), rng.lognormal(1.2, 0.8, n[1])],
        "sex": rng.choice(["M", "F"], sum(n)),
        "site": rng.choice(["cervical", "thoracic", "lumbar", "sacrococcygeal"], sum(n),
                           p=[0.25, 0.35, 0.3, 0.1]),
    })


def _row(t1: pd.DataFrame, var: str, level: str = "") -> pd.Series:
    return t1[(t1["variable"] == var) & (t1["level"] == level)].iloc[0]


def test_table1_age_is_declared_welch_like_statsmodels():
    from statsmodels.stats.weightstats import ttest_ind as sm_ttest

    rng = np.random.default_rng(1234)
    df = _clinical(rng)
    t1 = stats.table1(df, continuous=["age"], categorical=[])
    r = _row(t1, "age")
    a = df.loc[df.label == 1, "age"]
    b = df.loc[df.label == 0, "age"]
    assert r["test"] == "Welch t-test"
    assert r["p_value"] == pytest.approx(sm_ttest(a, b, usevar="unequal")[1], rel=1e-10)
    assert r["rule"].startswith("declared in advance: Welch t-test")
    assert "Shapiro" not in r["rule"] and "Levene" not in r["rule"]
    assert r["MM"] == f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"
    assert list(t1.columns[:4]) == ["variable", "level", "MM", "Metastasis"]
    assert t1.iloc[0]["MM"] == "60" and t1.iloc[0]["Metastasis"] == "90"


def test_table1_test_does_not_depend_on_the_data():
    """The two-stage rule (normality pre-test, then t or U) is gone: a declared Welch stays
    Welch on skewed data and a declared Mann-Whitney stays so on normal data."""
    rng = np.random.default_rng(7)
    normal = pd.DataFrame({"label": np.r_[np.ones(80, int), np.zeros(80, int)],
                           "tumour_size_cm": rng.normal(4, 1, 160),
                           "age": rng.lognormal(3, 1.2, 160)})
    t1 = stats.table1(normal, continuous=["age", "tumour_size_cm"], categorical=[])
    assert _row(t1, "age")["test"] == "Welch t-test"  # skewed, still the declared test
    size = _row(t1, "tumour_size_cm")
    a, b = normal.tumour_size_cm[normal.label == 1], normal.tumour_size_cm[normal.label == 0]
    assert size["test"] == "Mann-Whitney U"
    assert size["p_value"] == pytest.approx(
        sps.mannwhitneyu(a, b, alternative="two-sided").pvalue, rel=1e-12)
    assert size["MM"].startswith(f"{np.median(a):.2f} [")
    # a caller's declaration wins and is named as such; an undeclared variable gets U
    normal["x"] = rng.normal(size=160)
    t2 = stats.table1(normal, continuous=["age", "x"], categorical=[],
                      tests={"age": "mann-whitney"})
    assert _row(t2, "age")["test"] == "Mann-Whitney U"
    assert _row(t2, "age")["rule"] == "declared in advance by the caller: Mann-Whitney U"
    assert _row(t2, "x")["test"] == "Mann-Whitney U" and "not declared" in _row(t2, "x")["rule"]
    t3 = stats.table1(normal, continuous=["x"], categorical=[], tests={"x": "welch"})
    assert _row(t3, "x")["p_value"] == pytest.approx(
        sps.ttest_ind(normal.x[normal.label == 1], normal.x[normal.label == 0],
                      equal_var=False).pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="welch"):
        stats.table1(normal, continuous=["x"], categorical=[], tests={"x": "student"})


def _counts_frame(var: str, table: dict[str, tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for level, (mm, met) in table.items():
        rows += [{"label": 1, var: level}] * mm + [{"label": 0, var: level}] * met
    return pd.DataFrame(rows)


def test_table1_categorical_reproduces_the_papers_sex_p_value_with_uncorrected_chi2():
    # Chen et al. 2022 Table 1 counts. Sex: p = 0.053 = uncorrected Pearson (Yates gives 0.073).
    sex = _counts_frame("sex", {"M": (53, 74), "F": (26, 64)})
    r_sex = _row(stats.table1(sex, continuous=[], categorical=["sex"]), "sex")
    assert r_sex["test"] == "Pearson chi-squared"
    assert r_sex["p_text"] == "0.053"
    expected = sps.chi2_contingency(np.array([[26, 64], [53, 74]]), correction=False).pvalue
    assert r_sex["p_value"] == pytest.approx(expected, rel=1e-12)
    # Site: the paper's 0.333 is Pearson chi-squared, although 13 sacrococcygeal patients give
    # an expected MM count of 13 * 79 / 217 = 4.73 < 5; our stated rule picks Fisher there.
    site = _counts_frame("site", {"cervical": (12, 35), "thoracic": (40, 61),
                                  "lumbar": (21, 35), "sacrococcygeal": (6, 7)})
    t_site = stats.table1(site, continuous=[], categorical=["site"], percent="total")
    r_site = _row(t_site, "site")
    assert r_site["test"].startswith("Fisher exact test (Monte-Carlo")
    assert "4.73 < 5" in r_site["rule"]
    chi2 = sps.chi2_contingency(np.array([[12, 40, 21, 6], [35, 61, 35, 7]]),
                                correction=False).pvalue
    assert f"{chi2:.3f}" == "0.333"
    assert r_site["p_value"] == pytest.approx(chi2, abs=0.05)
    # the paper's percentages are of all 217 patients: 12 (5.5%)
    assert _row(t_site, "site", "cervical")["MM"] == "12 (5.5%)"
    t_col = stats.table1(site, continuous=[], categorical=["site"])
    assert _row(t_col, "site", "cervical")["MM"] == f"12 ({100 * 12 / 79:.1f}%)"


def test_table1_small_expected_counts_switch_to_fisher_2x2():
    df = _counts_frame("sex", {"M": (2, 10), "F": (6, 3)})
    r = _row(stats.table1(df, continuous=[], categorical=["sex"]), "sex")
    assert r["test"] == "Fisher exact test"
    # rows in sorted level order (F, M), columns MM, metastasis
    assert r["p_value"] == pytest.approx(sps.fisher_exact([[6, 3], [2, 10]]).pvalue, rel=1e-12)
    assert "< 5" in r["rule"]


def _exact_fisher_freeman_halton_2xk(table: np.ndarray) -> float:
    """Exact p-value by enumerating all 2 x k tables with the observed margins."""
    cols = table.sum(axis=0)
    r0 = int(table[0].sum())
    n = int(table.sum())

    def logp(row0: np.ndarray) -> float:
        from scipy.special import gammaln
        row1 = cols - row0
        return float(sum(gammaln(c + 1) - gammaln(a + 1) - gammaln(b + 1)
                         for c, a, b in zip(cols, row0, row1, strict=True))
                     - (gammaln(n + 1) - gammaln(r0 + 1) - gammaln(n - r0 + 1)))

    obs = logp(table[0])
    total = 0.0
    for row0 in itertools.product(*(range(int(c) + 1) for c in cols)):
        if sum(row0) == r0:
            lp = logp(np.array(row0))
            if lp <= obs + 1e-9:
                total += np.exp(lp)
    return total


def test_table1_small_expected_counts_rxc_use_seeded_monte_carlo_fisher():
    df = _counts_frame("site", {"cervical": (1, 6), "thoracic": (5, 2), "lumbar": (2, 5),
                                "sacrococcygeal": (0, 3)})
    t_a = stats.table1(df, continuous=[], categorical=["site"], seed=3)
    t_b = stats.table1(df, continuous=[], categorical=["site"], seed=3)
    r = _row(t_a, "site")
    assert r["test"].startswith("Fisher exact test (Monte-Carlo")
    assert r["p_value"] == _row(t_b, "site")["p_value"]  # seeded
    # levels sorted: cervical, lumbar, sacrococcygeal, thoracic; rows = groups here
    table = np.array([[1, 2, 0, 5], [6, 5, 3, 2]])
    exact = _exact_fisher_freeman_halton_2xk(table)
    assert r["p_value"] == pytest.approx(exact, abs=0.015)


def test_table1_counts_missing_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    df = _clinical(rng, (20, 25))
    df.loc[[0, 3], "age"] = np.nan
    t1 = stats.table1(df)
    assert _row(t1, "age")["missing"] == 2
    assert set(t1["variable"]) == {"n", "age", "tumour_size_cm", "sex", "site"}
    with pytest.raises(InputError, match="lacks column"):
        stats.table1(df.drop(columns="site"))
    three = df.assign(label=np.arange(len(df)) % 3)
    with pytest.raises(InputError, match="two groups"):
        stats.table1(three)
    bad = df.assign(age=df["age"].astype(object))
    bad.loc[5, "age"] = "sixty"
    with pytest.raises(InputError, match="non-numeric"):
        stats.table1(bad)


# --------------------------------------------------------------------------------------------
# DeLong


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_delong_matches_naive_implementation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 40))
    y = (rng.random(n) < 0.4).astype(int)
    y[:2], y[2:4] = 1, 0
    a = rng.normal(size=n) + y
    b = np.round(0.6 * a + rng.normal(size=n), 1)  # rounding makes ties
    a = np.round(a, 1)
    theta, cov = naive_delong(y, [a, b])
    auc_a, auc_b, z, p = stats.delong_test(y, a, b)
    assert auc_a == pytest.approx(theta[0], abs=1e-12)
    assert auc_b == pytest.approx(theta[1], abs=1e-12)
    z_ref = (theta[0] - theta[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert z == pytest.approx(z_ref, abs=1e-6)
    assert p == pytest.approx(2 * sps.norm.sf(abs(z_ref)), abs=1e-6)
    auc, lo, hi = stats.delong_ci(y, a, 0.9)
    half = sps.norm.ppf(0.95) * np.sqrt(cov[0, 0])
    assert (lo, hi) == pytest.approx((max(0, theta[0] - half), min(1, theta[0] + half)),
                                     abs=1e-6)
    assert auc == pytest.approx(skm.roc_auc_score(y, a), abs=1e-12)


# pROC's aSAH data, marker ndka vs outcome (41 poor, 72 good): the class of each distinct ndka
# value in ascending order, from pROC's test fixture tests/testthat/helper-roc-expected.R
# (n = one good, p = one poor, N = two good, b = one of each, tied). Only the order enters AUC
# and DeLong. Published values: pROC tests/testthat/test-var.R (var(r.ndka) =
# 0.0031908105493913) and test-ci.auc.R (ci.auc(r.ndka) = 0.501244999271703,
# 0.611957994579946, 0.722670989888189), github.com/xrobin/pROC.
ASAH_NDKA_ORDER = (
    "npnnpppnnnnnnnnnpnnnnnnppnnpnNnpbnnnnpnnpnnnnnnpppnpnnpnnnnnpnbnnpnnppnppnnbppnnn"
    "pnnnnppppnnpnnnppppnnpnpnpnp"
)


def _asah_ndka() -> tuple[np.ndarray, np.ndarray]:
    cases = {"n": [0], "p": [1], "N": [0, 0], "b": [0, 1]}
    y, s = [], []
    for rank, ch in enumerate(ASAH_NDKA_ORDER):
        y += cases[ch]
        s += [float(rank)] * len(cases[ch])
    return np.array(y), np.array(s)


def test_delong_ci_reproduces_proc_published_example():
    y, s = _asah_ndka()
    assert (y.sum(), (1 - y).sum()) == (41, 72)
    auc, lo, hi = stats.delong_ci(y, s)
    assert auc == pytest.approx(0.611957994579946, abs=1e-12)
    assert lo == pytest.approx(0.501244999271703, abs=1e-9)
    assert hi == pytest.approx(0.722670989888189, abs=1e-9)
    theta, cov = naive_delong(y, [s])
    assert cov[0, 0] == pytest.approx(0.0031908105493913, abs=1e-15)


def test_delong_edge_cases_are_finite_and_in_range():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    constant = np.full(6, 0.5)
    assert stats.delong_ci(y, perfect) == (1.0, 1.0, 1.0)
    assert stats.delong_ci(y, 1 - perfect) == (0.0, 0.0, 0.0)
    assert stats.delong_ci(y, constant) == (0.5, 0.5, 0.5)
    near = np.array([0.1, 0.2, 0.75, 0.7, 0.8, 0.9])
    auc, lo, hi = stats.delong_ci(y, near)
    assert 0 <= lo <= auc <= hi <= 1 and hi == 1.0  # clipped, not above 1
    for a, b in ((perfect, constant), (perfect, perfect), (constant, constant), (near, near)):
        res = stats.delong_test(y, a, b)
        assert not any(np.isnan(res))
        assert 0 <= res[0] <= 1 and 0 <= res[1] <= 1 and 0 <= res[3] <= 1
    assert stats.delong_test(y, near, near)[2:] == (0.0, 1.0)
    assert stats.delong_test(y, constant, constant)[2:] == (0.0, 1.0)
    _, _, z, p = stats.delong_test(y, perfect, constant)  # degenerate: documented inf / 0
    assert z == np.inf and p == 0.0


def test_delong_rejects_bad_input():
    with pytest.raises(InputError, match="at least 2 cases of each class"):
        stats.delong_ci([1, 1, 1, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(InputError, match="only 0 and 1"):
        stats.delong_ci([1, 2, 0, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(InputError, match="shape"):
        stats.delong_test([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2])


# --------------------------------------------------------------------------------------------
# metrics and the patient bootstrap


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 50)
    p = np.clip(0.35 * y + rng.random(50) * 0.7, 0, 1)
    m = stats.binary_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert np.isnan(stats.binary_metrics([1, 1], [0.2, 0.9])["auc"])


def test_cluster_statistic_equals_metrics_of_the_gathered_resample():
    oof = make_oof()
    sub = oof[oof.config == "sagittal"].reset_index(drop=True)
    code, patients = pd.factorize(sub.patient_id)
    y, p = sub.label.to_numpy(), sub.probability.to_numpy()
    stat = stats._ClusterStatistic(y, p, code, len(patients), 0.5, True)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(patients), size=(3, len(patients)))
    values = stat(draws)
    for b in range(3):
        rows = np.concatenate([np.flatnonzero(code == k) for k in draws[b]])
        ref = stats.binary_metrics(y[rows], p[rows])
        for i, name in enumerate(stat.names):
            assert values[i, b] == pytest.approx(ref[name], abs=1e-12)


def test_bootstrap_resamples_patients_not_lesions():
    rng = np.random.default_rng(11)
    n = 30
    y = (np.arange(n) % 3 == 0).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)
    pid = np.array([f"P{i:02d}" for i in range(n)])
    single = stats.bootstrap_metrics(y, p, pid, n_resamples=500, seed=4)
    # every patient's lesion three times over: a patient bootstrap gives the same intervals
    triple = stats.bootstrap_metrics(np.repeat(y, 3), np.repeat(p, 3), np.repeat(pid, 3),
                                     n_resamples=500, seed=4)
    cols = ["estimate", "ci_low", "ci_high"]
    np.testing.assert_allclose(single[cols].to_numpy(), triple[cols].to_numpy(), atol=1e-12)
    assert list(single.metric) == ["accuracy", "f1", "sensitivity", "specificity", "auc"]
    assert (triple.n_lesions == 3 * n).all() and (triple.n_patients == n).all()
    again = stats.bootstrap_metrics(y, p, pid, n_resamples=500, seed=4)
    pd.testing.assert_frame_equal(single, again)
    assert ((single.ci_low <= single.estimate) & (single.estimate <= single.ci_high)).all()
    other = stats.bootstrap_metrics(y, p, pid, n_resamples=500, seed=5)
    assert not np.allclose(other.ci_low, single.ci_low)
    bca = stats.bootstrap_metrics(y, p, pid, n_resamples=300, seed=4, method="BCa")
    assert np.isfinite(bca[["ci_low", "ci_high"]].to_numpy()).all()


def naive_obuchowski_var(y: np.ndarray, s: np.ndarray, pid: np.ndarray) -> float:
    """Obuchowski (1997) straight from the definitions, O(M N): psi over all pairs."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    big_m, big_n = len(pos), len(neg)
    psi = np.array([[1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for j in neg]
                    for i in pos])
    theta = psi.mean()
    patients = sorted(set(pid))
    v10 = {p: sum(psi[a].sum() / big_n for a, i in enumerate(pos) if pid[i] == p)
           for p in patients}
    v01 = {p: sum(psi[:, b].sum() / big_m for b, j in enumerate(neg) if pid[j] == p)
           for p in patients}
    m = {p: sum(pid[i] == p for i in pos) for p in patients}
    n = {p: sum(pid[j] == p for j in neg) for p in patients}
    i10 = sum(m[p] > 0 for p in patients)
    i01 = sum(n[p] > 0 for p in patients)
    n_pat = len(patients)
    s10 = i10 / ((i10 - 1) * big_m) * sum((v10[p] - m[p] * theta) ** 2 for p in patients)
    s01 = i01 / ((i01 - 1) * big_n) * sum((v01[p] - n[p] * theta) ** 2 for p in patients)
    s11 = n_pat / (n_pat - 1) * sum((v10[p] - m[p] * theta) * (v01[p] - n[p] * theta)
                                    for p in patients)
    return s10 / big_m + s01 / big_n + 2 * s11 / (big_m * big_n)


def test_obuchowski_is_delong_for_single_lesions_and_matches_the_definitions():
    rng = np.random.default_rng(5)
    n = 40
    y = (np.arange(n) % 3 == 0).astype(int)
    s = np.round(rng.normal(size=n) + y, 1)  # rounded: ties
    pid = np.array([f"P{i}" for i in range(n)])
    assert stats.obuchowski_ci(y, s, pid) == pytest.approx(stats.delong_ci(y, s))
    # every lesion three times in its patient: the same interval as the single lesions
    assert stats.obuchowski_ci(np.repeat(y, 3), np.repeat(s, 3), np.repeat(pid, 3)) == (
        pytest.approx(stats.delong_ci(y, s)))
    # patients holding lesions of both classes (the cross term) against the definitions
    mixed = np.array([f"P{i // 3}" for i in range(n)])
    auc, lo, hi = stats.obuchowski_ci(y, s, mixed)
    half = sps.norm.ppf(0.975) * np.sqrt(naive_obuchowski_var(y, s, mixed))
    assert (lo, hi) == pytest.approx((max(0, auc - half), min(1, auc + half)))
    assert auc == pytest.approx(skm.roc_auc_score(y, s))
    with pytest.raises(InputError, match="patients with lesions of each class"):
        stats.obuchowski_ci(y, s, np.where(y == 1, "A", "B"))


def test_patient_bootstrap_covers_the_auc_where_lesion_level_delong_does_not():
    """Simulated coverage at nominal 0.95 on clustered lesions (1-3 per patient, latent ICC 0.7,
    one class per patient, true AUC Phi(d / sqrt 2)): the patient bootstrap and Obuchowski's
    clustered DeLong stay near nominal, the lesion-level DeLong interval is too narrow.
    300 cohorts of 40 patients, ~3 s."""
    d, icc, n_cohorts = 1.2, 0.7, 300
    truth = sps.norm.cdf(d / np.sqrt(2))
    covered_boot = covered_delong = covered_obuchowski = 0
    for r in range(n_cohorts):
        rng = np.random.default_rng(r)
        y, z, pid = [], [], []
        for p in range(40):
            label, u = int(rng.random() < 0.35), rng.normal()
            for _ in range(int(rng.integers(1, 4))):
                y.append(label)
                pid.append(f"P{p}")
                z.append(d * label + np.sqrt(icc) * u + np.sqrt(1 - icc) * rng.normal())
        y, prob = np.array(y), 1 / (1 + np.exp(-np.array(z)))
        auc = stats.bootstrap_metrics(y, prob, pid, n_resamples=400, seed=r).set_index(
            "metric").loc["auc"]
        covered_boot += auc.ci_low <= truth <= auc.ci_high
        _, lo, hi = stats.delong_ci(y, prob)
        covered_delong += lo <= truth <= hi
        _, lo, hi = stats.obuchowski_ci(y, prob, pid)
        covered_obuchowski += lo <= truth <= hi
    boot, delong = covered_boot / n_cohorts, covered_delong / n_cohorts
    obuchowski = covered_obuchowski / n_cohorts
    assert 0.88 <= boot <= 0.99, boot  # measured 0.913
    assert 0.87 <= obuchowski <= 0.99, obuchowski  # measured 0.897 (Wald, 40 patients)
    assert delong <= min(boot, obuchowski) - 0.05, (delong, boot)  # measured 0.817


def test_metrics_table_fold_and_pooled_numbers():
    oof = make_oof()
    mt = stats.metrics_table(oof, n_resamples=300)
    assert len(mt) == 3
    row = mt[(mt.method == "magn") & (mt.config == "sagittal")].iloc[0]
    sub = oof[(oof.method == "magn") & (oof.config == "sagittal")]
    per_fold = [skm.roc_auc_score(f.label, f.probability) for _, f in sub.groupby("fold")]
    assert row.auc_fold_mean == pytest.approx(np.mean(per_fold))
    assert row.auc_fold_sd == pytest.approx(np.std(per_fold, ddof=1))
    acc_fold = [skm.accuracy_score(f.label, f.probability >= 0.5) for _, f in sub.groupby("fold")]
    assert row.accuracy_fold_mean == pytest.approx(np.mean(acc_fold))
    assert row.auc == pytest.approx(skm.roc_auc_score(sub.label, sub.probability))
    # the headline AUC interval resamples patients; DeLong (lesion level) is secondary
    boot = stats.bootstrap_metrics(sub.label, sub.probability, sub.patient_id,
                                   n_resamples=300).set_index("metric")
    assert (row.auc_low, row.auc_high) == pytest.approx(
        (boot.loc["auc", "ci_low"], boot.loc["auc", "ci_high"]))
    assert (row.auc_delong_low, row.auc_delong_high) == pytest.approx(
        stats.delong_ci(sub.label, sub.probability)[1:])
    assert row.auc_ci_method.startswith("patient bootstrap")
    assert (row.auc_obuchowski_low, row.auc_obuchowski_high) == pytest.approx(
        stats.obuchowski_ci(sub.label, sub.probability, sub.patient_id)[1:])
    assert row.brier == pytest.approx(skm.brier_score_loss(sub.label, sub.probability))
    assert row.n_folds == 5 and row.n_patients == 40
    assert row.f1_low == pytest.approx(boot.loc["f1", "ci_low"])
    # pooled after ranking within folds: the AUC of the within-fold percentile ranks
    ranks = sub.groupby("fold")["probability"].transform(
        lambda p: (sps.rankdata(p) - 0.5) / len(p))
    assert row.auc_ranked == pytest.approx(skm.roc_auc_score(sub.label, ranks))
    assert row.auc_ranked_low <= row.auc_ranked <= row.auc_ranked_high
    # a reader (one pseudo-fold) gets pooled numbers only
    reader = sub.assign(method="reader", config="reader1", fold=-1)
    rt = stats.metrics_table(reader, n_resamples=200).iloc[0]
    assert np.isnan(rt.auc_fold_mean) and np.isnan(rt.auc_fold_sd) and np.isfinite(rt.auc)


def test_rank_within_folds_removes_per_fold_calibration_and_keeps_fold_aucs():
    oof = make_oof()
    sub = oof[oof.config == "multi-view+attention"].reset_index(drop=True)
    # the fold models disagree about the scale: a different monotone map per fold
    shifted = sub.copy()
    shifted["probability"] = [p ** (1 + 2 * f) for p, f in zip(sub.probability, sub.fold,
                                                                  strict=True)]
    raw_a = skm.roc_auc_score(sub.label, sub.probability)
    raw_b = skm.roc_auc_score(shifted.label, shifted.probability)
    assert abs(raw_a - raw_b) > 0.01  # raw pooling mixes the calibrations
    ra, rb = stats.rank_within_folds(sub), stats.rank_within_folds(shifted)
    np.testing.assert_allclose(ra.probability, rb.probability)
    assert ((ra.probability > 0) & (ra.probability < 1)).all()
    for _fold, part in sub.groupby("fold"):
        assert skm.roc_auc_score(part.label, ra.probability[part.index]) == pytest.approx(
            skm.roc_auc_score(part.label, part.probability))
    # ties share their mean rank; the input is not modified
    tied = sub.assign(probability=0.5)
    assert (stats.rank_within_folds(tied).probability == 0.5).all()
    assert (sub.probability != ra.probability).any()


def test_paired_auc_statistic_equals_sklearn_on_the_gathered_resample():
    oof = make_oof()
    wide = oof.pivot(index="lesion_id", columns="config", values="probability")
    meta = oof.drop_duplicates("lesion_id").set_index("lesion_id").loc[wide.index]
    y = meta.label.to_numpy()
    a, b = wide["multi-view+attention"].to_numpy(), wide["sagittal"].to_numpy()
    code, patients = pd.factorize(meta.patient_id)
    stat = stats._PairedAUCStatistic(y, a, b, code, len(patients))
    draws = np.random.default_rng(2).integers(0, len(patients), size=(4, len(patients)))
    values = stat(draws)
    for k in range(4):
        rows = np.concatenate([np.flatnonzero(code == j) for j in draws[k]])
        ref_a = skm.roc_auc_score(y[rows], a[rows])
        ref_b = skm.roc_auc_score(y[rows], b[rows])
        assert values[:, k] == pytest.approx([ref_a, ref_b, ref_a - ref_b], abs=1e-12)
    res = stats.bootstrap_auc_difference(y, a, b, meta.patient_id, n_resamples=400, seed=1)
    assert res["difference"] == pytest.approx(skm.roc_auc_score(y, a) - skm.roc_auc_score(y, b))
    assert res["ci_low"] <= res["difference"] <= res["ci_high"]
    flipped = stats.bootstrap_auc_difference(y, b, a, meta.patient_id, n_resamples=400, seed=1)
    assert (flipped["ci_low"], flipped["ci_high"]) == pytest.approx(
        (-res["ci_high"], -res["ci_low"]))
    same = stats.bootstrap_auc_difference(y, a, a, meta.patient_id, n_resamples=100)
    assert same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(InputError, match="both classes"):
        stats.bootstrap_auc_difference(np.zeros(4, int), a[:4], b[:4], ["P1"] * 4)


def test_check_oof_reports_every_problem():
    oof = make_oof(n_patients=6)
    with pytest.raises(InputError, match="lacks column"):
        stats.check_oof(oof.drop(columns="probability"))
    bad = oof.copy()
    bad.loc[0, "probability"] = 1.5
    bad.loc[1, "label"] = 2
    with pytest.raises(InputError, match="3 problems") as err:
        stats.check_oof(bad)
    assert "probability" in str(err.value) and "different labels" in str(err.value)
    with pytest.raises(InputError, match="twice"):
        stats.check_oof(pd.concat([oof, oof.iloc[:1]]))
    before = oof.copy()
    stats.check_oof(oof)
    pd.testing.assert_frame_equal(oof, before)


# --------------------------------------------------------------------------------------------
# McNemar, kappa


def test_mcnemar_matches_statsmodels_and_switches_to_exact():
    from statsmodels.stats.contingency_tables import mcnemar

    y = np.array([1] * 40 + [0] * 40)
    a = y.copy()
    b = y.copy()
    a[:6] = 1 - a[:6]  # a wrong on 6, b right
    b[10:14] = 1 - b[10:14]  # b wrong on 4, a right
    r = stats.mcnemar_test(y, a, b)
    assert (r.a_only, r.b_only, r.method) == (4, 6, "exact binomial")
    assert r.p_value == pytest.approx(mcnemar([[70, 4], [6, 0]], exact=True).pvalue)
    b2 = y.copy()
    b2[10:40] = 1 - b2[10:40]
    r2 = stats.mcnemar_test(y, a, b2)
    assert r2.a_only + r2.b_only >= 25 and r2.method.startswith("chi-squared")
    assert r2.p_value == pytest.approx(
        mcnemar([[44, 30], [6, 0]], exact=False, correction=True).pvalue)
    same = stats.mcnemar_test(y, a, a)
    assert (same.a_only, same.b_only, same.p_value) == (0, 0, 1.0)


def test_cohen_kappa_matches_sklearn_with_ci():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2, 80)
    b = np.where(rng.random(80) < 0.8, a, 1 - a)
    k = stats.cohen_kappa(a, b)
    assert k.kappa == pytest.approx(skm.cohen_kappa_score(a, b))
    assert k.ci_low < k.kappa < k.ci_high and k.se > 0
    assert k.agreement == pytest.approx(np.mean(a == b))
    assert k.ci_high - k.ci_low == pytest.approx(2 * sps.norm.ppf(0.975) * k.se)
    perfect = stats.cohen_kappa(a, a)
    assert (perfect.kappa, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)
    assert np.isnan(stats.cohen_kappa([1, 1, 1], [1, 1, 1]).kappa)


# --------------------------------------------------------------------------------------------
# calibration, decision curves, pairwise DeLong


def test_calibration_table_matches_sklearn():
    from sklearn.calibration import calibration_curve

    oof = make_oof()
    cal = stats.calibration_table(oof, n_bins=4, strategy="quantile")
    sub = oof[oof.config == "sagittal"]
    frac, mean = calibration_curve(sub.label, sub.probability, n_bins=4, strategy="quantile")
    c = cal[cal.config == "sagittal"]
    np.testing.assert_allclose(c.fraction_positive, frac)
    np.testing.assert_allclose(c.mean_predicted, mean)
    assert c.n.sum() == len(sub)
    assert (c.n * c.mean_predicted).sum() == pytest.approx(sub.probability.sum())
    assert c.brier.iloc[0] == pytest.approx(skm.brier_score_loss(sub.label, sub.probability))


def test_decision_curve_net_benefit_by_hand():
    oof = make_oof()
    thresholds = [0.1, 0.3, 0.5]
    dc = stats.decision_curve(oof, thresholds=thresholds)
    assert set(dc.model) == {"magn: sagittal", "magn: multi-view+attention",
                             "radiomics: multi-view", "all", "none"}
    sub = oof[oof.config == "sagittal"]
    n = len(sub)
    for t in thresholds:
        pred = sub.probability >= t
        tp = np.sum(pred & (sub.label == 1))
        fp = np.sum(pred & (sub.label == 0))
        nb = tp / n - fp / n * t / (1 - t)
        got = dc[(dc.model == "magn: sagittal") & np.isclose(dc.threshold, t)].net_benefit
        assert float(got.iloc[0]) == pytest.approx(nb)
        prev = sub.label.mean()
        all_nb = dc[(dc.model == "all") & np.isclose(dc.threshold, t)].net_benefit
        assert float(all_nb.iloc[0]) == pytest.approx(prev - (1 - prev) * t / (1 - t))
    # models are compared on the lesions they share
    fewer = oof[~((oof.method == "radiomics") & (oof.lesion_id == oof.lesion_id.iloc[0]))]
    assert (stats.decision_curve(fewer, thresholds=[0.5]).n == n - 1).all()


def test_pairwise_delong_and_holm():
    from statsmodels.stats.multitest import multipletests

    oof = make_oof()
    pw = stats.pairwise_delong(oof)
    assert len(pw) == 3
    r = pw.iloc[0]
    a = oof[oof.config == "sagittal"].set_index("lesion_id")
    b = oof[oof.config == "multi-view+attention"].set_index("lesion_id").loc[a.index]
    assert (r.model_a, r.model_b) == ("magn: sagittal", "magn: multi-view+attention")
    ref = stats.delong_test(a.label, a.probability, b.probability)
    assert (r.auc_a, r.auc_b, r.z, r.p_value) == pytest.approx(ref)
    np.testing.assert_allclose(pw.p_adjusted, multipletests(pw.p_value, method="holm")[1])
    assert (pw.p_adjusted >= pw.p_value).all()
    mat = stats.delong_matrix(pw)
    assert mat.shape == (3, 3) and np.allclose(mat.to_numpy(), mat.to_numpy().T, equal_nan=True)
    assert np.isnan(np.diag(mat.to_numpy())).all()


def test_format_metrics_text_matches_the_numbers():
    rng = np.random.default_rng(3)
    n = 50
    y = np.r_[np.ones(20, int), np.zeros(30, int)]
    oof = pd.DataFrame({
        "method": "radiomics", "config": "multi-view", "fold": np.arange(n) % 5,
        "lesion_id": [f"L{i}" for i in range(n)], "patient_id": [f"P{i}" for i in range(n)],
        "label": y, "probability": np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1),
    })
    table = stats.metrics_table(oof, n_resamples=200)
    text = stats.format_metrics(table)
    row = table.iloc[0]
    assert text.loc[0, "model"] == stats.model_name("radiomics", "multi-view")
    assert text.loc[0, "AUC pooled"] == (
        f"{row['auc']:.2f} (95 % CI {row['auc_low']:.2f}–{row['auc_high']:.2f})")
    assert text.loc[0, "AUC pooled, lesion-level DeLong"] == (
        f"{row['auc']:.2f} (95 % CI {row['auc_delong_low']:.2f}–{row['auc_delong_high']:.2f})")
    assert text.loc[0, "AUC pooled, ranked within folds"].startswith(
        f"{row['auc_ranked']:.2f} (95 % CI ")
    assert text.loc[0, "AUC folds (mean ± SD)"] == (
        f"{row['auc_fold_mean']:.2f} ± {row['auc_fold_sd']:.2f}")
    assert text.loc[0, "lesions"] == n
    # per-fold mean ± SD, as the paper reports it, comes first
    assert list(text.columns) == ["model", "lesions", "AUC folds (mean ± SD)",
                                  "AUC pooled, ranked within folds", "AUC pooled",
                                  "AUC pooled, lesion-level DeLong", "ACC", "F1",
                                  "sensitivity", "specificity"]
    assert text.loc[0, "ACC"].startswith(f"{row['accuracy']:.2f} (95 % CI ")


def test_compare_models_on_ranks_and_raw():
    oof = make_oof()
    a, b = ("magn", "multi-view+attention"), ("radiomics", "multi-view")
    res = stats.compare_models(oof, a, b, n_resamples=300, seed=2)
    ranked = stats.rank_within_folds(oof)
    sa = ranked[(ranked.method == a[0]) & (ranked.config == a[1])].set_index("lesion_id")
    sb = ranked[(ranked.method == b[0]) & (ranked.config == b[1])].set_index("lesion_id")
    sb = sb.loc[sa.index]
    ref = stats.bootstrap_auc_difference(sa.label, sa.probability, sb.probability,
                                         sa.patient_id, n_resamples=300, seed=2)
    assert {k: res[k] for k in ref} == pytest.approx(ref)
    assert res["delong_p"] == pytest.approx(
        stats.delong_test(sa.label, sa.probability, sb.probability)[3])
    assert res["model_a"] == "magn: multi-view+attention" and res["ranked"]
    raw = stats.compare_models(oof, a, b, ranked=False, n_resamples=300)
    sub = oof[(oof.method == a[0]) & (oof.config == a[1])]
    assert raw["auc_a"] == pytest.approx(skm.roc_auc_score(sub.label, sub.probability))
    with pytest.raises(InputError, match="no predictions"):
        stats.compare_models(oof, a, ("magn", "nope"))
