"""The portal's forms: they check what a person typed, then hand plain values to the domain's services."""

from django import forms
from django_otp.plugins.otp_totp.models import TOTPDevice


class DeclineForm(forms.Form):
    """Why a therapist turns an offer down: a reason from the list (routing learns from them) and their words."""

    REASONS = [
        ("no-capacity", "No room for a new client now"),
        ("outside-scope", "Outside my scope of practice"),
        ("too-far", "Too far, or not reachable"),
        ("schedule", "Schedules do not match"),
        ("modality", "Cannot deliver the requested modality"),
        ("other", "Other (say why below)"),
    ]
    reason = forms.ChoiceField(choices=REASONS, widget=forms.RadioSelect)
    detail = forms.CharField(required=False, max_length=400, widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self):
        data = super().clean()
        if data.get("reason") == "other" and not (data.get("detail") or "").strip():
            self.add_error("detail", "Say why, when the reason is Other.")
        return data

    def reason_text(self) -> str:
        """The reason as the offer keeps it (and the physician's Task shows): the label, then the free text."""
        label = dict(self.REASONS)[self.cleaned_data["reason"]]
        detail = (self.cleaned_data.get("detail") or "").strip()
        return f"{label}: {detail}" if detail else label


class TokenForm(forms.Form):
    """A six-digit code from the authenticator app."""

    token = forms.CharField(
        max_length=6,
        min_length=6,
        label="Code from your authenticator app",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "pattern": "[0-9]*"}),
    )

    def __init__(self, *args, device: TOTPDevice | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device

    def clean_token(self):
        token = self.cleaned_data["token"].strip()
        if self.device is not None:
            allowed, why = self.device.verify_is_allowed()
            if not allowed:  # django-otp slows guessing down: each failure doubles the wait
                raise forms.ValidationError("Too many wrong codes in a row. Wait a few seconds, then try again.")
        if not token.isdigit() or self.device is None or not self.device.verify_token(token):
            raise forms.ValidationError("That code is not right, or it has expired. Try the current one.")
        return token


class ReasonForm(forms.Form):
    """A case change that needs a reason (on hold, failed): the PA Task's statusReason."""

    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 2}))
    expected_version = forms.IntegerField(widget=forms.HiddenInput)


class VersionForm(forms.Form):
    """A case change without values: only the version of the case the page was built from."""

    expected_version = forms.IntegerField(widget=forms.HiddenInput)
