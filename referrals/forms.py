"""Forms of public pages (the referred company's landing page)."""

from __future__ import annotations

from django import forms

from referral_platform import abuse
from referral_platform.domains import free_email_domains, is_free_email_domain

from .models import CompanySize

# The one list of personal mail providers (referral_platform/data/free_email_domains.txt), also
# ignored by the fraud checks; the name stays for code that imports it from here.
FREE_MAIL_DOMAINS = free_email_domains()


class LandingLeadForm(abuse.HoneypotFormMixin, forms.Form):
    name = forms.CharField(max_length=200, label="Your name", widget=forms.TextInput(attrs={"autocomplete": "name"}))
    email = forms.EmailField(
        max_length=254,
        label="Work e-mail",
        widget=forms.EmailInput(attrs={"autocomplete": "email", "inputmode": "email"}),
    )
    company = forms.CharField(
        max_length=200, label="Company", widget=forms.TextInput(attrs={"autocomplete": "organization"})
    )
    company_size = forms.ChoiceField(
        choices=[("", "Choose…"), *CompanySize.choices], label="Company size", required=True
    )
    how_did_you_hear = forms.CharField(max_length=300, required=False, label="How did you hear about us?")
    visitor_id = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if is_free_email_domain(email):
            raise forms.ValidationError("Use your work e-mail address, not a personal one.")
        return email
