from django import template

from referral_platform.money import format_money, format_percent

register = template.Library()


@register.filter
def money(amount_minor, currency):
    """``{{ 12345|money:"USD" }}`` → ``123.45 USD``."""
    if amount_minor is None or amount_minor == "":
        return ""
    return format_money(int(amount_minor), currency)


@register.filter
def percent(percent_bp):
    return format_percent(int(percent_bp))
