from django.http import HttpResponse
from django.urls import path

from bench.floor_views import floor

urlpatterns = [
    path("floor", floor),
    path("healthz", lambda request: HttpResponse("ok")),  # readiness probe of bench.intake
]
