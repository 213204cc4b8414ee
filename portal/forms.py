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


# --- Case records (the records engineer's referrals/records.py and referrals/cases.py) ------------------------

ATTENDANCE = [("attended", "Attended"), ("no-show", "No-show"), ("cancelled", "Cancelled")]
COMPONENTS = ["aerobic", "resistance", "flexibility", "balance"]


class LocalMoment(forms.DateTimeField):
    """A date and time as a phone's picker gives it (no zone), read in the site's time zone."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("input_formats", ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"])
        super().__init__(*args, **kwargs)


class CaseForm(forms.Form):
    """Every case form carries the case's version it was built from; the service refuses a stale one."""

    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    def __init__(self, *args, tz=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tz = tz

    def _aware(self, moment):
        import datetime as dt

        if moment is None or self.tz is None:
            return moment
        return moment.replace(tzinfo=None).replace(tzinfo=self.tz) if isinstance(moment, dt.datetime) else moment

    def values(self) -> dict:
        """The cleaned values as the service takes them (moments in the site's time zone)."""
        return {k: self._aware(v) for k, v in self.cleaned_data.items()}


class VersionForm(CaseForm):
    """A case change without values: only the version of the case the page was built from."""


class ReasonForm(CaseForm):
    """A case change that needs a reason (on hold, failed): the PA Task's statusReason."""

    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 2}))


class FirstContactForm(CaseForm):
    contacted_at = LocalMoment(label="Contacted at")


class ScheduleForm(CaseForm):
    starts_at = LocalMoment(label="Session at")


class CheckinForm(CaseForm):
    """PAVS as it asks: days a week of moderate or greater activity, times minutes a day; strength days a week."""

    date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Reported on")
    days_per_week = forms.IntegerField(min_value=0, max_value=7, label="Days a week")
    minutes_per_day = forms.IntegerField(min_value=0, max_value=1440, label="Minutes a day")
    strength_days_per_week = forms.IntegerField(min_value=0, max_value=7, required=False, label="Strength days a week")


class SessionForm(CaseForm):
    """One form records a session: how it went and, when attended, the work done. Prefilled from the program,
    so that an ordinary session is: open the case, tap Attended (the default), tap Record."""

    attendance = forms.ChoiceField(choices=ATTENDANCE, widget=forms.RadioSelect, initial="attended")
    starts_at = LocalMoment(label="When")
    duration_minutes = forms.IntegerField(min_value=1, max_value=600, required=False, label="Minutes")
    hr_average = forms.IntegerField(min_value=20, max_value=250, required=False, label="Average heart rate")
    hr_peak = forms.IntegerField(min_value=20, max_value=250, required=False, label="Peak heart rate")
    rpe = forms.IntegerField(min_value=0, max_value=10, required=False, label="RPE (0-10)")
    notes = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for kind in COMPONENTS:
            self.fields[f"{kind}_minutes"] = forms.IntegerField(min_value=0, max_value=600, required=False, label="Minutes")
            self.fields[f"{kind}_sets"] = forms.IntegerField(min_value=0, max_value=100, required=False, label="Sets")
            self.fields[f"{kind}_reps"] = forms.IntegerField(min_value=0, max_value=1000, required=False, label="Reps")
            self.fields[f"{kind}_load_kg"] = forms.FloatField(min_value=0, max_value=1000, required=False, label="Load kg")

    def clean(self):
        data = super().clean()
        if data.get("attendance") == "attended" and data.get("duration_minutes") is None:
            self.add_error("duration_minutes", "How many minutes did the session last?")
        return data

    def component_rows(self):
        """The per-component fields, grouped for the template."""
        return [
            (kind, [self[f"{kind}_{part}"] for part in ("minutes", "sets", "reps", "load_kg")]) for kind in COMPONENTS
        ]

    def values(self) -> dict:
        from referrals.records import SessionWork

        data = super().values()
        work = []
        for kind in COMPONENTS:
            parts = {part: data.pop(f"{kind}_{part}", None) for part in ("minutes", "sets", "reps", "load_kg")}
            if any(v is not None for v in parts.values()):
                work.append(SessionWork(kind=kind, **parts))
        if data["attendance"] != "attended":  # a missed session carries no work: the service refuses any
            for name in ("duration_minutes", "hr_average", "hr_peak", "rpe"):
                data[name] = None
            work = []
        data["components"] = work
        return data


class AdverseEventForm(CaseForm):
    """A red flag or adverse event: the physician is alerted at once (the follow-up engine reads its event)."""

    KINDS = [("chest-pain", "Chest pain"), ("syncope", "Syncope (fainting)"), ("fall", "A fall"),
             ("abnormal-bp", "Abnormal blood pressure"), ("abnormal-hr", "Abnormal heart rate"), ("other", "Other")]
    occurred_at = LocalMoment(label="When")
    kind = forms.ChoiceField(choices=KINDS, label="What happened")
    severity = forms.ChoiceField(choices=[("mild", "Mild"), ("moderate", "Moderate"), ("severe", "Severe")])
    serious = forms.BooleanField(required=False, label="Serious (hospital, life-threatening, disabling)")
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    action_taken = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                                   label="What was done")
    put_on_hold = forms.BooleanField(required=False, label="Put the case on hold")


