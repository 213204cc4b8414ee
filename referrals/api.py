"""The coordinators' API: the manual-routing queue, why a referral went where it went, routing by hand, and
recording a professional's answer that came by phone. Staff only: the Django admin's session (writes send its
csrftoken as X-CSRFToken), or for a script a staff user's token (``Authorization: Token <key>``, made with
``manage.py drf_create_token <username>``; DRF's TokenAuthentication, no CSRF).

A request without credentials, or with a token that is not one, is 401 with ``WWW-Authenticate: Token`` (RFC 9110
15.5.2: it names a scheme the client can answer with; a session has none, so the token's is named); a signed-in
user who is not staff is 403."""

from django.core.exceptions import SuspiciousOperation
from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from network.models import ProfessionalRole
from referrals.models import BusinessStatus, Offer, Referral
from referrals.errors import DomainError, ErrorCode
from referrals.offers import (
    RoutingOutcome,
    offer_accept,
    offer_decline,
    referral_route,
    referral_route_manually,
)
from referrals.routing import referral_patient_facts
from referrals.selectors import referrals_with_routing, routing_explain


def problem(status_code: int, detail: str, **extra) -> Response:
    return Response({"detail": detail, **extra}, status=status_code)


class StaffView(APIView):
    # DRF answers "not authenticated" with the first class's WWW-Authenticate: the token's (401), where the
    # session's has none (403, which would tell a client without credentials that credentials cannot help).
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]

    def get_exception_handler(self):
        return drf_exception_handler  # plain JSON errors here; the FHIR handler is for /fhir

    def handle_exception(self, exc):
        if isinstance(exc, DomainError):
            return domain_problem(exc)
        if isinstance(exc, SuspiciousOperation):  # a body Django will not read: too many fields, too large
            return problem(status.HTTP_400_BAD_REQUEST, f"the request body cannot be read: {exc}")
        return super().handle_exception(exc)


# The domain's refusals are answers, not crashes: 409 when someone else won a race or the form was stale, 404 for
# what is not there, 422 for a rule (the one place this API maps DomainError). The body carries the stable code and
# the field, so a script can branch on them.
_DOMAIN_STATUS = {ErrorCode.CONFLICT: 409, ErrorCode.STALE: 409, ErrorCode.NOT_FOUND: 404}


def domain_problem(exc: DomainError) -> Response:
    extra = {"code": exc.code.value, **({"field": exc.field} if exc.field else {}), **exc.detail}
    return problem(_DOMAIN_STATUS.get(exc.code, 422), str(exc), **extra)


def _referral_summary(referral: Referral) -> dict:
    """``referral`` as read by selectors.referrals_with_routing."""
    return {
        "id": referral.pk,
        "clinic": referral.clinic.name,
        "patient": referral.patient_name,
        "status": referral.status,
        "business_status": referral.business_status,
        "received": referral.created_at,
        "gist": referral.routing_gist or "",
        "flags": referral.routing_flags or [],
    }


def _routed(outcome: RoutingOutcome) -> Response:
    offer = outcome.offer.pk if outcome.offer else None
    return Response(
        {"gist": outcome.gist, "offer": offer, "decision": outcome.decision.pk}, status=status.HTTP_201_CREATED
    )


class RoutingQueueView(StaffView):
    """Referrals that wait for a coordinator: nobody was left, or the address could not be placed."""

    def get(self, request):
        waiting = referrals_with_routing().filter(
            business_status=BusinessStatus.AWAITING_MANUAL_ROUTING
        ).order_by("created_at")
        return Response({"count": waiting.count(), "referrals": [_referral_summary(r) for r in waiting[:200]]})


class RoutingExplainView(StaffView):
    def get(self, request, referral_id: int):
        referral = get_object_or_404(referrals_with_routing(), pk=referral_id)
        return Response({"referral": _referral_summary(referral), "decisions": routing_explain(referral_id=referral.pk)})


class ManualRouteSerializer(serializers.Serializer):
    role = serializers.SlugField(help_text="The PractitionerRole id to offer the referral to.")
    override_reason = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")


class ManualRouteView(StaffView):
    def post(self, request, referral_id: int):
        referral = get_object_or_404(Referral, pk=referral_id)
        body = ManualRouteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        role = ProfessionalRole.objects.filter(fhir_id=body.validated_data["role"]).first()
        if role is None:
            return problem(400, "no such role", field="role")
        outcome = referral_route_manually(
            referral=referral,
            role=role,
            admin=request.user,
            override_reason=body.validated_data["override_reason"],
        )
        return _routed(outcome)


class RerouteView(StaffView):
    """Ask the engine again (after the network changed, say)."""

    def post(self, request, referral_id: int):
        referral = get_object_or_404(Referral, pk=referral_id)
        outcome = referral_route(
            referral=referral,
            patient=referral_patient_facts(referral=referral),
            actor=f"user:{request.user.get_username()}",
        )
        return _routed(outcome)


class OfferAnswerSerializer(serializers.Serializer):
    answer = serializers.ChoiceField(choices=["accept", "decline"])
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    def validate(self, data):
        if data["answer"] == "decline" and not data["reason"].strip():
            raise serializers.ValidationError({"reason": "a decline needs a reason"})
        return data


class OfferAnswerView(StaffView):
    """A coordinator records the professional's answer (given by phone or e-mail)."""

    def post(self, request, offer_id: int):
        offer = get_object_or_404(Offer.objects.select_related("role"), pk=offer_id)
        body = OfferAnswerSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        actor = f"user:{request.user.get_username()} for practitioner-role:{offer.role.fhir_id}"
        if body.validated_data["answer"] == "accept":
            offer = offer_accept(offer=offer, actor=actor)
            return Response({"offer": offer.pk, "status": offer.status})
        outcome = offer_decline(offer=offer, reason=body.validated_data["reason"], actor=actor)
        return Response({"offer": offer.pk, "status": "rejected", "next": {
            "gist": outcome.gist, "offer": outcome.offer.pk if outcome.offer else None,
        } if outcome else None})
