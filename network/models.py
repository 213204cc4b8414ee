"""The community network: the organizations, sites and professionals that referrals are routed to, and what
qualifies each of them. The offers and routing decisions made to them are the referral workflow's
(referrals/models.py).

Each row that the hub serves over FHIR carries a stable ``fhir_id`` (the id in ``Organization/<fhir_id>`` and
so on), so that an EHR can direct a referral to a member by reference.

Qualification is data, not code: ``ConditionGroup``, ``ConditionCodeMap`` and ``CredentialType`` are rows that
admins edit; their defaults come from ``migrations/0003_fill_qualification.py``, which cites the source of
each.
"""

import datetime as dt
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class RiskTier(models.IntegerChoices):
    """How closely a patient needs to be supervised, from ACSM's pre-participation screening (see
    referrals/risk.py).

    A credential covers patients up to its tier; a patient needs a professional at or above theirs."""

    LOW = 1, "Low: cleared for independent exercise, no known cardiovascular, metabolic or renal disease"
    MODERATE = 2, "Moderate: controlled chronic disease, asymptomatic, medically cleared"
    HIGH = 3, "High: symptoms, light-only clearance with disease, or needs clinical supervision"


class Organization(models.Model):
    class Kind(models.TextChoices):
        GYM = "gym", "Gym or fitness centre"
        YMCA = "ymca", "YMCA program"
        CARDIAC_REHAB = "cardiac-rehab", "Cardiac rehabilitation centre"
        WELLNESS = "wellness", "Hospital wellness centre"
        CLINIC = "clinic", "Clinic"
        PRACTICE = "practice", "Independent practice"

    fhir_id = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.GYM)
    active = models.BooleanField(default=True)
    # An organization can stop taking new referrals for all its roles at once (a move, a renovation).
    paused_until = models.DateField(
        null=True, blank=True, help_text="Takes no new referrals before this date (it resumes on it)."
    )
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    # How often this organization's cases report to the physician, where it differs from the hub's
    # HUB_REPORT_EVERY_WEEKS (a cardiac rehab centre that reports every 6 weeks). Empty: the hub's setting.
    report_every_weeks = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(26)],
        help_text="Weeks between progress reports for this organization's cases; empty for the hub's default.",
    )

    def __str__(self):
        return self.name


def time_zone_validate(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone name such as 'America/Chicago'") from None


def site_time_zone_default() -> str:
    """settings.HUB_DEFAULT_TIME_ZONE (a function, so that a change of the setting needs no migration)."""
    return settings.HUB_DEFAULT_TIME_ZONE


class Site(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sites")
    fhir_id = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    line = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=2, blank=True)
    postal_code = models.CharField(max_length=10, blank=True)
    # WGS84 degrees. A site without coordinates can only deliver virtually: it is never guessed onto the map.
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    # IANA name. The weeks of a case's dose are counted in it (referrals.selectors.case_dose): a Monday 00:30
    # session in Chicago belongs to that week, not to the one before as in UTC.
    time_zone = models.CharField(max_length=64, default=site_time_zone_default, validators=[time_zone_validate])

    class Meta:
        indexes = [
            # The routing engine's bounding box (referrals/routing.py::_pools): a range on latitude, then
            # longitude read from the same index.
            models.Index(fields=["latitude", "longitude"], name="site_lat_long"),
            # Virtual delivery is limited to the site's state (licensure); routing reads the state's virtual
            # roles.
            models.Index(fields=["state"], name="site_state"),
        ]

    def __str__(self):
        return self.name


class Professional(models.Model):
    fhir_id = models.SlugField(max_length=64, unique=True)
    family_name = models.CharField(max_length=100)
    given_name = models.CharField(max_length=100, blank=True)
    npi = models.CharField(max_length=10, blank=True)
    active = models.BooleanField(default=True)

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()

    def __str__(self):
        return self.display_name


class ConditionGroup(models.Model):
    """A group of conditions that professionals are qualified for as a whole (cardiovascular, ...)."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    # ACSM's screening asks about known cardiovascular, metabolic or renal disease; these groups are that
    # disease.
    cardiometabolic_renal = models.BooleanField(
        default=False,
        help_text="Counts as known cardiovascular, metabolic or renal disease in ACSM screening.",
    )
    min_risk_tier = models.PositiveSmallIntegerField(
        choices=RiskTier.choices,
        default=RiskTier.LOW,
        help_text="The lowest risk tier a patient in this group is routed at, whatever the screening says.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name


class ConditionCodeMap(models.Model):
    """One ICD-10-CM or SNOMED CT code, or ICD-10-CM prefix, that puts a patient in a condition group.

    Codes are stored normalised (upper case, no dots), so that "I25.10" and "I2510" are the same code and the
    prefix "I25" covers both. A code may map to more than one group (E11.22: diabetes with kidney disease)."""

    class Match(models.TextChoices):
        EXACT = "exact"  # the code itself
        PREFIX = "prefix"  # every code that starts with it (an ICD-10-CM category or block)

    ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
    SNOMED = "http://snomed.info/sct"
    SYSTEMS = {ICD10CM: "ICD-10-CM", SNOMED: "SNOMED CT"}

    system = models.CharField(max_length=100, choices=[(k, v) for k, v in SYSTEMS.items()])
    code = models.CharField(max_length=20)
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.EXACT)
    group = models.ForeignKey(ConditionGroup, on_delete=models.CASCADE, related_name="code_maps")
    display = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=200, blank=True, help_text="Where the mapping comes from.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["system", "code", "match", "group"], name="condition_code_map_unique"
            )
        ]
        indexes = [models.Index(fields=["system", "code"], name="condition_code_lookup")]

    def __str__(self):
        star = "*" if self.match == self.Match.PREFIX else ""
        return f"{self.SYSTEMS.get(self.system, self.system)} {self.code}{star} → {self.group.slug}"

    @staticmethod
    def normalise(code: str) -> str:
        return code.strip().upper().replace(".", "")

    def save(self, *args, **kwargs):
        # Data hygiene only (not business logic): the lookup compares normalised codes.
        self.code = self.normalise(self.code)
        super().save(*args, **kwargs)


class CredentialType(models.Model):
    """A certification, license or program accreditation, and the patients it qualifies its holder for."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    issuer = models.CharField(max_length=200, blank=True, help_text="The body that issues it.")
    condition_groups = models.ManyToManyField(ConditionGroup, related_name="credential_types", blank=True)
    max_risk_tier = models.PositiveSmallIntegerField(choices=RiskTier.choices, default=RiskTier.LOW)
    source = models.CharField(max_length=300, blank=True, help_text="Where its scope comes from.")

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name


class Credential(models.Model):
    """One professional's credential. It counts only while current: verified by an admin and not expired.

    Credentials belong to the person; every role of the person carries them."""

    professional = models.ForeignKey(Professional, on_delete=models.CASCADE, related_name="credentials")
    type = models.ForeignKey(CredentialType, on_delete=models.PROTECT, related_name="credentials")
    number = models.CharField(max_length=64, blank=True)
    issuer = models.CharField(max_length=200, blank=True)
    expires_on = models.DateField(help_text="Valid through this date.")
    verified_by = models.CharField(max_length=150, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["professional", "expires_on"], name="credential_current")]

    def __str__(self):
        return f"{self.type} ({self.number or 'no number'}), {self.professional}"

    def is_current(self, today: dt.date) -> bool:
        return self.verified_at is not None and self.expires_on >= today


