"""What the FHIR surface stores beside the domain: the resources it serves, their versions, and its clients."""

import uuid

from django.db import models
from django.db.models import Q

from fhir_bridge.smart_scopes import DEFAULT_SCOPES


def new_client_id() -> str:
    return uuid.uuid4().hex


def default_ehr_scopes() -> str:
    """The system scopes a client gets when none are given (smart_scopes.DEFAULT_SCOPES), space-separated.
    A function, not a string, so that a type added to the route table does not need a migration."""
    return " ".join(DEFAULT_SCOPES)


class DocumentField(models.JSONField):
    """A JSONField for whole FHIR resources.

    Having a placeholder keeps Django's PostgreSQL bulk insert on plain multi-row VALUES: its UNNEST strategy would
    escape every document into an array literal, which costs more than the insert itself for resources this size.
    """

    def get_placeholder(self, value, compiler, connection):
        return "%s"


class EhrClient(models.Model):
    """A system registered for SMART Backend Services. It acts for exactly one side:

    - a clinic's EHR (``clinic``): it sends referrals and follows them; it sees its clinic's referrals;
    - a network organization's own system (``organization``, the PA IG's Light Service Provider): it answers the
      offers made to the organization's roles and runs the cases it accepted; it sees only those
      (fhir_bridge/provider_fhir.py).
    """

    client_id = models.CharField(max_length=64, unique=True, default=new_client_id)
    name = models.CharField(max_length=200)
    clinic = models.ForeignKey(
        "referrals.Clinic", on_delete=models.PROTECT, null=True, blank=True, related_name="ehr_clients"
    )
    organization = models.ForeignKey(
        "network.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="provider_clients"
    )
    jwks = models.JSONField(help_text="The client's public keys, as a JWKS document ({'keys': [...]}).")
    scopes = models.TextField(
        default=default_ehr_scopes, help_text="The system scopes this client may be granted, space-separated."
    )
    is_active = models.BooleanField(default=True)
    # Notify and pull (a Task whose focus is a URL on the EHR's FHIR server): the only base the hub reads from for
    # this client, and the token endpoint where it authenticates as a SMART backend client (fhir_bridge.hub_client).
    # Both blank: the EHR only pushes.
    fhir_base_url = models.URLField(max_length=500, blank=True)
    token_url = models.URLField(max_length=500, blank=True)
    # The client id the EHR registered the hub under (the iss and sub of the hub's client assertion there).
    hub_client_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="ehr_client_one_side",
                condition=Q(clinic__isnull=False, organization__isnull=True)
                | Q(clinic__isnull=True, organization__isnull=False),
            )
        ]

    @property
    def is_provider(self) -> bool:
        """Whether it acts for a network organization (a provider's system) rather than a clinic."""
        return self.organization_id is not None

    def __str__(self):
        return f"{self.name} ({self.client_id})"

    @property
    def allowed_scopes(self) -> list[str]:
        return self.scopes.split()

    @property
    def can_be_pulled_from(self) -> bool:
        """Whether the hub may fetch referrals from this client's FHIR server (notify and pull)."""
        return bool(self.fhir_base_url and self.token_url and self.hub_client_id)


class SpentAssertion(models.Model):
    """A client assertion's `jti`, kept until the assertion expires so that it can never be replayed."""

    client = models.ForeignKey(EhrClient, on_delete=models.CASCADE, db_index=False)  # the unique key leads with it
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "jti"], name="spent_assertion_once")]


class StoredResource(models.Model):
    """The current version of one FHIR resource that the hub serves.

    Resources that came in (ServiceRequest, Patient, Condition, ...) are kept as they came, with only ids and
    in-Bundle references rewritten; the referral Task is re-rendered from the domain on every change.
    ``clinic`` is null for resources every client may read (the hub's own Organization, the network).
    """

    resource_type = models.CharField(max_length=64)
    fhir_id = models.CharField(max_length=64)
    # Not indexed alone: resource_clinic_updated leads with it. Every index here is written at each intake.
    clinic = models.ForeignKey("referrals.Clinic", on_delete=models.PROTECT, null=True, related_name="+", db_index=False)
    referral = models.ForeignKey("referrals.Referral", on_delete=models.PROTECT, null=True, related_name="resources")
    version_id = models.PositiveIntegerField(default=1)
    last_updated = models.DateTimeField()
    content = DocumentField()
    is_deleted = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource_type", "fhir_id"], name="resource_id_unique")]
        indexes = [models.Index(fields=["clinic", "resource_type", "last_updated"], name="resource_clinic_updated")]

    def __str__(self):
        return f"{self.resource_type}/{self.fhir_id}/_history/{self.version_id}"

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.fhir_id}"


