"""Money and percentages: the one place that rounds and formats them.

Convention (docs/programs.md): amounts are ``int`` minor units of an ISO 4217 currency (cents for
USD, yen for JPY); percentages are ``int`` basis points (1 % = 100 bp, 100 % = 10 000 bp). Floats
never hold money. A percentage of an amount is rounded once, half up, to the minor unit.
"""

from __future__ import annotations

BASIS_POINTS = 10_000  # 100 %

# ISO 4217 currencies whose minor unit is not 1/100 of the major unit.
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (2 for most, 0 for JPY, 3 for KWD)."""
    code = currency.upper()
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def percent_of(amount_minor: int, percent_bp: int) -> int:
    """``percent_bp`` basis points of ``amount_minor``, rounded half up to the minor unit."""
    if amount_minor < 0 or percent_bp < 0:
        raise ValueError("percent_of takes non-negative amounts and percentages")
    return (amount_minor * percent_bp + BASIS_POINTS // 2) // BASIS_POINTS


def format_money(amount_minor: int, currency: str) -> str:
    """``12345, "USD"`` → ``"123.45 USD"``; ``1234567, "USD"`` → ``"12,345.67 USD"``; ``500, "JPY"`` → ``"500 JPY"``."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**exponent)
    text = f"{major:,}"
    if exponent:
        text += f".{minor:0{exponent}d}"
    return f"{sign}{text} {currency.upper()}"


def format_percent(percent_bp: int) -> str:
    """``1000`` → ``"10 %"``, ``1250`` → ``"12.5 %"``, ``125`` → ``"1.25 %"``."""
    whole, rest = divmod(percent_bp, 100)
    if not rest:
        return f"{whole} %"
    return f"{whole}.{rest:02d}".rstrip("0") + " %"
