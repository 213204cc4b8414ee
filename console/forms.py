"""The console's forms. The funnel's filters travel in the URL (GET), so that a view can be shared."""

import datetime as dt

from django import forms
from django.utils import timezone

from network.models import ConditionGroup, Organization, Professional
from referrals.funnel import FunnelFilters
from referrals.models import Clinic

DEFAULT_WEEKS = 26  # the overview's default window: the last half year


class DateInput(forms.DateInput):
    input_type = "date"


class ProfessionalChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.family_name}, {obj.given_name}" if obj.given_name else obj.family_name


class FunnelFilterForm(forms.Form):
    """The overview's (and the export's) filters. A value that does not parse is shown with its error in place and
    left out; the others still apply."""

    received_from = forms.DateField(required=False, widget=DateInput, label="Received from")
    received_to = forms.DateField(required=False, widget=DateInput, label="to")
    clinic = forms.ModelChoiceField(queryset=Clinic.objects.order_by("name"), required=False, empty_label="All clinics")
    condition_group = forms.ModelChoiceField(
        queryset=ConditionGroup.objects.order_by("name"), to_field_name="slug", required=False,
        empty_label="All condition groups",
    )
    program = forms.ModelChoiceField(
        queryset=Organization.objects.order_by("name"), required=False, empty_label="All programs",
        help_text="The program or practice that accepted the case.",
    )
    professional = ProfessionalChoiceField(
        queryset=Professional.objects.order_by("family_name", "given_name"), required=False,
        empty_label="All professionals",
    )

    def __init__(self, data=None, *, network_admin: bool):
        super().__init__(data)
        if not network_admin:  # a clinic admin sees one clinic: the choice would only leak the others' names
            del self.fields["clinic"]
        self.default_from = timezone.localdate() - dt.timedelta(weeks=DEFAULT_WEEKS)
        self.fields["received_from"].widget.attrs["placeholder"] = self.default_from.isoformat()

    def clean(self):
        data = super().clean()
        start, end = data.get("received_from"), data.get("received_to")
        if start and end and start > end:
            self.add_error("received_to", "The end of the range is before its start.")
        return data

    def filters(self) -> FunnelFilters:
        """The filters to apply: the valid values given, and the last DEFAULT_WEEKS weeks when no start is given."""
        data = {}
        if self.is_bound:
            self.is_valid()  # cleaned_data keeps the fields that parsed
            data = self.cleaned_data
        start = data.get("received_from") or self.default_from
        clinic, group = data.get("clinic"), data.get("condition_group")
        program, professional = data.get("program"), data.get("professional")
        return FunnelFilters(
            received_from=start,
            received_to=data.get("received_to"),
            clinic_id=clinic.pk if clinic else None,
            condition_group=group.slug if group else "",
            organization_id=program.pk if program else None,
            professional_id=professional.pk if professional else None,
        )


class ExportForm(forms.Form):
    """The export's one choice: whether the patient's name, birth date and postal code come with it."""

    phi = forms.BooleanField(
        required=False, label="Include the patient's name, birth date and postal code (PHI; the export is audited)"
    )
