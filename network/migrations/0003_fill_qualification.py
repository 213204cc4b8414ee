"""The default qualification data: condition groups, the codes that map to them, and credential types.

Admins edit all of it (network/admin.py); this only seeds a new hub. Every entry cites where it comes from.
Where a source leaves room, the entry takes the conservative reading (a patient is sent to the more qualified
professional), and says so.

Sources:
- [ACSM-GETP11] ACSM's Guidelines for Exercise Testing and Prescription, 11th ed. (2021), ch. 2, the exercise
  pre-participation health screening algorithm (Riebe et al., Med Sci Sports Exerc 2015;47:2473-9): "known
  cardiovascular, metabolic or renal disease" means cardiac, peripheral vascular or cerebrovascular disease,
  type 1 and type 2 diabetes, and renal disease. Hypertension and pulmonary disease were taken out of that
  question in 2015, so those groups are not "cardiometabolic_renal" here (their minimum tier still keeps them
  off the lowest tier).
- [ACSM-CERT] ACSM certification scopes of practice (acsm.org, "ACSM Certifications": CPT, EP, CEP; and the
  ACSM/ACS Certified Cancer Exercise Trainer).
- [EIM] ACSM/EIM Exercise is Medicine Credential, levels 1-3 (exerciseismedicine.org, "EIM Credential"): level
  1, patients medically cleared for independent exercise at low risk; level 2, also patients with controlled
  chronic disease cleared for independent exercise; level 3, patients who need clinical monitoring.
- [AACVPR] AACVPR program certification (aacvpr.org): certified cardiac and pulmonary rehabilitation programs,
  medically supervised.
- [ISSA] ISSA Exercise Therapist certificate (issaonline.com): exercise for people recovering from injury or
  with musculoskeletal limitations, not a clinical credential.
- [APTA] State-licensed physical therapists (APTA, scope of practice); cardiovascular and pulmonary care is a
  specialty (ABPTS CCS), so a plain license is not taken to cover those groups here (conservative).
- [ICD-10-CM] ICD-10-CM 2024 tabular list, chapter and category codes (CDC/NCHS).
- [SNOMED] SNOMED CT International Edition concept ids (exact concepts only: the hub has no terminology
  server, so a more specific child concept is unmapped and flagged until an admin maps it).
"""

from django.db import migrations

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOW, MODERATE, HIGH = 1, 2, 3

# slug, name, cardiometabolic_renal, min_risk_tier, description
GROUPS = [
    (
        "cardiovascular",
        "Cardiovascular disease",
        True,
        MODERATE,
        "Coronary artery disease, myocardial infarction, heart failure, arrhythmia, valve disease, "
        "peripheral and cerebrovascular disease [ACSM-GETP11].",
    ),
    (
        "metabolic",
        "Metabolic disease (diabetes)",
        True,
        MODERATE,
        "Type 1 and type 2 diabetes [ACSM-GETP11]; prediabetes is mapped here too (conservative).",
    ),
    (
        "hypertension",
        "Hypertension",
        False,
        MODERATE,
        "Not screening disease since 2015 [ACSM-GETP11], but needs blood-pressure aware programming.",
    ),
    (
        "pulmonary",
        "Pulmonary disease",
        False,
        MODERATE,
        "COPD, asthma, interstitial lung disease, cystic fibrosis.",
    ),
    (
        "renal",
        "Renal disease",
        True,
        MODERATE,
        "Chronic kidney disease, dialysis, kidney transplant [ACSM-GETP11].",
    ),
    ("oncology", "Cancer", False, MODERATE, "During and after cancer treatment [ACSM-CERT, ACSM/ACS CET]."),
    (
        "musculoskeletal",
        "Musculoskeletal",
        False,
        LOW,
        "Low back pain, knee and hip osteoarthritis, other arthritis, osteoporosis, joint replacement.",
    ),
    (
        "neurological",
        "Neurological",
        False,
        MODERATE,
        "Parkinson's disease, multiple sclerosis, stroke, neuropathy.",
    ),
    ("pregnancy", "Pregnancy and postpartum", False, MODERATE, "Pregnant or within a year after delivery."),
    ("falls", "Older adults at risk of falls", False, MODERATE, "History of falls, unsteady gait, frailty."),
    ("obesity", "Obesity", False, LOW, "Obesity and overweight (E66), BMI 30 and over."),
    (
        "healthy",
        "Generally healthy and inactive",
        False,
        LOW,
        "No chronic condition; referred for lack of physical activity (the PA IG's Z72.3).",
    ),
]

