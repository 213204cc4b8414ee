"""The audit hook for every request that is not FHIR: the coordinators' JSON API (/api/admin/...), the Django
admin's pages of referral data, and every page of a web app that shows PHI (the therapists' portal, by URL
namespace: a page added to it later is covered without being listed).

One row per request, written as the response leaves (so a refused request is recorded too), from what Django's
URL resolver already knows: no extra reads. FHIR requests are recorded by fhir_bridge's adapter, which knows the
client and the resource.
"""

import functools

from django.apps import apps

from audit.models import Access
from audit.services import access_record, client_ip

API_PREFIX = "/api/admin/"
# The URL namespaces whose every page is audited, whatever it shows: a web app of PHI. Its sign-in and
# password-reset pages too (who tried to get in is part of the trail).
PAGE_NAMESPACES = {"portal": Access.Channel.PORTAL}
# The apps whose models hold referral data (PHI): every one of their models, a case record added later too, is
# audited in the admin.
PHI_APPS = ("referrals", "fhir_bridge", "notifications")
_ADMIN_VIEWS = {"changelist": "search", "add": "create", "change": "read", "history": "history",
                "delete": "delete"}
# The coordinators' API, by URL name: what each does, and which kind of thing its URL names.
_API_INTERACTIONS = {"routing-queue": "search", "routing-explain": "read", "routing-manual": "route",
                     "routing-reroute": "reroute", "offer-answer": "answer"}
# What a URL's id names, in the API and on the pages.
_ENTITIES = {"referral_id": "Referral", "offer_id": "Offer"}


@functools.cache
def admin_phi_models() -> frozenset[str]:
    """The admin's models of PHI as "<app>_<model>", as the admin's URL names spell them (every model of
    PHI_APPS). Computed once, when the first admin page is asked for (the app registry is ready by then)."""
    return frozenset(f"{model._meta.app_label}_{model._meta.model_name}"
                     for label in PHI_APPS for model in apps.get_app_config(label).get_models())


def _user(request) -> str:
    user = getattr(request, "user", None)
    return user.get_username() if user is not None and user.is_authenticated else ""


def _entity(match) -> tuple[str, str]:
    for kwarg, kind in _ENTITIES.items():
        if match and kwarg in match.kwargs:
            return kind, str(match.kwargs[kwarg])
    return "", ""


class AuditMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        path = request.path
        if path.startswith(API_PREFIX):
            self._api(request, response)
        elif path.startswith("/admin/"):
            self._admin(request, response)
        elif request.resolver_match is not None:
            namespace = request.resolver_match.namespaces[:1]
            if namespace and namespace[0] in PAGE_NAMESPACES:
                self._page(request, response, PAGE_NAMESPACES[namespace[0]])
        return response

    def _api(self, request, response) -> None:
        match = request.resolver_match
        name = match.url_name if match else ""
        entity_type, entity_id = _entity(match)
        access_record(
            channel=Access.Channel.API, interaction=_API_INTERACTIONS.get(name, request.method.lower()),
            method=request.method, path=request.path, status=response.status_code,
            source_ip=client_ip(request.META), agent_user=_user(request), entity_type=entity_type,
            entity_id=entity_id, query=request.META.get("QUERY_STRING", ""),
        )

    def _admin(self, request, response) -> None:
        match = request.resolver_match
        if match is None or not match.url_name:
            return
        model, _, view = match.url_name.rpartition("_")
        if model not in admin_phi_models() or view not in _ADMIN_VIEWS:
            return
        interaction = _ADMIN_VIEWS[view]
        if view == "change" and request.method == "POST":
            interaction = "update"
        access_record(
            channel=Access.Channel.ADMIN, interaction=interaction, method=request.method, path=request.path,
            status=response.status_code, source_ip=client_ip(request.META), agent_user=_user(request),
            entity_type=model.split("_")[-1], entity_id=str(match.kwargs.get("object_id", "")),
            query=request.META.get("QUERY_STRING", ""),
        )

    def _page(self, request, response, channel: str) -> None:
        """A web app's page: a GET reads (or lists, without an id in its URL); a POST is its action (the URL's
        ``action`` slug, else the URL's name: offer_accept, login, ...)."""
        match = request.resolver_match
        entity_type, entity_id = _entity(match)
        if request.method in ("GET", "HEAD"):
            interaction = "read" if entity_id else "search"
        else:
            interaction = match.kwargs.get("action") or match.url_name or request.method.lower()
        access_record(
            channel=channel, interaction=str(interaction), method=request.method, path=request.path,
            status=response.status_code, source_ip=client_ip(request.META), agent_user=_user(request),
            entity_type=entity_type, entity_id=entity_id, query=request.META.get("QUERY_STRING", ""),
        )
