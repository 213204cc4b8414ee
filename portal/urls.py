from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from portal import views

app_name = "portal"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:offers"), name="home"),
    path("login", views.LoginView.as_view(), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("verify", views.verify, name="verify"),
    path("password-reset", views.password_reset, name="password_reset"),
    path("password-reset/sent", views.password_reset_done, name="password_reset_done"),
    path("password-reset/<uidb64>/<token>", views.password_reset_confirm, name="password_reset_confirm"),
    path("password-reset/done", views.password_reset_complete, name="password_reset_complete"),
    path("account", views.account, name="account"),
    path("offers", views.offers, name="offers"),
    path("offers/<int:offer_id>/accept", views.offer_accept_view, name="offer_accept"),
    path("offers/<int:offer_id>/decline", views.offer_decline_view, name="offer_decline"),
    path("cases", views.cases, name="cases"),
    path("cases/<int:referral_id>", views.case, name="case"),
    path("cases/<int:referral_id>/reports/<int:report_id>", views.case_report, name="case_report"),
    path("cases/<int:referral_id>/reports/<int:report_id>/pdf", views.case_report_pdf, name="case_report_pdf"),
    path("cases/<int:referral_id>/<slug:action>", views.case_action, name="case_action"),
]
