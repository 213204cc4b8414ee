from django.urls import path

from console import views

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("login", views.login, name="login"),
    path("referrals", views.referral_list, name="referrals"),
    path("referrals.csv", views.referral_export, name="referrals_export"),
    path("referrals/<int:referral_id>", views.referral_detail, name="referral"),
    path("referrals/<int:referral_id>/reports/<uuid:report_id>.pdf", views.report_pdf, name="report_pdf"),
]
