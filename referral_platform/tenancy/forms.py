from allauth.account.forms import SignupForm
from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Role
from .services import invitation_accept, tenant_create_with_owner

PENDING_INVITATION_SESSION_KEY = "pending_invitation_token"


class WorkspaceSignupForm(SignupForm):
    """E-mail + password sign-up that also creates the user's workspace (or joins an invitation's)."""

    workspace_name = forms.CharField(
        max_length=200,
        required=False,
        label="Company / workspace name",
        widget=forms.TextInput(attrs={"placeholder": "Acme Inc.", "autocomplete": "organization"}),
    )
    field_order = ["email", "workspace_name", "password1", "password2"]

    def __init__(self, *args, request=None, **kwargs):
        self.request = request
        super().__init__(*args, **kwargs)
        self._has_invitation = bool(request and request.session.get(PENDING_INVITATION_SESSION_KEY))
        if self._has_invitation:
            self.fields["workspace_name"].widget = forms.HiddenInput()

    def clean(self):
        cleaned = super().clean()
        if not self._has_invitation and not (cleaned.get("workspace_name") or "").strip():
            self.add_error("workspace_name", "Enter a name for your workspace.")
        return cleaned

    def save(self, request):
        # User, e-mail address and workspace are created together or not at all.
        with transaction.atomic():
            user = super().save(request)
            token = request.session.get(PENDING_INVITATION_SESSION_KEY)
            if token:
                try:
                    invitation_accept(token=token, user=user)
                except ValidationError:
                    tenant_create_with_owner(name=self.cleaned_data.get("workspace_name") or user.email, owner=user)
                request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
            else:
                tenant_create_with_owner(name=self.cleaned_data["workspace_name"], owner=user)
        return user


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=[(Role.MARKETER, "Marketer"), (Role.VIEWER, "Viewer"), (Role.OWNER, "Owner")])


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
