"""A Content-Security-Policy on every response the hub serves (Django 5.2 has none built in).

No inline script anywhere (STYLE 22): script and style come from the hub's own static files only, so an
injected ``<script>`` or ``onclick`` never runs. The Django admin holds to it as shipped (its JavaScript is all
in static files; its data travels in ``json_script`` blocks, which are not executed). FHIR and JSON answers carry
the header too: a browser that renders one as a page runs nothing.
"""

from django.conf import settings

POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # the admin's icons include data: URLs in its CSS
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
])


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "HUB_CONTENT_SECURITY_POLICY", POLICY)

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
