"""Every name this edge takes from the domain (and from the FHIR bridge), in one place.

The offers, routing decisions and their services are moving from ``network`` to ``referrals``; when they land, only
the import lines here change."""

from fhir_bridge.models import StoredResource  # noqa: F401 - the referral Task's id and version
from fhir_bridge.referral_routing import referral_route_first  # noqa: F401 - reads the facts, then routes
from network.models import Offer, OfferStatus, RoutingDecision  # noqa: F401
from network.services import OfferConflict, OfferRuleError, offer_changed, offer_expire  # noqa: F401
from notifications.queue import enqueue_on_commit  # noqa: F401 - moving to config/queue.py
from referrals.models import BusinessStatus, Referral, ReferralEvent, ReferralStatus  # noqa: F401
from referrals.services import ReferralConflict, referral_changed  # noqa: F401
