"""Pure formulas of the analytics pages (no database): every ratio is None when it is undefined
(a zero denominator), never NaN or infinity; pages and CSVs show None as "—"."""

from __future__ import annotations

from collections.abc import Sequence

REFERRAL_RATE_BAND = (15.0, 25.0)  # B2B SaaS benchmark, percent of customers who refer
HEALTHY_LTV_TO_CAC = 4.0
TIME_TO_REWARD_TARGET_DAYS = 7.0
PAYBACK_TARGET_MONTHS = 6.0
DASH = "—"


def ratio(numerator: float | int | None, denominator: float | int | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def percent(numerator, denominator) -> float | None:
    value = ratio(numerator, denominator)
    return None if value is None else value * 100


def change_percent(current, previous) -> float | None:
    """Change against the previous period, in percent (None when the previous one is zero)."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / abs(previous) * 100


def roi_percent(revenue_minor: int, cost_minor: int) -> float | None:
    """Program ROI = (revenue - cost) / cost x 100."""
    return percent(revenue_minor - cost_minor, cost_minor)


def ltv_minor(average_arr_minor: float | None, lifetime_months: float | None) -> float | None:
    """LTV = average ARR x average lifetime (in years)."""
    if average_arr_minor is None or lifetime_months is None:
        return None
    return average_arr_minor * lifetime_months / 12


def cac_minor(yearly_spend_minor: int | None, customers_per_year: float | None) -> float | None:
    """CAC = yearly sales and marketing spend / customers acquired per year."""
    return ratio(yearly_spend_minor, customers_per_year)


def payback_months(cost_per_customer_minor: float | None, average_arr_minor: float | None) -> float | None:
    """Months of a customer's revenue that pay back what acquiring it cost."""
    if cost_per_customer_minor is None or average_arr_minor is None:
        return None
    return ratio(cost_per_customer_minor, average_arr_minor / 12)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolated percentile (as PostgreSQL's percentile_cont); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def top_share_percent(counts: Sequence[int], top_fraction: float = 0.10) -> float | None:
    """Share of all referrals made by the top ``top_fraction`` of referrers (at least one referrer)."""
    ordered = sorted((count for count in counts if count > 0), reverse=True)
    if not ordered:
        return None
    top = max(1, round(len(ordered) * top_fraction))
    return percent(sum(ordered[:top]), sum(ordered))


def drop_off_percent(previous_step: int, this_step: int) -> float | None:
    """Share of the previous step's count that did not reach this step."""
    value = percent(previous_step - this_step, previous_step)
    return None if value is None else max(0.0, value)


def shown(value, digits: int = 1) -> str:
    """A figure for a page or a CSV: "—" for an undefined value."""
    if value is None:
        return DASH
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):  # defensive: never print NaN / inf
            return DASH
        return f"{value:.{digits}f}"
    return str(value)
