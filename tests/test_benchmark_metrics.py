"""The benchmark's metrics on cases whose answers are known by hand, their weights, the patient-level bootstrap,
the paired test against the real-only arm, and the strata. Reference values marked "sklearn" were computed once
with scikit-learn 1.9.1 (roc_auc_score, max_fpr=0.1) outside the project; each is also derived in a comment."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.benchmark.metrics import METRICS, roc_curve, strata, summarise
from orchestrator.common.errors import MedsynthError

NAMES = ["auroc", "pauroc", "sens_at_spec90", "sens_at_spec95", "balanced_accuracy"]
# McClish's floor: a partial area of 0 up to FPR 0.1 -> 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)); sklearn agrees
PAUROC_OF_ZERO_AREA = 0.47368421052631576


def values(y, s, w=None) -> dict:
    return {name: METRICS[name](y, s, w) for name in NAMES}


def informative(n: int, seed: int, signal: float = 1.0, seeds: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels (a third positive) and (seeds, n) scores in (0, 1) that rank positives higher on average."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    return y, 1 / (1 + np.exp(-(signal * y - 0.5 + rng.normal(0, 1, (seeds, n)))))


# ---- the metrics ----

def test_metrics_come_in_the_designed_order():
    assert list(METRICS) == NAMES


def test_perfect_separation_scores_one_on_every_metric():
    assert values([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == dict.fromkeys(NAMES, 1.0)


def test_reversed_ranking_scores_zero_and_pauroc_its_mcclish_floor():
    got = values([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])
    assert got == {"auroc": 0.0, "pauroc": pytest.approx(PAUROC_OF_ZERO_AREA), "sens_at_spec90": 0.0,
                   "sens_at_spec95": 0.0, "balanced_accuracy": 0.0}


def test_all_tied_scores_are_chance():
    # one diagonal step from (0,0) to (1,1): TPR = FPR everywhere; 0.5 calls every image positive (TPR 1, TNR 0)
    got = values([0, 1] * 5, [0.5] * 10)
    assert got == pytest.approx({"auroc": 0.5, "pauroc": 0.5, "sens_at_spec90": 0.1, "sens_at_spec95": 0.05,
                                 "balanced_accuracy": 0.5})


def test_a_small_case_with_a_tied_pair_by_hand():
    # positives 0.9, 0.8, 0.35; negatives 0.8, 0.4, 0.1. Mann-Whitney: 0.9 beats 3, 0.8 beats 2 and ties 1 (1/2),
    # 0.35 beats 1 -> 6.5 / 9. ROC: (0,0) (0,1/3) (1/3,2/3) [the tie, a diagonal] (2/3,2/3) (2/3,1) (1,1).
    # At FPR 0.1 the diagonal gives TPR 1/3 + 0.1; area to 0.1 = 0.1 * (1/3 + 1/3 + 0.1) / 2 = 0.0383...,
    # McClish 0.5 * (1 + (0.03833 - 0.005) / 0.095) = 0.67544 (sklearn: 0.6754385964912281).
    # Score >= 0.5: positives 0.9, 0.8 (TPR 2/3); negatives 0.4, 0.1 below (TNR 2/3).
    got = values([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.8, 0.9])
    assert got == pytest.approx({"auroc": 6.5 / 9, "pauroc": 0.6754385964912281, "sens_at_spec90": 1 / 3 + 0.1,
                                 "sens_at_spec95": 1 / 3 + 0.05, "balanced_accuracy": 2 / 3})


def test_sensitivity_at_a_vertical_step_at_the_fpr_limit_is_its_top():
    # 10 negatives, the top one (0.95) alone above positive 0.9: FPR 0.1 is reached at TPR 0 and the curve rises
    # to 1/3 there, so threshold 0.9 keeps specificity 0.90 with sensitivity 1/3. AUROC: 9 + 8 + 5.5 of 30 pairs
    # (positive 0.3 ties negative 0.3); the area up to FPR 0.1 is 0 (sklearn: auroc 0.75, pauroc 0.47368...).
    y = [0] * 10 + [1] * 3
    s = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.7, 0.95] + [0.9, 0.6, 0.3]
    got = values(y, s)
    assert got == pytest.approx({"auroc": 0.75, "pauroc": PAUROC_OF_ZERO_AREA, "sens_at_spec90": 1 / 3,
                                 "sens_at_spec95": 0.0, "balanced_accuracy": (2 / 3 + 0.8) / 2})


def test_integer_weights_equal_duplicated_rows():
    y, s = informative(60, seed=1)
    s = np.round(s[0], 1)  # ties across classes
    w = np.random.default_rng(2).integers(0, 4, len(y))
    assert values(y, s, w) == pytest.approx(values(np.repeat(y, w), np.repeat(s, w)))


def test_a_metric_is_none_when_a_class_is_absent_or_has_no_weight():
    assert set(values([0, 0, 0], [0.1, 0.5, 0.9]).values()) == {None}
    assert set(values([0, 1, 1], [0.1, 0.5, 0.9], w=[1, 0, 0]).values()) == {None}


def test_bad_input_names_what_is_wrong():
    with pytest.raises(MedsynthError, match="0/1"):
        METRICS["auroc"]([0, 2], [0.1, 0.2])
    with pytest.raises(MedsynthError, match="2 images"):
        METRICS["auroc"]([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MedsynthError, match="non-negative"):
        METRICS["auroc"]([0, 1], [0.1, 0.2], w=[1, -1])


def test_roc_curve_runs_from_origin_to_one_with_a_tie_as_one_step():
    fpr, tpr = roc_curve([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.8, 0.9])
    assert fpr == pytest.approx([0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert tpr == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1])


def test_roc_curve_of_one_class_is_refused():
    with pytest.raises(MedsynthError, match="both classes"):
        roc_curve([1, 1], [0.2, 0.3])


# ---- summarise: seeds, the bootstrap, the paired test ----

def test_summary_value_is_the_mean_over_seeds_and_seed_sd_their_spread():
    y, scores = informative(90, seed=3, seeds=3)
    per_seed = [METRICS["auroc"](y, s) for s in scores]
    got = summarise(y, scores, np.arange(90).astype(str), n_boot=50)["auroc"]
    assert got["value"] == pytest.approx(np.mean(per_seed))
    assert got["seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert summarise(y, scores[:1], np.arange(90).astype(str), n_boot=50)["auroc"]["seed_sd"] == 0.0


def test_interval_contains_the_estimate_and_narrows_as_the_test_set_grows():
    widths = []
    for n in (60, 600):
        y, scores = informative(n, seed=4, seeds=2)
        summary = summarise(y, scores, np.arange(n).astype(str), n_boot=400)
        for name in NAMES:
            assert summary[name]["lo"] <= summary[name]["value"] <= summary[name]["hi"]
        widths.append(summary["auroc"]["hi"] - summary["auroc"]["lo"])
    assert widths[1] < widths[0] / 2


def test_interval_resamples_patients_not_images():
    # 40 patients with 10 images each that share the patient's label and score: the information is that of
    # 40 cases, and a bootstrap of the 400 images as if independent would be about sqrt(10) times too narrow
    y, scores = informative(40, seed=5)
    y, scores = np.repeat(y, 10), np.repeat(scores, 10, axis=1)
    width = {}
    for kind, groups in (("patients", np.repeat(np.arange(40), 10)), ("images", np.arange(400))):
        got = summarise(y, scores, groups.astype(str), n_boot=400)["auroc"]
        width[kind] = got["hi"] - got["lo"]
    assert width["patients"] > 2 * width["images"]


def test_an_arm_identical_to_the_baseline_differs_by_zero_with_p_one():
    y, scores = informative(90, seed=6, seeds=2)
    vs_real = summarise(y, scores, np.arange(90).astype(str), n_boot=200, baseline=scores)["vs_real"]
    assert vs_real == {name: {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0} for name in NAMES}


def test_a_clearly_better_arm_has_a_small_p_and_a_positive_interval():
    y, weak = informative(300, seed=7, signal=0.3, seeds=3)
    _, strong = informative(300, seed=8, signal=3.0, seeds=3)
    groups = (np.arange(300) // 3).astype(str)
    got = summarise(y, strong, groups, n_boot=500, baseline=weak)["vs_real"]["auroc"]
    assert got["diff"] > 0.2 and got["lo"] > 0 and got["p"] < 0.05


def test_the_same_seed_gives_the_same_summary_and_another_seed_another():
    y, scores = informative(90, seed=9, seeds=2)
    groups = (np.arange(90) // 2).astype(str)
    first = summarise(y, scores, groups, n_boot=100, seed=1, baseline=scores[::-1])
    assert summarise(y, scores, groups, n_boot=100, seed=1, baseline=scores[::-1]) == first
    assert summarise(y, scores, groups, n_boot=100, seed=2, baseline=scores[::-1]) != first


def test_a_summary_without_both_classes_is_none_throughout():
    got = summarise([0, 0, 0], [[0.1, 0.2, 0.3]], ["a", "b", "c"], n_boot=20, baseline=[[0.3, 0.2, 0.1]])
    assert got["auroc"] == dict.fromkeys(["value", "lo", "hi", "seed_sd"])
    assert got["vs_real"]["auroc"] == dict.fromkeys(["diff", "lo", "hi", "p"])


def test_summary_refuses_group_ids_that_do_not_match_the_images():
    with pytest.raises(MedsynthError, match="2 group ids for 3 test images"):
        summarise([0, 1, 1], [[0.1, 0.2, 0.3]], ["a", "b"], n_boot=20)


# ---- strata ----

def test_strata_compute_within_each_value_and_call_missing_values_unknown():
    y, scores = informative(120, seed=10, seeds=2)
    groups = np.arange(120).astype(str)
    sex = (["female", "male", None, ""] * 30)
    got = strata(y, scores, groups, {"sex": sex}, n_boot=50, seed=0)["sex"]
    assert sorted(got) == ["female", "male", "unknown"]
    female = np.array(sex) == "female"
    assert got["female"]["n"] == 30 and got["female"]["positives"] == int(y[female].sum())
    assert got["unknown"]["n"] == 60
    alone = summarise(y[female], scores[:, female], groups[female], n_boot=50, seed=0)["auroc"]
    assert got["female"]["auroc"] == {k: alone[k] for k in ("value", "lo", "hi")}


def test_a_stratum_lacking_a_class_has_no_metrics():
    y = np.array([1, 0, 1, 0, 0, 0])
    site = ["head", "head", "leg", "leg", "torso", "torso"]
    got = strata(y, [[0.9, 0.1, 0.8, 0.2, 0.3, 0.4]], list("abcdef"), {"site": site}, n_boot=20, seed=0)["site"]
    assert got["torso"] == {"n": 2, "positives": 0, **dict.fromkeys(NAMES)}
    assert got["head"]["auroc"]["value"] == 1.0


def test_strata_refuse_a_field_of_the_wrong_length():
    with pytest.raises(MedsynthError, match="'sex' has 2 values for 3 test images"):
        strata([0, 1, 1], [[0.1, 0.2, 0.3]], ["a", "b", "c"], {"sex": ["f", "m"]}, n_boot=20, seed=0)