ALL_GROUPS = [g[0] for g in GROUPS]

# slug, name, issuer, groups, max_risk_tier, source
CREDENTIAL_TYPES = [
    (
        "acsm-cpt",
        "ACSM Certified Personal Trainer (ACSM-CPT)",
        "American College of Sports Medicine",
        ["healthy", "obesity"],
        LOW,
        "[ACSM-CERT] apparently healthy people able to exercise independently",
    ),
    (
        "acsm-ep",
        "ACSM Certified Exercise Physiologist (ACSM-EP)",
        "American College of Sports Medicine",
        [
            "healthy",
            "obesity",
            "metabolic",
            "hypertension",
            "musculoskeletal",
            "pulmonary",
            "pregnancy",
            "falls",
        ],
        MODERATE,
        "[ACSM-CERT] apparently healthy people and those with medically controlled disease; cardiovascular "
        "and renal disease left to clinical credentials (conservative)",
    ),
    (
        "acsm-cep",
        "ACSM Certified Clinical Exercise Physiologist (ACSM-CEP)",
        "American College of Sports Medicine",
        ALL_GROUPS,
        HIGH,
        "[ACSM-CERT] cardiovascular, pulmonary, metabolic, orthopedic/musculoskeletal, "
        "neuromuscular, neoplastic, immunologic and hematologic disease",
    ),
    (
        "eim-1",
        "ACSM/EIM Exercise is Medicine Credential, Level 1",
        "American College of Sports Medicine",
        ["healthy", "obesity"],
        LOW,
        "[EIM] level 1: low risk, cleared for independent exercise",
    ),
    (
        "eim-2",
        "ACSM/EIM Exercise is Medicine Credential, Level 2",
        "American College of Sports Medicine",
        ["healthy", "obesity", "metabolic", "hypertension", "musculoskeletal", "falls"],
        MODERATE,
        "[EIM] level 2: also controlled chronic disease, cleared for independent exercise",
    ),
    (
        "eim-3",
        "ACSM/EIM Exercise is Medicine Credential, Level 3",
        "American College of Sports Medicine",
        ALL_GROUPS,
        HIGH,
        "[EIM] level 3: patients who need clinical monitoring",
    ),
    (
        "pt-license",
        "Licensed physical therapist (PT, DPT)",
        "State board of physical therapy",
        [
            "musculoskeletal",
            "neurological",
            "falls",
            "oncology",
            "pregnancy",
            "healthy",
            "obesity",
            "metabolic",
            "hypertension",
        ],
        HIGH,
        "[APTA] licensed clinical practice; cardiovascular, pulmonary and renal need a "
        "cardiopulmonary specialty (conservative)",
    ),
    (
        "issa-et",
        "ISSA Exercise Therapist",
        "International Sports Sciences Association",
        ["musculoskeletal", "healthy", "obesity"],
        LOW,
        "[ISSA] non-clinical: injury recovery, healthy clients",
    ),
    (
        "cardiac-rehab",
        "Cardiac rehabilitation program (AACVPR-certified)",
        "AACVPR",
        ["cardiovascular", "hypertension", "metabolic", "healthy"],
        HIGH,
        "[AACVPR] medically supervised cardiac rehabilitation",
    ),
    (
        "pulmonary-rehab",
        "Pulmonary rehabilitation program (AACVPR-certified)",
        "AACVPR",
        ["pulmonary", "healthy"],
        HIGH,
        "[AACVPR] medically supervised pulmonary rehabilitation",
    ),
    (
        "acsm-cet",
        "ACSM/ACS Certified Cancer Exercise Trainer",
        "American College of Sports Medicine",
        ["oncology", "healthy"],
        MODERATE,
        "[ACSM-CERT] cancer survivors during and after treatment",
    ),
]

