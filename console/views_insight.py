"""The scorecards page (every console user: the figures are aggregates of 10 completed patients or more) and the
audit log (network admins only), both read-only."""

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone

from audit.models import Access
from console.access import console_view
from network.models import ConditionGroup
from referrals.scorecards import (
    GAIN_MINUTES_PER_WEEK,
    MIN_COMPLETED,
    NO_GROUP,
    PROFESSIONAL,
    PROGRAM,
    scorecards_current,
)

AUDIT_PAGE_SIZE = 50
# Scorecards a page: rendering a table row costs about 0.25 ms, and 100,000 referrals make 800+ shown scorecards.
SCORECARD_PAGE_SIZE = 50


class ScorecardFilter(forms.Form):
    condition_group = forms.ChoiceField(required=False, label="Condition group")
    kind = forms.ChoiceField(required=False, label="Of", choices=[("", "programs and professionals"),
                                                                   (PROGRAM, "programs"),
                                                                   (PROFESSIONAL, "professionals")])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        groups = [(g.slug, g.name) for g in ConditionGroup.objects.order_by("name")]
        self.fields["condition_group"].choices = [("", "every group"), *groups, (NO_GROUP or "-", "no mapped condition")]


@console_view
def scorecards(request):
    form = ScorecardFilter(request.GET or None)
    group = kind = None
    if form.is_bound and form.is_valid():
        group = form.cleaned_data["condition_group"] or None
        group = NO_GROUP if group == "-" else group
        kind = form.cleaned_data["kind"] or None
    cards = scorecards_current()
    number = request.GET.get("page", "1")
    page = Paginator(cards.shown(kind=kind, condition_group=group), SCORECARD_PAGE_SIZE).get_page(
        int(number) if number.isdigit() else 1
    )
    by_group: dict[str, list] = {}
    for card in page.object_list:  # by condition group, then kind and gain: a group may go on over pages
        by_group.setdefault(card.condition_group_name, []).append(card)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "console/scorecards/index.html", {
        "form": form, "groups": by_group, "page": page, "query": query.urlencode(), "computed_at": cards.computed_at,
        "age_minutes": int((timezone.now() - cards.computed_at).total_seconds() // 60),
        "hidden": cards.hidden_count(), "min_completed": MIN_COMPLETED, "gain": GAIN_MINUTES_PER_WEEK,
    }, status=200 if not form.is_bound or form.is_valid() else 422)


class AuditFilter(forms.Form):
    who = forms.CharField(required=False, max_length=150, label="Who (user or EHR client id)")
    what = forms.CharField(required=False, max_length=64, label="What (type, or type/id)")
    channel = forms.ChoiceField(required=False, choices=[("", "every channel"), *Access.Channel.choices])
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            self.add_error("until", "The end is before the start.")
        return cleaned


def audit_rows(*, who: str = "", what: str = "", channel: str = "", since=None, until=None):
    """The audit trail, newest first, narrowed by who (a user's name or an EHR client id, exactly), what (a type,
    or type/id), channel and the days from ``since`` to ``until`` inclusive (the site's time zone)."""
    rows = Access.objects.all()
    if who:
        rows = rows.filter(Q(agent_user=who) | Q(agent_client=who))
    if what:
        entity_type, _, entity_id = what.partition("/")
        rows = rows.filter(entity_type=entity_type, **({"entity_id": entity_id} if entity_id else {}))
    if channel:
        rows = rows.filter(channel=channel)
    if since:
        rows = rows.filter(recorded_at__date__gte=since)
    if until:
        rows = rows.filter(recorded_at__date__lte=until)
    return rows.order_by("-recorded_at", "-id")


@console_view(network_admin=True)
def audit(request):
    form = AuditFilter(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    rows = audit_rows(**{k: v for k, v in filters.items() if v})
    number = request.GET.get("page", "1")
    page = Paginator(rows, AUDIT_PAGE_SIZE).get_page(int(number) if number.isdigit() else 1)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "console/audit/index.html", {"form": form, "page": page, "query": query.urlencode()},
                  status=200 if not form.is_bound or form.is_valid() else 422)
