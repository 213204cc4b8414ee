"""The community network: the organizations, sites and professionals that referrals are routed to.

Each row that the hub serves over FHIR carries a stable ``fhir_id`` (the id in ``Organization/<fhir_id>`` and so on),
so that an EHR can direct a referral to a member by reference.
"""

from django.db import models


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
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)

    def __str__(self):
        return self.name


class Site(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sites")
    fhir_id = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    line = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=2, blank=True)
    postal_code = models.CharField(max_length=10, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)

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


class ProfessionalRole(models.Model):
    """A professional's role at one site of one organization (a FHIR PractitionerRole)."""

    fhir_id = models.SlugField(max_length=64, unique=True)
    professional = models.ForeignKey(Professional, on_delete=models.CASCADE, related_name="roles")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="roles")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="roles", null=True, blank=True)
    active = models.BooleanField(default=True)
    email = models.EmailField(blank=True, help_text="Where offers are sent.")

    def __str__(self):
        return f"{self.professional} at {self.organization}"