# system, code, match, groups, display. Codes are normalised (no dots, upper case) as ConditionCodeMap stores
# them. Source: [ICD-10-CM] categories for ICD, [SNOMED] concepts for SCT.
P, E = "prefix", "exact"
CODE_MAPS = [
    # Cardiovascular: I20-I25 ischaemic heart disease, I34-I35 valve disease, I42 cardiomyopathy, I47-I49
    # arrhythmia, I50 heart failure, I70/I73 peripheral vascular disease, I63/I69 cerebrovascular (ACSM counts
    # it as cardiovascular), Z95 cardiac implants and grafts, Z86.73 history of TIA or stroke.
    (ICD, "I20", P, ["cardiovascular"], "Angina pectoris"),
    (ICD, "I21", P, ["cardiovascular"], "Acute myocardial infarction"),
    (ICD, "I22", P, ["cardiovascular"], "Subsequent myocardial infarction"),
    (ICD, "I24", P, ["cardiovascular"], "Other acute ischaemic heart disease"),
    (ICD, "I25", P, ["cardiovascular"], "Chronic ischaemic heart disease"),
    (ICD, "I34", P, ["cardiovascular"], "Nonrheumatic mitral valve disorders"),
    (ICD, "I35", P, ["cardiovascular"], "Nonrheumatic aortic valve disorders"),
    (ICD, "I42", P, ["cardiovascular"], "Cardiomyopathy"),
    (ICD, "I47", P, ["cardiovascular"], "Paroxysmal tachycardia"),
    (ICD, "I48", P, ["cardiovascular"], "Atrial fibrillation and flutter"),
    (ICD, "I49", P, ["cardiovascular"], "Other cardiac arrhythmias"),
    (ICD, "I50", P, ["cardiovascular"], "Heart failure"),
    (ICD, "I63", P, ["cardiovascular", "neurological"], "Cerebral infarction"),
    (ICD, "I69", P, ["cardiovascular", "neurological"], "Sequelae of cerebrovascular disease"),
    (ICD, "I70", P, ["cardiovascular"], "Atherosclerosis"),
    (ICD, "I73", P, ["cardiovascular"], "Other peripheral vascular diseases"),
    (ICD, "Z95", P, ["cardiovascular"], "Presence of cardiac and vascular implants and grafts"),
    (ICD, "Z8673", E, ["cardiovascular"], "Personal history of TIA and cerebral infarction without deficits"),
    # Hypertensive diseases I10-I16; I11 with heart disease, I12 with kidney disease, I13 with both.
    (ICD, "I10", P, ["hypertension"], "Essential (primary) hypertension"),
    (ICD, "I11", P, ["hypertension", "cardiovascular"], "Hypertensive heart disease"),
    (ICD, "I12", P, ["hypertension", "renal"], "Hypertensive chronic kidney disease"),
    (
        ICD,
        "I13",
        P,
        ["hypertension", "cardiovascular", "renal"],
        "Hypertensive heart and chronic kidney disease",
    ),
    (ICD, "I15", P, ["hypertension"], "Secondary hypertension"),
    (ICD, "I16", P, ["hypertension"], "Hypertensive crisis"),
    # Diabetes E08-E13, prediabetes (R73.0), metabolic syndrome, long-term insulin. Dyslipidaemia (E78) is a
    # risk factor, not disease, in [ACSM-GETP11]: it is left unmapped so that it is flagged and an admin
    # decides.
    (ICD, "E08", P, ["metabolic"], "Diabetes due to underlying condition"),
    (ICD, "E09", P, ["metabolic"], "Drug or chemical induced diabetes"),
    (ICD, "E10", P, ["metabolic"], "Type 1 diabetes mellitus"),
    (ICD, "E11", P, ["metabolic"], "Type 2 diabetes mellitus"),
    (ICD, "E13", P, ["metabolic"], "Other specified diabetes mellitus"),
    (ICD, "E1022", P, ["renal"], "Type 1 diabetes with diabetic chronic kidney disease"),
    (ICD, "E1122", P, ["renal"], "Type 2 diabetes with diabetic chronic kidney disease"),
    (ICD, "E104", P, ["neurological"], "Type 1 diabetes with neurological complications"),
    (ICD, "E114", P, ["neurological"], "Type 2 diabetes with neurological complications"),
    (ICD, "R730", P, ["metabolic"], "Abnormal glucose (prediabetes: R73.03)"),
    (ICD, "E8881", E, ["metabolic"], "Metabolic syndrome"),
    (ICD, "Z794", E, ["metabolic"], "Long term (current) use of insulin"),
    # Obesity: E66 (includes E66.3 overweight), Z68.3x-Z68.4x adult BMI 30 and over.
    (ICD, "E66", P, ["obesity"], "Overweight and obesity"),
    (ICD, "Z683", P, ["obesity"], "Body mass index 30-39, adult"),
    (ICD, "Z684", P, ["obesity"], "Body mass index 40 or greater, adult"),
    # Chronic lower respiratory disease J41-J47, interstitial lung disease J84, cystic fibrosis E84.
    (ICD, "J41", P, ["pulmonary"], "Simple and mucopurulent chronic bronchitis"),
    (ICD, "J42", P, ["pulmonary"], "Unspecified chronic bronchitis"),
    (ICD, "J43", P, ["pulmonary"], "Emphysema"),
    (ICD, "J44", P, ["pulmonary"], "Other chronic obstructive pulmonary disease"),
    (ICD, "J45", P, ["pulmonary"], "Asthma"),
    (ICD, "J47", P, ["pulmonary"], "Bronchiectasis"),
    (ICD, "J84", P, ["pulmonary"], "Other interstitial pulmonary diseases"),
    (ICD, "E84", P, ["pulmonary"], "Cystic fibrosis"),
    # Renal: N18 CKD, N19 unspecified kidney failure, Z99.2 dialysis, Z94.0 kidney transplant.
    (ICD, "N18", P, ["renal"], "Chronic kidney disease"),
    (ICD, "N19", P, ["renal"], "Unspecified kidney failure"),
    (ICD, "Z992", E, ["renal"], "Dependence on renal dialysis"),
    (ICD, "Z940", E, ["renal"], "Kidney transplant status"),
    # Neoplasms: chapter 2, C00-C96 malignant, D00-D09 in situ; Z85 personal history of malignant neoplasm.
    (ICD, "C", P, ["oncology"], "Malignant neoplasms (C00-C96)"),
    (ICD, "D0", P, ["oncology"], "In situ neoplasms (D00-D09)"),
    (ICD, "Z85", P, ["oncology"], "Personal history of malignant neoplasm"),
    # Musculoskeletal: M54.4-M54.5 low back pain, M15-M19 osteoarthritis (M16 hip, M17 knee), M47 spondylosis,
    # M51 disc disorders, M05-M06 rheumatoid arthritis, M80-M81 osteoporosis, M79.7 fibromyalgia,
    # Z96.64-Z96.65 hip and knee replacement.
    (ICD, "M544", P, ["musculoskeletal"], "Lumbago with sciatica"),
    (ICD, "M545", P, ["musculoskeletal"], "Low back pain"),
    (ICD, "M15", P, ["musculoskeletal"], "Polyosteoarthritis"),
    (ICD, "M16", P, ["musculoskeletal"], "Osteoarthritis of hip"),
    (ICD, "M17", P, ["musculoskeletal"], "Osteoarthritis of knee"),
    (ICD, "M19", P, ["musculoskeletal"], "Other and unspecified osteoarthritis"),
    (ICD, "M47", P, ["musculoskeletal"], "Spondylosis"),
    (ICD, "M51", P, ["musculoskeletal"], "Thoracic, thoracolumbar and lumbosacral disc disorders"),
    (ICD, "M05", P, ["musculoskeletal"], "Rheumatoid arthritis with rheumatoid factor"),
    (ICD, "M06", P, ["musculoskeletal"], "Other rheumatoid arthritis"),
    (ICD, "M80", P, ["musculoskeletal"], "Osteoporosis with current pathological fracture"),
    (ICD, "M81", P, ["musculoskeletal"], "Osteoporosis without current pathological fracture"),
    (ICD, "M797", P, ["musculoskeletal"], "Fibromyalgia"),
    (ICD, "Z9664", P, ["musculoskeletal"], "Presence of artificial hip joint"),
    (ICD, "Z9665", P, ["musculoskeletal"], "Presence of artificial knee joint"),
    # Neurological (chapter 6): G20 Parkinson's, G30 Alzheimer's, G35 multiple sclerosis, G62-G63
    # polyneuropathy, G80 cerebral palsy, G12.21 ALS; stroke is above with cardiovascular.
    (ICD, "G20", P, ["neurological"], "Parkinson's disease"),
    (ICD, "G30", P, ["neurological"], "Alzheimer's disease"),
    (ICD, "G35", P, ["neurological"], "Multiple sclerosis"),
    (ICD, "G62", P, ["neurological"], "Other and unspecified polyneuropathies"),
    (ICD, "G63", P, ["neurological"], "Polyneuropathy in diseases classified elsewhere"),
    (ICD, "G80", P, ["neurological"], "Cerebral palsy"),
    (ICD, "G1221", E, ["neurological"], "Amyotrophic lateral sclerosis"),
    # Pregnancy: chapter 15 (O00-O9A), Z33 pregnant state, Z34 supervision of normal pregnancy, Z39
    # postpartum.
    (ICD, "O", P, ["pregnancy"], "Pregnancy, childbirth and the puerperium (O00-O9A)"),
    (ICD, "Z33", P, ["pregnancy"], "Pregnant state"),
    (ICD, "Z34", P, ["pregnancy"], "Encounter for supervision of normal pregnancy"),
    (ICD, "Z39", P, ["pregnancy"], "Encounter for maternal postpartum care and examination"),
    # Falls: Z91.81 history of falling, R29.6 repeated falls, R26 gait abnormalities, R54 age-related
    # debility, W00-W19 falls (external cause).
    (ICD, "Z9181", E, ["falls"], "History of falling"),
    (ICD, "R296", E, ["falls"], "Repeated falls"),
    (ICD, "R26", P, ["falls"], "Abnormalities of gait and mobility"),
    (ICD, "R54", E, ["falls"], "Age-related physical debility"),
    (ICD, "W0", P, ["falls"], "Falls W00-W09"),
    (ICD, "W1", P, ["falls"], "Falls W10-W19"),
    # Generally healthy and inactive: Z72.3 (the PA IG's Low Physical Activity condition), Z71.82 exercise
    # counselling, Z00.0 general adult examination.
    (ICD, "Z723", E, ["healthy"], "Lack of physical exercise"),
    (ICD, "Z7182", E, ["healthy"], "Exercise counseling"),
    (ICD, "Z000", P, ["healthy"], "Encounter for general adult medical examination"),
    # SNOMED CT concepts [SNOMED].
    (SCT, "22298006", E, ["cardiovascular"], "Myocardial infarction"),
    (SCT, "399211009", E, ["cardiovascular"], "History of myocardial infarction"),
    (SCT, "53741008", E, ["cardiovascular"], "Coronary arteriosclerosis"),
    (SCT, "414545008", E, ["cardiovascular"], "Ischemic heart disease"),
    (SCT, "84114007", E, ["cardiovascular"], "Heart failure"),
    (SCT, "49436004", E, ["cardiovascular"], "Atrial fibrillation"),
    (SCT, "230690007", E, ["cardiovascular", "neurological"], "Cerebrovascular accident"),
    (SCT, "38341003", E, ["hypertension"], "Hypertensive disorder"),
    (SCT, "59621000", E, ["hypertension"], "Essential hypertension"),
    (SCT, "73211009", E, ["metabolic"], "Diabetes mellitus"),
    (SCT, "44054006", E, ["metabolic"], "Diabetes mellitus type 2"),
    (SCT, "46635009", E, ["metabolic"], "Diabetes mellitus type 1"),
    (SCT, "714628002", E, ["metabolic"], "Prediabetes"),
    (SCT, "414916001", E, ["obesity"], "Obesity"),
    (SCT, "13645005", E, ["pulmonary"], "Chronic obstructive lung disease"),
    (SCT, "195967001", E, ["pulmonary"], "Asthma"),
    (SCT, "709044004", E, ["renal"], "Chronic kidney disease"),
    (SCT, "363346000", E, ["oncology"], "Malignant neoplastic disease"),
    (SCT, "254837009", E, ["oncology"], "Malignant neoplasm of breast"),
    (SCT, "279039007", E, ["musculoskeletal"], "Low back pain"),
    (SCT, "239873007", E, ["musculoskeletal"], "Osteoarthritis of knee"),
    (SCT, "239872002", E, ["musculoskeletal"], "Osteoarthritis of hip"),
    (SCT, "396275006", E, ["musculoskeletal"], "Osteoarthritis"),
    (SCT, "3723001", E, ["musculoskeletal"], "Arthritis"),
    (SCT, "69896004", E, ["musculoskeletal"], "Rheumatoid arthritis"),
    (SCT, "64859006", E, ["musculoskeletal"], "Osteoporosis"),
    (SCT, "49049000", E, ["neurological"], "Parkinson's disease"),
    (SCT, "24700007", E, ["neurological"], "Multiple sclerosis"),
    (SCT, "77386006", E, ["pregnancy"], "Pregnant"),
    (SCT, "129839007", E, ["falls"], "At risk for falls"),
    (SCT, "415510005", E, ["healthy"], "Sedentary lifestyle"),
]


