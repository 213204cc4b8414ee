"""The follow-up schedule, the subscriptions and the outbox. Rows in the database are the truth; Celery only
carries ids (DESIGN.md §6, STYLE.md 20).

What a row concerns is kept as plain ids, not foreign keys: the domain's offers are moving between apps, and a
follow-up must outlive nothing it points at (a handler that finds its row gone logs and finishes)."""

import datetime as dt

from django.db import models
from django.db.models import Q


class FollowUp(models.Model):
    """One thing to do at a time: expire an offer, nudge a therapist, attempt a delivery.

    ``key`` makes scheduling idempotent: the same follow-up (kind and what it concerns) is inserted once however
    often the change that schedules it is replayed. ``claimed_until`` is the sweep's lease: a row whose worker
    died is claimed again once it passes."""

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for its due time, or claimed and being worked (see claimed_until)
        DONE = "done"  # its handler ran and recorded an outcome; final
        FAILED = "failed"  # its handler raised on every attempt up to the limit; final, visible in the admin

    kind = models.CharField(max_length=40)  # a key of notifications.followups.KINDS
    key = models.CharField(max_length=200)  # unique: followup_key_unique
    due_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    referral_id = models.BigIntegerField(null=True, blank=True)
    offer_id = models.BigIntegerField(null=True, blank=True)
    subscription_id = models.BigIntegerField(null=True, blank=True)
    delivery_id = models.BigIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True)  # what the handler did, or the last error
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["due_at", "id"]
        # A constraint, not unique=True: the same uniqueness (followups_schedule's ON CONFLICT (key) infers it),
        # without the varchar_pattern_ops "_like" index PostgreSQL gets for a unique CharField, which no lookup
        # uses (key is only ever matched whole) and every scheduled follow-up wrote to.
        constraints = [models.UniqueConstraint(fields=["key"], name="followup_key_unique")]
        indexes = [
            # Consumer: notifications.followups.followups_claim (Celery task notifications.sweep). Only pending
            # rows are indexed, so done ones (the vast majority, in time) cost the sweep nothing.
            models.Index(fields=["due_at"], condition=Q(state="pending"), name="followup_due_pending"),
            # What a referral still has scheduled (the admin, and handlers that look for siblings).
            models.Index(fields=["referral_id"], condition=Q(referral_id__isnull=False), name="followup_referral"),
        ]
        permissions = [
            ("coordinator", "Is a coordinator: e-mailed when a referral needs manual routing"),
        ]

    def __str__(self):
        return f"{self.kind} due {self.due_at:%Y-%m-%d %H:%M} ({self.state})"


