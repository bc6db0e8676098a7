"""The old load name of the money filters: ``{% load program_money %}`` is ``{% load money %}``
(referral_platform/templatetags/money.py), kept so templates written against it still render."""

from referral_platform.templatetags.money import register  # noqa: F401
