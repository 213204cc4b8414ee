import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone


@pytest.mark.django_db
def test_the_models_and_migrations_agree():
    # Fails when a model change has no migration, or when a migration would be made anew on every run.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


BEFORE_THE_MOVE = [("network", "0004_role_pool_indexes"), ("referrals", "0002_referral_business_status_text")]


@pytest.fixture
def before_the_move(transactional_db):
    """The database as it was before the move; migrated to the latest again afterwards, whatever the test did."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_THE_MOVE)
    yield executor
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


def test_offers_and_decisions_keep_their_rows_when_they_move_to_referrals(before_the_move):
    # Offers, their events and routing decisions moved from network to referrals (referrals/0003-0004,
    # network/0005): a database migrated before the move keeps every row, its ids and its links.
    executor = before_the_move
    old = executor.loader.project_state(BEFORE_THE_MOVE).apps
    referral = old.get_model("referrals", "Referral").objects.create(
        clinic=old.get_model("referrals", "Clinic").objects.create(name="Good Health", slug="good-health"),
        owner_reference="Organization/hub",
    )
    organization = old.get_model("network", "Organization").objects.create(fhir_id="org", name="Fit 4 Life")
    role = old.get_model("network", "ProfessionalRole").objects.create(
        fhir_id="role",
        organization=organization,
        professional=old.get_model("network", "Professional").objects.create(fhir_id="pro", family_name="Lopez"),
    )
    decision = old.get_model("network", "RoutingDecision").objects.create(
        referral=referral, trigger="initial", outcome="offered", chosen_role=role, gist="Offered to Lopez"
    )
    now = timezone.now()
    offer = old.get_model("network", "Offer").objects.create(
        referral=referral, role=role, organization=organization, decision=decision, created_at=now, deadline=now
    )
    old.get_model("network", "OfferEvent").objects.create(offer=offer, to_status="requested", actor="hub", at=now)
    # As before the move: the offer's content type is network's (the table's shape has not changed since).
    ContentType.objects.filter(app_label="referrals", model="offer").delete()
    offer_type = ContentType.objects.get_or_create(app_label="network", model="offer")[0]
    ContentType.objects.clear_cache()

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from referrals.models import Offer, OfferEvent, RoutingDecision

    moved = Offer.objects.get()
    assert (moved.pk, moved.referral_id, moved.role_id, moved.decision_id) == (
        offer.pk,
        referral.pk,
        role.pk,
        decision.pk,
    )
    assert RoutingDecision.objects.get().gist == "Offered to Lopez"
    assert OfferEvent.objects.get().offer_id == offer.pk
    # Its content type (and so the admin permissions given on it) moved with it.
    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(Offer).pk == offer_type.pk
    tables = connection.introspection.table_names()
    assert {"referrals_offer", "referrals_offerevent", "referrals_routingdecision"} <= set(tables)
    assert not {"network_offer", "network_offerevent", "network_routingdecision"} & set(tables)
    # The live-offer guard is still in the database under its own name: a second live offer is refused.
    constraints = connection.introspection.get_constraints(connection.cursor(), "referrals_offer")
    assert "offer_one_live_per_referral" in constraints
    with pytest.raises(IntegrityError), transaction.atomic():
        Offer.objects.create(
            referral_id=referral.pk,
            role_id=role.pk,
            organization_id=organization.pk,
            decision_id=decision.pk,
            created_at=now,
            deadline=now,
        )


BEFORE_SUBSCRIPTION_END = [("notifications", "0005_delivery_pending")]


@pytest.fixture
def before_subscription_end(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_SUBSCRIPTION_END)
    yield executor
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_a_subscriptions_end_is_filled_from_what_it_posted_and_a_past_one_is_off(before_subscription_end):
    old = before_subscription_end.loader.project_state(BEFORE_SUBSCRIPTION_END).apps
    clinic = old.get_model("referrals", "Clinic").objects.create(name="Good Health", slug="good-health")
    Subscription = old.get_model("notifications", "Subscription")

    def made(fhir_id: str, end=None):
        resource = {"resourceType": "Subscription", **({"end": end} if end else {})}
        return Subscription.objects.create(clinic=clinic, fhir_id=fhir_id, resource=resource, channel="rest-hook",
                                           endpoint="https://ehr.example.org/hook", status="active").pk

    past, later, none = made("past", "2024-01-01T00:00:00Z"), made("later", "2099-01-01T00:00:00Z"), made("none")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from notifications.models import FollowUp
    from notifications.models import Subscription as Current

    rows = {s.pk: s for s in Current.objects.all()}
    assert (rows[past].status, rows[past].end.year) == ("off", 2024)
    assert (rows[later].status, rows[later].end.year) == ("active", 2099)
    assert (rows[none].status, rows[none].end) == ("active", None)
    [end] = FollowUp.objects.filter(kind="subscription-end")
    assert (end.subscription_id, end.due_at) == (later, rows[later].end)