class ResourceVersion(models.Model):
    """A version that a newer one replaced, written in the same transaction as the change that replaced it.

    With the current version (on StoredResource) these make the whole history (vread, _history, audit). A
    resource that was never changed has no row here, which keeps intake to one copy of each document.
    """

    # No index of its own: resource_version_unique (resource, version_id) leads with it, and every referral change
    # writes a row here, so a second index on the same column was one more insert per change.
    resource = models.ForeignKey(StoredResource, on_delete=models.CASCADE, related_name="versions", db_index=False)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    method = models.CharField(max_length=10)  # POST, PUT or DELETE, as in a history Bundle's entry.request
    content = DocumentField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource", "version_id"], name="resource_version_unique")]


class ResourceIdentifier(models.Model):
    """A business identifier of a stored Task or ServiceRequest, unique per EHR client.

    The unique constraint is what keeps two identical referrals that arrive at the same moment from both being
    stored: the second insert fails, and its transaction rolls back and answers with the first.
    """

    client = models.ForeignKey(EhrClient, on_delete=models.CASCADE, db_index=False)  # the unique key leads with it
    resource_type = models.CharField(max_length=64)
    system = models.CharField(max_length=255)
    value = models.CharField(max_length=255)
    resource = models.ForeignKey(StoredResource, on_delete=models.CASCADE, related_name="identifiers")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "resource_type", "system", "value"], name="business_identifier_unique"
            )
        ]


class ConditionalCreateKey(models.Model):
    """The If-None-Exist query a resource was created under, unique per client and type (the same guard for
    conditional creates whose query is not an identifier of the resource itself)."""

    client = models.ForeignKey(EhrClient, on_delete=models.CASCADE, db_index=False)  # the unique key leads with it
    resource_type = models.CharField(max_length=64)
    query = models.CharField(max_length=500)
    resource = models.ForeignKey(StoredResource, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "resource_type", "query"], name="conditional_create_unique")
        ]


class SearchToken(models.Model):
    """One searchable value of the current version of a resource (``status=requested``,
    ``owner=Organization/hub``). Rewritten with each version."""

    # No foreign key in the database: the tokens are the store's own derived index, written in the transaction
    # that writes their resource (fhir_bridge/store.py) and deleted with it by the ORM's cascade. The constraint
    # cost a deferred check per token at every COMMIT (intake writes some fifty) and guarded nothing the store
    # does not. A raw DELETE or TRUNCATE of StoredResource rows must delete their tokens itself.
    resource = models.ForeignKey(
        StoredResource, on_delete=models.CASCADE, related_name="search_tokens", db_constraint=False
    )
    clinic_id = models.BigIntegerField(null=True)  # copied from the resource so a search never joins for it
    resource_type = models.CharField(max_length=64)
    param = models.CharField(max_length=64)
    value = models.CharField(max_length=255)

    class Meta:
        indexes = [models.Index(fields=["resource_type", "param", "value", "clinic_id"], name="search_token_lookup")]


class InboundMessage(models.Model):
    """A request body exactly as an EHR client sent it, kept for provenance beside what was made of it."""

    # Not indexed: nothing looks messages up by client (pull.py reads them by referral), and each intake wrote an
    # entry to it. Deleting an EhrClient (PROTECT) then reads the table once, a rare admin act.
    client = models.ForeignKey(EhrClient, on_delete=models.PROTECT, db_index=False)
    interaction = models.CharField(max_length=40)  # "transaction", "create ServiceRequest", ...
    body = models.TextField()  # the bytes as sent (UTF-8), not re-serialised
    received_at = models.DateTimeField(auto_now_add=True)
    referral = models.ForeignKey("referrals.Referral", on_delete=models.PROTECT, null=True, related_name="+")