def default_languages() -> list[str]:
    return ["en"]


class ProfessionalRole(models.Model):
    """A professional's role at one site of one organization (a FHIR PractitionerRole).

    What it may take is derived from the professional's current credentials, narrowed by
    ``only_condition_groups``
    and ``max_risk_tier`` when an admin sets them."""

    fhir_id = models.SlugField(max_length=64, unique=True)
    professional = models.ForeignKey(Professional, on_delete=models.CASCADE, related_name="roles")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="roles")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="roles", null=True, blank=True)
    active = models.BooleanField(default=True)
    email = models.EmailField(blank=True, help_text="Where offers are sent.")

    # Explicit restrictions on top of the credentials (they only ever narrow).
    only_condition_groups = models.ManyToManyField(
        ConditionGroup, blank=True, related_name="+", help_text="If set, takes only patients in these groups."
    )
    max_risk_tier = models.PositiveSmallIntegerField(
        choices=RiskTier.choices, null=True, blank=True, help_text="If set, takes no patient above this tier."
    )

    # BCP 47 tags ("en", "es", "zh-Hant"); matching compares the primary language ("es-MX" speaks "es").
    languages = models.JSONField(default=default_languages, blank=True)
    offers_in_person = models.BooleanField(default=True, help_text="One-to-one sessions at the site.")
    offers_group = models.BooleanField(default=False, help_text="Group classes at the site.")
    offers_virtual = models.BooleanField(
        default=False, help_text="Video sessions, for patients in the site's state."
    )

    max_active_cases = models.PositiveSmallIntegerField(default=10)
    accepting = models.BooleanField(default=True, help_text="Takes new referrals.")
    paused_until = models.DateField(
        null=True, blank=True, help_text="Takes no new referrals before this date (it resumes on it)."
    )
    # Payer identifiers as the hub names them ("medicare", "silver-sneakers", "self-pay").
    payers = models.JSONField(default=list, blank=True)
    # Kilometres, great-circle from the site. Indexed: routing reads MAX() of it to size its bounding box.
    service_radius_km = models.FloatField(default=16.0, db_index=True)

    class Meta:
        indexes = [
            # Routing's virtual pool: the virtual roles of the sites in one state
            # (referrals/routing.py::_pools).
            models.Index(fields=["site"], condition=Q(offers_virtual=True), name="role_virtual_site"),
        ]
        constraints = [
            models.CheckConstraint(
                name="role_service_radius_range",
                condition=Q(service_radius_km__gte=0) & Q(service_radius_km__lte=500),
            )
        ]

    def __str__(self):
        return f"{self.professional} at {self.organization}"

    @property
    def reference(self) -> str:
        return f"PractitionerRole/{self.fhir_id}"

    def is_paused(self, today: dt.date) -> bool:
        return self.paused_until is not None and today < self.paused_until


class Account(models.Model):
    """A web user of the portal, and whom they act for: a therapist for their Professional (every role they hold),
    a manager for their Organization (every offer and case of its roles). One account per user."""

    class Role(models.TextChoices):
        THERAPIST = "therapist"  # sees and answers the offers made to their own roles
        MANAGER = "manager"  # sees and answers every offer and case of the organization

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="account")
    role = models.CharField(max_length=10, choices=Role.choices)
    professional = models.ForeignKey(
        Professional, on_delete=models.CASCADE, null=True, blank=True, related_name="accounts"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="accounts"
    )

    class Meta:
        constraints = [
            # Exactly the link the role acts through, so that no account can see more than its role says.
            models.CheckConstraint(
                name="account_link_matches_role",
                condition=Q(role="therapist", professional__isnull=False, organization__isnull=True)
                | Q(role="manager", organization__isnull=False, professional__isnull=True),
            )
        ]

    def __str__(self):
        return f"{self.user} ({self.role})"

    @property
    def actor(self) -> str:
        """The actor string the domain's events record (as ReferralEvent.actor)."""
        return f"user:{self.user.get_username()}"
