"""Formatting for the console's figures: durations from seconds, shares as percentages, minutes per week."""

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """Seconds as the unit a person reads: "45 min", "5.2 h", "3.1 d"; an em dash for none."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@register.filter
def share(value) -> str:
    """A share in 0..1 as a whole percentage; an em dash for none."""
    return "—" if value is None else f"{value:.0%}"


@register.filter
def signed_minutes(value) -> str:
    """Minutes per week with their sign ("+15 min/wk"); an em dash for none."""
    return "—" if value is None else f"{value:+.0f} min/wk"
