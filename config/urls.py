from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from config.openapi import openapi_view
from fhir_bridge.drf import FhirView
from fhir_bridge.hub_client import jwks_view
from fhir_bridge.smart_views import token_view
from fhir_bridge.token_limits import token_rate_limited


def landing(request):
    """The hub's front page: where each kind of visitor goes (the therapists' app, the console, the FHIR
    base)."""
    base = request.build_absolute_uri("/").rstrip("/")
    context = {"fhir_base": f"{base}/fhir", "token_url": f"{base}/auth/token"}
    return render(request, "portal/landing.html", context)


def healthz(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt  # it changes nothing; without this a POST gets the CSRF check's HTML 403 instead
def api_not_found(request, rest: str = ""):
    # The coordinators' API answers JSON, an id that is not a number too (Django's own 404 is an HTML page).
    return JsonResponse({"detail": "no such coordinators' API URL"}, status=404)


urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("openapi.json", openapi_view, name="openapi"),
    path("auth/token", token_rate_limited(token_view), name="smart-token"),
    path(".well-known/jwks.json", jwks_view, name="hub-jwks"),  # the hub's key as a SMART client of EHRs
    path("api/admin/", include("referrals.urls")),
    # [\s\S], not ".": a path with a newline (%0A) is still one of these, not Django's HTML 404 page.
    re_path(r"^api/(?P<rest>[\s\S]*)$", api_not_found),
    path("portal/", include("portal.urls")),
    path("console/", include("console.urls")),
    re_path(r"^fhir/?$", FhirView.as_view(), name="fhir-base"),
    re_path(r"^fhir/(?P<path>[\s\S]+)$", FhirView.as_view(), name="fhir"),
]
