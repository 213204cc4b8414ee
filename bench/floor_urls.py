from django.urls import path

from bench.floor_views import floor

urlpatterns = [path("floor", floor)]
