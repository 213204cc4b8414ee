"""The audit trail: one append-only row per access to PHI (HIPAA §164.312(b); DESIGN section 7).

An edge-level app: the edges (fhir_bridge's adapter, the coordinators' JSON API, the admin) write here as they
answer; the domain apps never import it. Served as FHIR AuditEvent (fhir_bridge/audit_fhir.py) to a client
granted ``system/AuditEvent.rs``.
"""

from django.db import models


class AppendOnly(Exception):
    """The application tried to change or delete an audit row."""


class AccessQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly("audit rows are never changed")

    def delete(self):
        raise AppendOnly("audit rows are never deleted")


class Access(models.Model):
    """Who did what to which PHI, when, from where, and how it ended. Written once, with one INSERT, by the edge
    that answered the request; never changed or deleted by the application."""

    class Channel(models.TextChoices):
        FHIR = "fhir", "FHIR API"  # an EHR client, over /fhir
        API = "api", "Coordinators' API"  # a staff user, over /api/admin/
        ADMIN = "admin", "Django admin"  # a staff user's page of referral data
        PORTAL = "portal", "Therapists' web app"  # a therapist's or manager's page (audit.middleware)
        DISCLOSURE = "disclosure", "Outbound disclosure"  # the hub sending PHI out (notifications, later)
        CONSOLE = "console", "Admin console"  # a clinic or network admin's page or export of referral data
        PULL = "pull", "Notify-and-pull fetch"  # the hub reading a referral's PHI from an EHR's FHIR server

    class Action(models.TextChoices):
        # FHIR AuditEvent.action
        CREATE = "C", "create"
        READ = "R", "read, vread, history or search"
        UPDATE = "U", "update"
        DELETE = "D", "delete"
        EXECUTE = "E", "execute (a transaction, a coordinator's command)"

    recorded_at = models.DateTimeField(auto_now_add=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    action = models.CharField(max_length=1, choices=Action.choices)
    interaction = models.CharField(max_length=20)  # FHIR's: read, vread, history, search, create, update, ...
    # Who: an EHR client (its client_id) or a user (username); empty when the request named nobody we know.
    agent_client = models.CharField(max_length=64, blank=True)
    agent_user = models.CharField(max_length=150, blank=True)
    # The clinic the client acts for: an EHR auditor reads its own clinic's rows.
    clinic_id = models.BigIntegerField(null=True)
    # What: the resource (type and id), or the query for a search; the path when neither is known.
    entity_type = models.CharField(max_length=64, blank=True)
    entity_id = models.CharField(max_length=64, blank=True)
    query = models.TextField(blank=True)
    path = models.TextField(blank=True)
    method = models.CharField(max_length=10)
    source_ip = models.GenericIPAddressField(null=True)
    status = models.PositiveSmallIntegerField()  # the HTTP status answered

    objects = AccessQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["clinic_id", "recorded_at"], name="audit_clinic_recorded")]

    def __str__(self):
        who = self.agent_client or self.agent_user or "anonymous"
        return f"{self.recorded_at:%Y-%m-%d %H:%M:%S} {who} {self.interaction} {self.entity_type}/{self.entity_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise AppendOnly("audit rows are never changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly("audit rows are never deleted")

    @property
    def succeeded(self) -> bool:
        return self.status < 400
