"""Forms of public pages (the referred company's landing page)."""

from __future__ import annotations

from django import forms

from .models import CompanySize

FREE_MAIL_DOMAINS = frozenset({"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com"})


class LandingLeadForm(forms.Form):
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
        if email.rsplit("@", 1)[-1] in FREE_MAIL_DOMAINS:
            raise forms.ValidationError("Use your work e-mail address, not a personal one.")
        return email