class Subscription(models.Model):
    """A clinic's standing request to be told of changes to its referrals (an R4 Subscriptions Backport
    Subscription on the Task topic, or the e-mail channel for clinics without a FHIR endpoint)."""

    class Channel(models.TextChoices):
        REST_HOOK = "rest-hook"  # POST of the notification Bundle to ``endpoint``
        EMAIL = "email"  # a PHI-free message with a link, to ``endpoint`` (an address)

    class Payload(models.TextChoices):
        EMPTY = "empty"
        ID_ONLY = "id-only"
        FULL_RESOURCE = "full-resource"

    class Status(models.TextChoices):
        REQUESTED = "requested"  # created; the handshake has not answered yet
        ACTIVE = "active"  # notifications flow
        ERROR = "error"  # deliveries keep failing; still numbered and attempted, back to active on a success
        OFF = "off"  # stopped by the clinic or an admin: nothing is numbered for it

    clinic = models.ForeignKey("referrals.Clinic", on_delete=models.CASCADE, related_name="subscriptions")
    # The id of the served FHIR Subscription (empty for one made in the admin, which FHIR does not serve).
    fhir_id = models.CharField(max_length=64, blank=True)
    # The Subscription as the client posted it; what /fhir/Subscription serves is this with the hub's id, meta and
    # status laid over it (fhir_bridge/subscription_routes.py).
    resource = models.JSONField(default=dict, blank=True)
    # The FHIR base the client used, for the references in its notifications; empty: HUB_PUBLIC_BASE_URL.
    base_url = models.CharField(max_length=300, blank=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    endpoint = models.CharField(max_length=500)
    headers = models.JSONField(default=list, blank=True)  # ["Authorization: Bearer ...", ...] as FHIR has them
    payload = models.CharField(max_length=20, choices=Payload.choices, default=Payload.ID_ONLY)
    # The Task topic's filters, each ANDed: the list form of fhir_bridge.subscriptions.filters_to_json
    # ([{"name": "status", "modifier": "not", "values": ["cancelled"]}]), or in the admin the shorthand
    # {"status": ["accepted"], "requester": ["Practitioner/x"]} (a key's values ORed). Empty: every change to the
    # clinic's referrals.
    filter_criteria = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    heartbeat_seconds = models.PositiveIntegerField(null=True, blank=True)
    # The last event number given out (events-since-subscription-start); written only under this row's lock.
    events_since_start = models.PositiveBigIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    # Until when its receiver counts as slow (a notification took over outbox.SLOW_SECONDS): the fan-out leaves
    # its notifications to the delivery queue meanwhile (notifications.tasks._held_send).
    slow_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Subscription.end: when the hub switches it off (a follow-up due then, and the fan-out and the heartbeat
    # check it too). Empty: until the clinic switches it off.
    end = models.DateTimeField(null=True, blank=True)
    # meta.versionId and the ETag an If-Match names: one more at each write of the resource (the clinic's update
    # or delete, the hub switching it off at its end). The status deliveries move (requested, active, error) is
    # read live and makes no version, so a client's If-Match does not go stale on a handshake.
    version_id = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(null=True, blank=True)  # meta.lastUpdated; empty: created_at
    # Deleted over FHIR: switched off and no longer served (410 Gone), but kept with its deliveries, which are the
    # record of what was disclosed to whom and whose numbers it must not give out twice.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fhir_id"], condition=~Q(fhir_id=""), name="subscription_fhir_id"),
        ]

    def __str__(self):
        return f"{self.channel} subscription {self.pk} of {self.clinic_id} ({self.status})"

    def ended(self, now: dt.datetime) -> bool:
        """Whether its ``end`` has come by ``now`` (aware)."""
        return self.end is not None and self.end <= now

    def is_notified(self, now: dt.datetime) -> bool:
        """Whether a change fanned out at ``now`` is numbered for it: its status is one that is notified
        (NOTIFIED_SUBSCRIPTION_STATUSES) and its end has not come. Read under its row lock."""
        return self.status in NOTIFIED_SUBSCRIPTION_STATUSES and not self.ended(now)


# Subscriptions that get notifications numbered and attempted. A requested one is numbered from its creation, so
# that nothing is missed while its handshake is under way; its notifications wait for the handshake
# (outbox.delivery_attempt delivers a subscription's messages in order).
NOTIFIED_SUBSCRIPTION_STATUSES = frozenset(
    {Subscription.Status.REQUESTED, Subscription.Status.ACTIVE, Subscription.Status.ERROR}
)


class MessageField(models.TextField):
    """A TextField for a whole message body (a notification Bundle's JSON).

    Having a placeholder keeps Django's PostgreSQL bulk insert (the fan-out's) on plain multi-row VALUES: its
    UNNEST strategy escapes every body into an array literal, which cost the fan-out more than all its queries
    (bench/followups.py). The same reason as fhir_bridge.models.DocumentField. A VALUES list takes at most 65,535
    parameters: bulk-create Deliveries in batches of DELIVERY_INSERT_BATCH."""

    def get_placeholder(self, value, compiler, connection):
        return "%s"


# Deliveries per INSERT: about 20 columns each stays far below PostgreSQL's 65,535 parameters per statement.
DELIVERY_INSERT_BATCH = 1000


class Delivery(models.Model):
    """One message to one receiver: a numbered notification of a subscription, or an e-mail. Its content is
    fixed when the row is written, so that every attempt (and a replay) sends the same bytes."""

    class State(models.TextChoices):
        PENDING = "pending"  # an attempt is scheduled (a delivery-attempt follow-up)
        DELIVERED = "delivered"  # the receiver took it; final
        DEAD = "dead"  # every attempt up to the limit failed; an admin may replay it

    channel = models.CharField(max_length=10, choices=Subscription.Channel.choices)
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    # A subscription's handshake, heartbeat or event-notification (the backport's notification types); "" for an
    # e-mail to a therapist or coordinator.
    notification_type = models.CharField(max_length=20, blank=True)
    event_number = models.PositiveBigIntegerField(null=True, blank=True)  # per subscription, gap-free
    referral_event_id = models.BigIntegerField(null=True, blank=True)
    # The referral Task version an event-notification carries (what $events replays), fixed at fan-out.
    task_id = models.CharField(max_length=64, blank=True)
    task_version = models.PositiveIntegerField(null=True, blank=True)
    endpoint = models.CharField(max_length=500)  # the URL, or the e-mail address
    subject = models.CharField(max_length=200, blank=True)  # e-mail only
    content = MessageField()  # the body sent: JSON for rest-hook, plain text for e-mail
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # in this round
    round = models.PositiveIntegerField(default=1)  # 1, then one more per replay
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The lease of the worker sending it right now (outbox.deliveries_claim): until it passes, no other worker
    # sends it; a worker killed before recording the outcome lets it run out, and the delivery goes again.
    sending_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "event_number"],
                condition=Q(subscription__isnull=False),
                name="delivery_subscription_event_number",
            )
        ]
        indexes = [
            # Consumer: the admin's dead letters and manage.py replay_deliveries.
            models.Index(fields=["created_at"], condition=Q(state="dead"), name="delivery_dead"),
            # Consumer: outbox.events_fan_out, which notifies each Task version once per subscription.
            models.Index(fields=["task_id", "task_version"], condition=~Q(task_id=""), name="delivery_task_version"),
            # Consumer: outbox.delivery_attempts ("is an earlier one of its subscription pending?", every attempt)
            # and outbox._resume_next. Only pending rows: without it each attempt read every delivery its
            # subscription ever had (1.7 ms per attempt at 2,000; bench/followups.py).
            models.Index(fields=["subscription", "event_number"], condition=Q(state="pending"),
                         name="delivery_pending"),
            # Consumer: outbox._resume_next, after every delivered batch: the subscription's notifications parked
            # behind an earlier one. There are rarely any; through delivery_pending the look read every pending
            # row of the subscription, in flight or not (1.3 ms a look at 300 notifications/s, bench/followups.py).
            models.Index(fields=["subscription", "event_number"], condition=Q(state="pending", next_attempt_at=None),
                         name="delivery_waiting"),
        ]

    def __str__(self):
        number = f" #{self.event_number}" if self.event_number else ""
        return f"{self.channel} delivery {self.pk}{number} ({self.state})"
