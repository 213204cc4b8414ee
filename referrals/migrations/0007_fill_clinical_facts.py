"""Every referral gets its ClinicalFacts row, with the condition codes it kept until now (Referral.reason_codes).
The other facts are read from the stored FHIR by fhir_bridge's 0005_fill_clinical_facts: parsing FHIR belongs to the
edge."""

from django.db import migrations


def fill(apps, schema_editor):
    Referral = apps.get_model("referrals", "Referral")
    ClinicalFacts = apps.get_model("referrals", "ClinicalFacts")
    have = set(ClinicalFacts.objects.values_list("referral_id", flat=True))
    rows = (
        ClinicalFacts(referral_id=pk, condition_codes=codes or [])
        for pk, codes in Referral.objects.values_list("pk", "reason_codes").iterator()
        if pk not in have
    )
    ClinicalFacts.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [("referrals", "0006_clinical_facts")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