class AssessmentForm(CaseForm):
    """One visit's assessment of one kind (static, dynamic or PROMs): a field per measure of that kind, in its
    UCUM unit; the ones left empty were not measured."""

    kind = ""  # set by the subclasses below

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from referrals.models import Measure
        from referrals.records import ASSESSMENT_MEASURES, MEASURE_UNITS

        self.fields["assessed_at"] = LocalMoment(label="When")
        for code in [m for m in Measure if m in ASSESSMENT_MEASURES[self.kind]]:
            self.fields[f"m_{code}"] = forms.FloatField(required=False, label=f"{code.label} ({MEASURE_UNITS[code]})")
        self.fields["notes"] = forms.CharField(required=False, max_length=2000,
                                               widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self):
        data = super().clean()
        if not any(data.get(name) is not None for name in self.fields if name.startswith("m_")):
            raise forms.ValidationError("Give at least one measure.")
        return data

    def values(self) -> dict:
        from referrals.records import MeasureValue

        data = super().values()
        measures = [MeasureValue(code=name[2:], value=data.pop(name)) for name in list(data)
                    if name.startswith("m_") and data[name] is not None]
        for name in [n for n in data if n.startswith("m_")]:
            data.pop(name)
        return {**data, "kind": self.kind, "measurements": measures}


class StaticAssessmentForm(AssessmentForm):
    kind = "static"


class DynamicAssessmentForm(AssessmentForm):
    kind = "dynamic"


class PromAssessmentForm(AssessmentForm):
    kind = "prom"


class ProgramForm(CaseForm):
    """The exercise program as FITT per component: frequency a week, intensity (a heart-rate range, RPE or a
    percentage of 1RM, low to high), time in minutes, type. A component left without a frequency is not in the
    program. Saving writes a new version of the program."""

    INTENSITY = [("", "—"), ("hr-range", "Heart rate (beats/min)"), ("rpe", "RPE (0-10)"), ("pct-1rm", "% of 1RM")]
    starts_on = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Starts on")
    ends_on = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), required=False, label="Ends on")
    notes = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                            label="Progression notes")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for kind in COMPONENTS:
            self.fields[f"{kind}_frequency"] = forms.IntegerField(min_value=1, max_value=14, required=False, label="Times a week")
            self.fields[f"{kind}_minutes"] = forms.IntegerField(min_value=1, max_value=600, required=False, label="Minutes")
            self.fields[f"{kind}_intensity_kind"] = forms.ChoiceField(choices=self.INTENSITY, required=False, label="Intensity")
            self.fields[f"{kind}_intensity_low"] = forms.FloatField(required=False, label="From")
            self.fields[f"{kind}_intensity_high"] = forms.FloatField(required=False, label="To")
            self.fields[f"{kind}_type"] = forms.CharField(required=False, max_length=200, label="Type")

    def component_rows(self):
        parts = ("frequency", "minutes", "intensity_kind", "intensity_low", "intensity_high", "type")
        return [(kind, [self[f"{kind}_{p}"] for p in parts]) for kind in COMPONENTS]

    def clean(self):
        data = super().clean()
        chosen = [k for k in COMPONENTS if data.get(f"{k}_frequency") is not None]
        if not chosen:
            raise forms.ValidationError("Give at least one component a frequency.")
        for kind in chosen:
            if data.get(f"{kind}_minutes") is None:
                self.add_error(f"{kind}_minutes", "How many minutes each time?")
        return data

    def values(self) -> dict:
        from referrals.records import ComponentPlan

        data = super().values()
        components = []
        for kind in COMPONENTS:
            parts = {p: data.pop(f"{kind}_{p}", None)
                     for p in ("frequency", "minutes", "intensity_kind", "intensity_low", "intensity_high", "type")}
            if parts["frequency"] is None:
                continue
            components.append(ComponentPlan(
                kind=kind, frequency_per_week=parts["frequency"], minutes=parts["minutes"],
                intensity_kind=parts["intensity_kind"] or "", intensity_low=parts["intensity_low"],
                intensity_high=parts["intensity_high"], type=parts["type"] or "",
            ))
        return {**data, "components": components}


class ReportForm(forms.Form):
    """The four answers of a report to the physician, as the therapist edits them before signing; and the
    report's version the page was built from (the service refuses a stale one)."""

    expected_version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    answer_goals = forms.CharField(label="1. Were the referral's goals addressed?", max_length=2000,
                                   widget=forms.Textarea(attrs={"rows": 3}))
    answer_barriers = forms.CharField(label="2. What issues and barriers remain?", max_length=2000,
                                      widget=forms.Textarea(attrs={"rows": 3}))
    answer_participation = forms.CharField(label="3. Participation", max_length=2000,
                                           widget=forms.Textarea(attrs={"rows": 3}))
    answer_plan = forms.CharField(label="4. Plan, and what the physician should do next", max_length=2000,
                                  widget=forms.Textarea(attrs={"rows": 3}))

    def answers(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if k.startswith("answer_")}
