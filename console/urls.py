from django.urls import path

from console import views, views_insight, views_network, views_queues

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("login", views.login, name="login"),
    path("referrals", views.referral_list, name="referrals"),
    path("referrals.csv", views.referral_export, name="referrals_export"),
    path("referrals/<int:referral_id>", views.referral_detail, name="referral"),
    path("referrals/<int:referral_id>/reports/<uuid:report_id>.pdf", views.report_pdf, name="report_pdf"),
    # Work queues (console/views_queues.py): the page, then one POST per one-click action.
    path("queues", views_queues.queues, name="queues"),
    path("queues/referrals/<int:referral_id>/route", views_queues.referral_route_by_hand, name="referral-route"),
    path("queues/referrals/<int:referral_id>/reroute", views_queues.referral_reroute, name="referral-reroute"),
    path("queues/offers/<int:offer_id>/accept", views_queues.offer_accept_by_phone, name="offer-accept"),
    path("queues/reports/<int:report_id>/send", views_queues.report_send_now, name="report-send"),
    path("queues/adverse-events/<int:event_id>/acknowledge", views_queues.adverse_event_ack, name="adverse-event-ack"),
    path("queues/deliveries/<int:delivery_id>/replay", views_queues.delivery_replay, name="delivery-replay"),
    # The network (console/views_network.py), network admins only.
    path("network", views_network.network, name="network"),
    path("network/import", views_network.network_import_view, name="network-import"),
    path("network/roles/<int:role_id>/pause", views_network.role_pause_view, name="role-pause"),
    path("network/roles/<int:role_id>/resume", views_network.role_resume_view, name="role-resume"),
    path("network/roles/<int:role_id>/capacity", views_network.role_capacity_view, name="role-capacity"),
    # Scorecards (every console user) and the audit log (network admins), console/views_insight.py.
    path("scorecards", views_insight.scorecards, name="scorecards"),
    path("audit", views_insight.audit, name="audit"),
]
