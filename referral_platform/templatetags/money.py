"""``{% load money %}``: the template side of referral_platform/money.py, for every app's templates.

Registered by name in ``TEMPLATES["OPTIONS"]["libraries"]`` (the core package is not an installed app).
"""

from django import template

from referral_platform.money import format_amount, format_percent

register = template.Library()


@register.filter
def money(amount_minor, currency):
    """``{{ 12345|money:"USD" }}`` → ``123.45 USD``; ``{{ 500|money:"JPY" }}`` → ``500 JPY``; nothing → ``""``."""
    if amount_minor is None or amount_minor == "":
        return ""
    return format_amount(int(amount_minor), currency)


@register.filter
def percent(percent_bp):
    """``{{ 1250|percent }}`` → ``12.5 %``."""
    if percent_bp is None or percent_bp == "":
        return ""
    return format_percent(int(percent_bp))
