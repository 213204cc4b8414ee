"""A limit on the SMART token endpoint (``POST /auth/token``): requests per client and per IP address in a
fixed window, counted in Django's cache (Redis when the broker is Redis, so every web process counts together).

Over either limit the endpoint answers 429 with ``Retry-After`` before the assertion is even looked at, so that
guessing at keys or replaying assertions gets nowhere fast, and a flood costs one cache increment per request.
The token endpoint's own error codes are smart_views.py's; this only wraps the view.

Figures (README): ``HUB_TOKEN_LIMIT_PER_CLIENT`` (30) and ``HUB_TOKEN_LIMIT_PER_IP`` (120) per
``HUB_TOKEN_LIMIT_WINDOW_SECONDS`` (60). A client's token lives five minutes, so a well-behaved EHR asks a few
times an hour.
"""

import functools
import time

import jwt
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse


def _client_id(request: HttpRequest) -> str:
    """Who the request says it is: client_id, else the assertion's issuer (unverified: used to count, never to
    trust)."""
    if request.content_type != "application/x-www-form-urlencoded":
        return ""
    try:
        client_id = request.POST.get("client_id")
    except (TooManyFieldsSent, RequestDataTooBig):  # the token view refuses the body; counted by address alone
        return ""
    if client_id:
        return client_id[:64]
    try:
        claims = jwt.decode(request.POST.get("client_assertion", ""), options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer[:64] if isinstance(issuer, str) else ""


def _over(key: str, limit: int, window: int) -> bool:
    """Count one request against ``key`` in the current window; True when that makes it over ``limit``."""
    bucket = f"token-limit:{key}:{int(time.time()) // window}"
    cache.add(bucket, 0, timeout=window * 2)
    try:
        return cache.incr(bucket) > limit
    except ValueError:  # expired between add and incr
        cache.set(bucket, 1, timeout=window * 2)
        return False


def token_rate_limited(view):
    @functools.wraps(view)
    def limited(request: HttpRequest, *args, **kwargs):
        window = settings.HUB_TOKEN_LIMIT_WINDOW_SECONDS
        ip = request.META.get("REMOTE_ADDR", "")
        client_id = _client_id(request) if request.method == "POST" else ""
        over_ip = _over(f"ip:{ip}", settings.HUB_TOKEN_LIMIT_PER_IP, window)
        over_client = bool(client_id) and _over(f"client:{client_id}", settings.HUB_TOKEN_LIMIT_PER_CLIENT, window)
        if over_ip or over_client:
            retry = window - int(time.time()) % window
            response = JsonResponse(
                {"error": "invalid_request",
                 "error_description": f"too many token requests from this {'client' if over_client else 'address'}; "
                                      f"try again in {retry} s"},
                status=429,
            )
            response["Retry-After"] = str(retry)
            response["Cache-Control"] = "no-store"
            return response
        return view(request, *args, **kwargs)

    return limited
