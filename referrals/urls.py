from django.urls import path

from referrals import api

urlpatterns = [
    path("routing/queue", api.RoutingQueueView.as_view(), name="routing-queue"),
    path("referrals/<int:referral_id>/routing", api.RoutingExplainView.as_view(), name="routing-explain"),
    path("referrals/<int:referral_id>/route", api.ManualRouteView.as_view(), name="routing-manual"),
    path("referrals/<int:referral_id>/reroute", api.RerouteView.as_view(), name="routing-reroute"),
    path("offers/<int:offer_id>/answer", api.OfferAnswerView.as_view(), name="offer-answer"),
]
