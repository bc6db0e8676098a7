"""Money and percentages: the one place that rounds and formats them.

Convention (docs/programs.md): amounts are ``int`` minor units of an ISO 4217 currency (cents for
USD, yen for JPY); percentages are ``int`` basis points (1 % = 100 bp, 100 % = 10 000 bp). Floats
never hold money. A percentage of an amount is rounded once, half up, to the minor unit.
"""

from __future__ import annotations

from typing import Any

BASIS_POINTS = 10_000  # 100 %

# The ISO 4217 codes of currencies (funds, precious metals and testing codes left out): what an amount's
# currency may be. A code outside it ("ZZZ") is refused at the API's door.
_ISO_4217_CODES = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF
KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU
UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())


def is_iso_currency(code: str) -> bool:
    return code in ISO_4217


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


def format_amount(amount_minor: int | None, currency: str | None) -> str:
    """``format_money`` for displays where a value may be missing: ``None`` → ``"—"``; an amount that
    came without a currency (an event that carried none) → its minor units, grouped (``"1,234"``)."""
    if amount_minor is None:
        return "—"
    if not currency:
        return f"{amount_minor:,}"
    return format_money(amount_minor, currency)


MINOR_SUFFIX = "_minor"


def format_money_fields(document: Any, currency: str = "") -> Any:
    """A copy of a JSON-like document for display, with every integer under a key ending in ``_minor``
    formatted: ``{"amount_minor": 1234, "currency": "KWD"}`` → ``{"amount": "1.234 KWD", "currency": "KWD"}``.

    The currency is the ``currency`` key of the same object, else the nearest enclosing one, else
    ``currency``; with none known the integer is kept (its key too), as a guess would mislead.
    """
    if isinstance(document, list):
        return [format_money_fields(item, currency) for item in document]
    if not isinstance(document, dict):
        return document
    here = document.get("currency") if isinstance(document.get("currency"), str) and document["currency"] else currency
    shown: dict[str, Any] = {}
    for key, value in document.items():
        plain = key.removesuffix(MINOR_SUFFIX) if isinstance(key, str) else key
        if plain != key and here and isinstance(value, int) and not isinstance(value, bool) and plain not in document:
            shown[plain] = format_money(value, here)
        else:
            shown[key] = format_money_fields(value, here)
    return shown


def format_percent(percent_bp: int) -> str:
    """``1000`` → ``"10 %"``, ``1250`` → ``"12.5 %"``, ``125`` → ``"1.25 %"``."""
    whole, rest = divmod(percent_bp, 100)
    if not rest:
        return f"{whole} %"
    return f"{whole}.{rest:02d}".rstrip("0") + " %"


# --- typed input: what a person writes in a form ("50.00 USD", "12.5") ---------------------------------
class MoneyInputError(ValueError):
    """Typed money or percentage that cannot be read; the message says why, in words."""


def parse_money(text: str, currency: str) -> int:
    """What a person typed as an amount of ``currency`` → minor units.

    ``"50.00 USD"``, ``"50"``, ``"1,200.5"`` (USD) → 5000, 5000, 120050; ``"500 JPY"`` → 500. A currency code, when
    given, must be ``currency``; more decimals than the currency has, negative amounts or letters are refused
    with a ``MoneyInputError`` saying what to type instead.
    """
    code = currency.upper()
    raw = " ".join(str(text or "").split())
    if not raw:
        raise MoneyInputError("Enter an amount.")
    parts = raw.rsplit(" ", 1)
    number = raw
    if len(parts) == 2 and parts[1].isalpha():
        if parts[1].upper() != code:
            raise MoneyInputError(f"Amounts are in {code}, the program's currency (you typed {parts[1].upper()}).")
        number = parts[0]
    elif raw[-3:].isalpha() and raw[-3:].upper() == code:
        number = raw[:-3]
    number = number.strip().replace(",", "").replace(" ", "")
    exponent = currency_exponent(code)
    example = format_money(5000 * 10**exponent // 100 if exponent else 500, code)
    if number.startswith("-"):
        raise MoneyInputError("Enter an amount of zero or more.")
    whole, _, fraction = number.partition(".")
    if (not whole and not fraction) or not (whole or "0").isdigit() or (fraction and not fraction.isdigit()):
        raise MoneyInputError(f"Write an amount such as {example}.")
    if len(fraction) > exponent:
        if exponent == 0:
            raise MoneyInputError(f"{code} has no decimals: write whole amounts, such as {example}.")
        raise MoneyInputError(f"{code} has {exponent} decimals at most, such as {example}.")
    return int(whole or "0") * 10**exponent + int(fraction.ljust(exponent, "0") or "0")


def parse_percent(text: str) -> int:
    """A percentage typed as percent (``"12.5"``, ``"12.5 %"``, ``"20%"``) → basis points (1250, 2000)."""
    raw = str(text or "").strip().removesuffix("%").strip().replace(",", ".")
    if not raw:
        raise MoneyInputError("Enter a percentage.")
    whole, _, fraction = raw.partition(".")
    if raw.startswith("-"):
        raise MoneyInputError("Enter a percentage of zero or more.")
    if not (whole or "0").isdigit() or (fraction and not fraction.isdigit()) or not (whole or fraction):
        raise MoneyInputError("Write a percentage such as 12.5 (for 12.5 %).")
    if len(fraction) > 2:
        raise MoneyInputError("Use at most two decimals, such as 12.25.")
    return int(whole or "0") * 100 + int(fraction.ljust(2, "0") or "0")


def money_input_text(amount_minor: int, currency: str) -> str:
    """Minor units as a person would type them back: ``5000, "USD"`` → ``"50.00 USD"`` (no thousands commas)."""
    return format_money(amount_minor, currency).replace(",", "")


def percent_input_text(percent_bp: int) -> str:
    """Basis points as a person would type them: ``1250`` → ``"12.5"``, ``2000`` → ``"20"``."""
    return format_percent(percent_bp).removesuffix(" %")
