"""Template helpers of the console's queues: an item's key, and a dict read by a computed key."""

from django import template

register = template.Library()


@register.simple_tag
def item_key(queue: str, pk) -> str:
    """``<queue>-<pk>``: the item's HTML id, and the key of its error and form in the page's context."""
    return f"{queue}-{pk}"


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)


@register.filter
def percent(share) -> str:
    """A share in [0, 1] as an SVG coordinate on a 0-100 axis ("37.5"); "0" for None."""
    return f"{max(0.0, min(1.0, float(share or 0))) * 100:.1f}"
