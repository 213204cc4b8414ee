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
