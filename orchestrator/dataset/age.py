"""Age bands: the one grouping of ages (decades, worded "50s") that the dataset report, the sample prompts,
the review's reference images and `generate --balance age_band` all use, so a band means the same everywhere."""

from __future__ import annotations


def age_band(age: object) -> str | None:
    """57, 57.0, '57' or '57.0' -> '50s'; None when the age is missing or unreadable (None, NA, NaN, '', 'x').
    Free of pandas, so the sample prompts' csv reading does not import it."""
    try:
        return f"{int(float(age)) // 10 * 10}s"  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # float(None), float(pd.NA), int(nan), int(inf)
        return None
