from __future__ import annotations

from django import forms

from .models import EconomicsSettings


class EconomicsSettingsForm(forms.ModelForm):
    class Meta:
        model = EconomicsSettings
        fields = [
            "yearly_sales_marketing_spend_minor",
            "program_yearly_cost_minor",
            "average_lifetime_months",
            "total_customers",
        ]
        labels = {
            "yearly_sales_marketing_spend_minor": "Yearly sales & marketing spend (minor units, e.g. cents)",
            "program_yearly_cost_minor": "Program running cost a year (minor units)",
        }

    def clean(self):
        cleaned = super().clean()
        for name in ("yearly_sales_marketing_spend_minor", "program_yearly_cost_minor"):
            if cleaned.get(name) is not None and cleaned[name] < 0:
                self.add_error(name, "Must be zero or more.")
        return cleaned