def fill(apps, schema_editor):
    ConditionGroup = apps.get_model("network", "ConditionGroup")
    ConditionCodeMap = apps.get_model("network", "ConditionCodeMap")
    CredentialType = apps.get_model("network", "CredentialType")

    groups = {}
    for slug, name, cmr, tier, description in GROUPS:
        groups[slug], _ = ConditionGroup.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "cardiometabolic_renal": cmr,
                "min_risk_tier": tier,
                "description": description,
            },
        )
    for slug, name, issuer, group_slugs, tier, source in CREDENTIAL_TYPES:
        credential_type, _ = CredentialType.objects.update_or_create(
            slug=slug, defaults={"name": name, "issuer": issuer, "max_risk_tier": tier, "source": source}
        )
        credential_type.condition_groups.set([groups[g] for g in group_slugs])
    for system, code, match, group_slugs, display in CODE_MAPS:
        source = "ICD-10-CM 2024 tabular list" if system == ICD else "SNOMED CT International Edition"
        for g in group_slugs:
            ConditionCodeMap.objects.update_or_create(
                system=system,
                code=code,
                match=match,
                group=groups[g],
                defaults={"display": display, "source": source},
            )


def unfill(apps, schema_editor):
    apps.get_model("network", "ConditionCodeMap").objects.all().delete()
    apps.get_model("network", "CredentialType").objects.filter(credentials__isnull=True).delete()
    apps.get_model("network", "ConditionGroup").objects.filter(code_maps__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("network", "0002_qualification_offers_routing")]
    operations = [migrations.RunPython(fill, unfill)]
