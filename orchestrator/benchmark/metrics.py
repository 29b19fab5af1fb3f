"""The benchmark's classifier metrics, their patient-level bootstrap intervals and the paired test of an arm
against the real-only arm; numpy only.

Every metric is read off one weighted ROC curve, and a bootstrap replicate is only a weighting of the test
images (how often each patient was drawn). So each seed's scores are sorted once, and a chunk of replicates is
one gather and one cumulative sum per class, never a re-sort: 2000 replicates cost about what 2000 sums do."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from orchestrator.common.errors import MedsynthError

MAX_FPR = 0.1  # pAUROC's range of false-positive rates
CUTOFF = 0.5   # balanced accuracy calls a score >= CUTOFF positive
_CHUNK = 4_000_000  # replicate x image weights held at once per class (32 MB of float64)


class _Ranking:
    """One score vector, sorted once, with the ROC curve's points as counts of each class ranked above them.

    Only points where the curve can bend are kept: a run of tied scores holding both classes, and the ends of
    runs of one class (the points inside such a run are collinear: areas and interpolations do not change),
    plus the point at CUTOFF. For ISIC's ~2 % positives that is ~250 points instead of ~6,600, for every
    replicate."""

    def __init__(self, y: np.ndarray, s: np.ndarray):
        order = np.argsort(-s, kind="stable")
        ranked, pos = s[order], y[order] == 1
        block_end = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # last image of each tied score
        n_pos = np.cumsum(pos)[block_end]
        block_pos, block_size = np.diff(n_pos, prepend=0), np.diff(block_end, prepend=-1)
        kind = np.where(block_pos == 0, 0, np.where(block_pos == block_size, 1, 2))  # negative, positive, mixed
        high = ranked[block_end] >= CUTOFF
        keep = np.r_[(kind[:-1] == 2) | (kind[:-1] != kind[1:]) | (high[:-1] != high[1:]), True]
        self.n_pos = np.r_[0, n_pos[keep]]
        self.n_neg = np.r_[0, block_end[keep] + 1] - self.n_pos
        self.half = int(np.count_nonzero(high[keep]))  # the point after the last score >= CUTOFF
        self.pos_order, self.neg_order = order[pos], order[~pos]

    def curve(self, weights: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FPR and TPR, (B, points), for B weightings where image i weighs weights[:, member[i]]; rows are NaN
        where a class has no weight."""
        tp = _cumulative(weights[:, member[self.pos_order]], self.n_pos)
        fp = _cumulative(weights[:, member[self.neg_order]], self.n_neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return fp / fp[:, -1:], tp / tp[:, -1:]


def _cumulative(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The weight of the first counts[k] images of each row, for every k (counts start at 0)."""
    cum = np.zeros((weights.shape[0], weights.shape[1] + 1))
    np.cumsum(weights, axis=1, out=cum[:, 1:])
    return cum[:, counts]


def _area_to(fpr: np.ndarray, tpr: np.ndarray, x: float) -> np.ndarray:
    """Area under the piecewise-linear curve from FPR 0 to x (a vertical step has no width)."""
    x0, x1, y0, y1 = fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:]
    width = np.maximum(np.minimum(x1, x) - x0, 0.0)
    share = np.divide(width, x1 - x0, out=np.zeros_like(width), where=x1 > x0)
    return np.sum(width * (2 * y0 + (y1 - y0) * share), axis=1) / 2


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, x: float) -> np.ndarray:
    """TPR on the segment that crosses FPR = x, linearly interpolated; a vertical step at exactly x gives its top."""
    i = np.maximum(np.count_nonzero(fpr <= x, axis=1) - 1, 0)[:, None]  # x < 1 = the last FPR: i + 1 exists
    f0, t0 = (np.take_along_axis(a, i, 1) for a in (fpr, tpr))
    f1, t1 = (np.take_along_axis(a, i + 1, 1) for a in (fpr, tpr))
    share = np.divide(x - f0, f1 - f0, out=np.zeros_like(f0), where=f1 > f0)
    return (t0 + (t1 - t0) * share)[:, 0]


def _mcclish(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Partial area to MAX_FPR rescaled so that the chance diagonal gives 0.5 and a perfect ranking 1
    (McClish 1989), as sklearn's roc_auc_score(max_fpr=...) does: readers compare it with AUROC's scale."""
    least, most = MAX_FPR ** 2 / 2, MAX_FPR
    return 0.5 * (1 + (_area_to(fpr, tpr, MAX_FPR) - least) / (most - least))


# each maps a batch of curves (FPR, TPR, index of the CUTOFF point) to one value per curve
_CURVE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "auroc": lambda fpr, tpr, half: _area_to(fpr, tpr, 1.0),
    "pauroc": lambda fpr, tpr, half: _mcclish(fpr, tpr),
    "sens_at_spec90": lambda fpr, tpr, half: _tpr_at(fpr, tpr, 0.10),
    "sens_at_spec95": lambda fpr, tpr, half: _tpr_at(fpr, tpr, 0.05),
    "balanced_accuracy": lambda fpr, tpr, half: (tpr[:, half] + 1 - fpr[:, half]) / 2,
}
_DOCS = {
    "auroc": "Area under the ROC curve; a tied positive/negative pair counts 1/2 (Mann-Whitney).",
    "pauroc": "Partial AUROC for FPR <= 0.1, McClish-standardised exactly as sklearn's roc_auc_score(max_fpr=0.1) "
              "(0.5 = chance, 1 = perfect).",
    "sens_at_spec90": "Sensitivity at specificity 0.90: the ROC curve linearly interpolated at FPR = 0.10 (the "
                      "operating point of a random mix of the two thresholds around it); where the curve has a "
                      "point at FPR = 0.10 exactly, the sensitivity of the highest threshold with specificity >= 0.90.",
    "sens_at_spec95": "Sensitivity at specificity 0.95, interpolated at FPR = 0.05 as sens_at_spec90 is.",
    "balanced_accuracy": "(TPR + TNR) / 2 with a score >= 0.5 called positive.",
}


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise MedsynthError(f"benchmark metrics: labels must be a 1-D array of 0/1 (got shape {y.shape})")
    return y.astype(np.int8)


def _scores(s, n: int, rows: bool, what: str = "scores") -> np.ndarray:
    s = np.asarray(s, dtype=float)
    if s.ndim != 1 + rows or s.shape[-1] != n or not len(s) or not np.isfinite(s).all():
        shape = "(seeds, images)" if rows else "(images,)"
        raise MedsynthError(f"benchmark metrics: {what} must be finite, of shape {shape} with {n} images "
                            f"(got shape {s.shape})")
    return s


def _test_set(y, scores, groups, n_boot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = _labels(y)
    scores, groups = _scores(scores, len(y), rows=True), np.asarray(groups)
    if groups.shape != y.shape:
        raise MedsynthError(f"benchmark metrics: {groups.shape[0] if groups.ndim else 0} group ids for "
                            f"{len(y)} test images")
    if n_boot < 1:
        raise MedsynthError(f"benchmark metrics: n_boot must be at least 1 (got {n_boot})")
    return y, scores, groups


def _values(ranking: _Ranking, weights: np.ndarray, member: np.ndarray) -> np.ndarray:
    """All metrics, (B, metrics), of B weightings of one ranking; NaN where a class has no weight."""
    fpr, tpr = ranking.curve(weights, member)
    return np.stack([f(fpr, tpr, ranking.half) for f in _CURVE_METRICS.values()], axis=1)


def _unweighted(ranking: _Ranking, n: int) -> np.ndarray:
    return _values(ranking, np.ones((1, 1)), np.zeros(n, dtype=np.intp))[0]


def _as_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _metric(name: str) -> Callable[..., float | None]:
    def metric(y, s, w=None) -> float | None:
        y = _labels(y)
        s = _scores(s, len(y), rows=False)
        w = np.ones(len(y)) if w is None else _scores(w, len(y), rows=False, what="weights")
        if (w < 0).any():
            raise MedsynthError("benchmark metrics: weights must be non-negative")
        ranking = _Ranking(y, s)
        fpr, tpr = ranking.curve(w[None, :], np.arange(len(y)))
        return _as_float(_CURVE_METRICS[name](fpr, tpr, ranking.half)[0])

    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = _DOCS[name] + " None when a class is absent or has zero weight; w = per-image weights."
    return metric


METRICS: dict[str, Callable[..., float | None]] = {name: _metric(name) for name in _CURVE_METRICS}


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1); tied scores are one (diagonal) step, and points inside a run of one
    class are dropped (collinear, as sklearn's drop_intermediate) so that the curve stays small to store."""
    y = _labels(y)
    fpr, tpr = _Ranking(y, _scores(s, len(y), rows=False)).curve(np.ones((1, 1)), np.zeros(len(y), dtype=np.intp))
    if not np.isfinite(fpr).all():
        raise MedsynthError("benchmark metrics: a ROC curve needs both classes among the test images")
    return fpr[0], tpr[0]


def _bootstrap(arms: list[list[_Ranking]], member: np.ndarray, n_groups: int, n_boot: int,
               seed: int) -> list[np.ndarray]:
    """Per arm, (n_boot, metrics): the metrics averaged over the arm's seeds, every arm and seed on the same
    resamples of the groups, drawn as multinomial counts (so the arms' differences are paired)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // len(member))
    out = [np.empty((n_boot, len(_CURVE_METRICS))) for _ in arms]
    for start in range(0, n_boot, step):
        size = min(step, n_boot - start)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=size).astype(float)
        for rankings, result in zip(arms, out):
            result[start:start + size] = np.mean([_values(r, counts, member) for r in rankings], axis=0)
    return out


def _interval(replicates: np.ndarray) -> tuple[float | None, float | None]:
    """The 95 % percentile interval of the replicates where the metric is defined (a resample can miss a class)."""
    finite = replicates[np.isfinite(replicates)]
    if not finite.size:
        return None, None
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def _p_value(diffs: np.ndarray) -> float | None:
    finite = diffs[np.isfinite(diffs)]
    if not finite.size:
        return None
    return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))


def summarise(y, scores, groups, *, n_boot: int = 2000, seed: int = 0, baseline=None) -> dict:
    """Each metric of an arm's test scores, (S, N) one row per training seed, with a 95 % CI that resamples
    GROUPS (patients): images of one patient are not independent, so resampling images would be too narrow.

    value: mean over seeds of the metric; seed_sd: its std over seeds (ddof=1; 0.0 for one seed); lo/hi: the
    2.5/97.5 percentiles of n_boot replicates, each the seed mean on one resample of the groups (with
    replacement, replicates missing a class skipped). With baseline, (S', N) scores of the real-only arm on the
    same images, "vs_real" holds per metric the difference arm - baseline of seed means, its paired bootstrap
    interval (both arms on the same resamples) and p two-sided = min(1, 2 * min(share of replicate
    differences <= 0, share >= 0)). None wherever a metric is undefined (a class absent)."""
    y, scores, groups = _test_set(y, scores, groups, n_boot)
    arms = [[_Ranking(y, s) for s in scores]]
    if baseline is not None:
        arms.append([_Ranking(y, s) for s in _scores(baseline, len(y), rows=True, what="baseline scores")])
    per_seed = [np.array([_unweighted(r, len(y)) for r in rankings]) for rankings in arms]
    points = [values.mean(axis=0) for values in per_seed]
    spread = np.std(per_seed[0], axis=0, ddof=1) if len(scores) > 1 else np.zeros(len(_CURVE_METRICS))
    names, member = np.unique(groups, return_inverse=True)
    boots = _bootstrap(arms, member.astype(np.intp), len(names), n_boot, seed)
    out: dict = {}
    for k, name in enumerate(_CURVE_METRICS):
        defined = np.isfinite(points[0][k])
        lo, hi = _interval(boots[0][:, k]) if defined else (None, None)
        out[name] = {"value": _as_float(points[0][k]), "lo": lo, "hi": hi,
                     "seed_sd": float(spread[k]) if defined else None}
    if baseline is not None:
        out["vs_real"] = {}
        for k, name in enumerate(_CURVE_METRICS):
            diff, replicates = points[0][k] - points[1][k], boots[0][:, k] - boots[1][:, k]
            lo, hi = _interval(replicates) if np.isfinite(diff) else (None, None)
            out["vs_real"][name] = {"diff": _as_float(diff), "lo": lo, "hi": hi,
                                    "p": _p_value(replicates) if np.isfinite(diff) else None}
    return out


def strata(y, scores, groups, labels: Mapping[str, Sequence[str | None]], *, n_boot: int, seed: int,
           min_each: int = 1) -> dict:
    """Per field (sex, age_band, site, skin_tone...) and each of its values (None or "" -> "unknown"): the
    stratum's image and positive counts and each metric computed within it, {"value", "lo", "hi"}, or None
    where the stratum has fewer than min_each images of a class (a metric of one class means nothing)."""
    y, scores, groups = _test_set(y, scores, groups, n_boot)
    out: dict = {}
    for field, values in labels.items():
        if len(values) != len(y):
            raise MedsynthError(f"benchmark metrics: stratum field {field!r} has {len(values)} values for "
                                f"{len(y)} test images")
        named = np.array(["unknown" if v is None or v == "" else str(v) for v in values])
        out[field] = {}
        for value in sorted(set(named.tolist())):
            mask = named == value
            n, positives = int(mask.sum()), int(y[mask].sum())
            entry: dict = {"n": n, "positives": positives}
            if min(positives, n - positives) >= min_each:
                summary = summarise(y[mask], scores[:, mask], groups[mask], n_boot=n_boot, seed=seed)
                entry.update({m: {k: summary[m][k] for k in ("value", "lo", "hi")} for m in _CURVE_METRICS})
            else:
                entry.update(dict.fromkeys(_CURVE_METRICS))
            out[field][value] = entry
    return out
