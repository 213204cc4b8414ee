"""The admin console's pages. Each one is wrapped in ``console_view`` (console/access.py) and reads only through
``referrals_visible``: what a clinic admin may not see is a 404, never a 403 that confirms it exists."""

from django.shortcuts import render
from django.urls import reverse_lazy

from console.access import console_view
from portal.views import LoginView

# The portal's sign-in (same form, same lockout, same second factor), landing on the console.
login = LoginView.as_view(next_page=reverse_lazy("console:overview"))


@console_view
def overview(request):
    return render(request, "console/overview.html", {})
