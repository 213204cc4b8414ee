"""The audit hook for the coordinators' JSON API (/api/admin/...) and the Django admin's pages of referral data.

One row per request, written as the response leaves (so a refused request is recorded too), from what Django's
URL resolver already knows: no extra reads. FHIR requests are recorded by fhir_bridge's adapter, which knows the
client and the resource.
"""

from audit.models import Access
from audit.services import access_record, client_ip

API_PREFIX = "/api/admin/"
# The admin's models that hold referral data (PHI), as "<app>_<model>" in the admin's URL names.
ADMIN_PHI_MODELS = frozenset({
    "referrals_referral", "referrals_referralnote", "referrals_clinicalfacts", "referrals_referralevent",
    "fhir_bridge_storedresource", "fhir_bridge_inboundmessage", "fhir_bridge_resourceversion",
    "referrals_offer", "referrals_routingdecision",
})
_ADMIN_VIEWS = {"changelist": "search", "add": "create", "change": "read", "history": "history",
                "delete": "delete"}
# The coordinators' API, by URL name: what each does, and which kind of thing its URL names.
_API_INTERACTIONS = {"routing-queue": "search", "routing-explain": "read", "routing-manual": "route",
                     "routing-reroute": "reroute", "offer-answer": "answer"}
_API_ENTITIES = {"referral_id": "Referral", "offer_id": "Offer"}


def _user(request) -> str:
    user = getattr(request, "user", None)
    return user.get_username() if user is not None and user.is_authenticated else ""


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
        return response

    def _api(self, request, response) -> None:
        match = request.resolver_match
        name = match.url_name if match else ""
        entity_type, entity_id = "", ""
        for kwarg, kind in _API_ENTITIES.items():
            if match and kwarg in match.kwargs:
                entity_type, entity_id = kind, str(match.kwargs[kwarg])
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
        if model not in ADMIN_PHI_MODELS or view not in _ADMIN_VIEWS:
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
