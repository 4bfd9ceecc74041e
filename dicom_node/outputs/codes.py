"""Every coded concept the node writes into its outputs, in one place.

SNOMED CT and DCM codes were checked against DICOM part 16 (as generated into pydicom's concept
dictionaries) and NLM value sets; see docs/conformance.md. Concepts with no verified standard code use
the private coding scheme ``99DCMNODE`` (documented there and declared in each object's Coding Scheme
Identification Sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

PRIVATE_SCHEME = "99DCMNODE"
IHE_SCHEME = "99IHE"


def _code(value: str, scheme: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


@dataclass(frozen=True)
class FindingConcept:
    """One model label: its code, and a short name for captions and tracking identifiers."""

    label: str
    code: CodedConcept
    display: str
    short: str = ""  # abbreviation for series descriptions (64 characters), e.g. "SDH"
    parent: str = ""  # a sign of another label's finding (SIH's signs): reported only with that finding


# --- findings (one per model label) ---------------------------------------------------------------------
INTRACRANIAL_HEMORRHAGE = _code("1386000", "SCT", "Intracranial hemorrhage")
SUBDURAL_HEMORRHAGE = _code("35486000", "SCT", "Subdural intracranial hemorrhage")
SUBARACHNOID_HEMORRHAGE = _code("21454007", "SCT", "Subarachnoid intracranial hemorrhage")
VENTRICULAR_HEMORRHAGE = _code("23276006", "SCT", "Ventricular hemorrhage")
INTRAPARENCHYMAL_HEMORRHAGE = _code("449020009", "SCT", "Intraparenchymal hemorrhage of brain")
# No verified general SNOMED CT concept for epidural hemorrhage (traumatic and non-traumatic together)
# nor for spontaneous intracranial hypotension: private codes, documented in docs/conformance.md.
EPIDURAL_HEMORRHAGE = _code("DN-0001", PRIVATE_SCHEME, "Epidural intracranial hemorrhage")
SPONTANEOUS_INTRACRANIAL_HYPOTENSION = _code("DN-0002", PRIVATE_SCHEME, "Spontaneous intracranial hypotension")
# Cerebral microbleeds and the small-vessel-disease classes: no verified SNOMED CT concept in DICOM part 16
# (pydicom's concept dictionaries list none for microbleeds, CAA or CADASIL): private codes. DN-0007 is
# retired unused (it named "no small vessel disease", which the report states as every class Absent).
CEREBRAL_MICROBLEED = _code("DN-0003", PRIVATE_SCHEME, "Cerebral microbleed")
ARTERIOLOSCLEROTIC_SVD = _code("DN-0004", PRIVATE_SCHEME, "Arteriolosclerotic small vessel disease")
CEREBRAL_AMYLOID_ANGIOPATHY = _code("DN-0005", PRIVATE_SCHEME, "Cerebral amyloid angiopathy")
CADASIL = _code("DN-0006", PRIVATE_SCHEME, "CADASIL")
# The signs of SIH the localiser tells apart (the Bern score's): no verified SNOMED CT concept in DICOM part 16
# for any of them as an imaging sign: private codes.
PACHYMENINGEAL_ENHANCEMENT = _code("DN-0012", PRIVATE_SCHEME, "Pachymeningeal enhancement")
VENOUS_SINUS_ENGORGEMENT = _code("DN-0013", PRIVATE_SCHEME, "Venous sinus engorgement")
BRAIN_SAG = _code("DN-0014", PRIVATE_SCHEME, "Brain sag")
SUBDURAL_FLUID_COLLECTION = _code("DN-0015", PRIVATE_SCHEME, "Subdural fluid collection")

FINDINGS: dict[str, FindingConcept] = {
    c.label: c
    for c in (
        FindingConcept("any", INTRACRANIAL_HEMORRHAGE, "Intracranial hemorrhage", "ICH"),
        FindingConcept("epidural", EPIDURAL_HEMORRHAGE, "Epidural hemorrhage", "EDH"),
        FindingConcept("intraparenchymal", INTRAPARENCHYMAL_HEMORRHAGE, "Intraparenchymal hemorrhage", "IPH"),
        FindingConcept("intraventricular", VENTRICULAR_HEMORRHAGE, "Intraventricular hemorrhage", "IVH"),
        FindingConcept("subarachnoid", SUBARACHNOID_HEMORRHAGE, "Subarachnoid hemorrhage", "SAH"),
        FindingConcept("subdural", SUBDURAL_HEMORRHAGE, "Subdural hemorrhage", "SDH"),
        FindingConcept("sih", SPONTANEOUS_INTRACRANIAL_HYPOTENSION, "Spontaneous intracranial hypotension", "SIH"),
        FindingConcept("sih_pachymeningeal", PACHYMENINGEAL_ENHANCEMENT, "Pachymeningeal enhancement", "PME", "sih"),
        FindingConcept("sih_sinus", VENOUS_SINUS_ENGORGEMENT, "Venous sinus engorgement", "VSE", "sih"),
        FindingConcept("sih_sag", BRAIN_SAG, "Brain sag", "sag", "sih"),
        FindingConcept("sih_subdural", SUBDURAL_FLUID_COLLECTION, "Subdural fluid collection", "SDF", "sih"),
        FindingConcept("microbleeds", CEREBRAL_MICROBLEED, "Cerebral microbleeds", "CMB"),  # study level
        FindingConcept("microbleed", CEREBRAL_MICROBLEED, "Microbleed", "CMB"),  # one per bleed (instance 1..n)
        FindingConcept("asvd", ARTERIOLOSCLEROTIC_SVD, "Arteriolosclerotic SVD", "aSVD"),
        FindingConcept("caa", CEREBRAL_AMYLOID_ANGIOPATHY, "Cerebral amyloid angiopathy", "CAA"),
        FindingConcept("cadasil", CADASIL, "CADASIL", "CADASIL"),
    )
}

ICH_LABELS: tuple[str, ...] = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
SIH_LABELS: tuple[str, ...] = ("sih",)
# The signs of SIH (the generator draws them; a localiser may tell them apart), each a label "sih_<sign>"
SIH_SIGNS: tuple[str, ...] = ("pachymeningeal", "sinus", "sag", "subdural")


def sign_label(sign: str) -> str:
    """The label of one SIH sign, e.g. "sih_sag"; ValueError for a sign we have no code for."""
    label = f"sih_{sign}"
    if sign not in SIH_SIGNS:
        raise ValueError(f"unknown SIH sign {sign!r}; known: {', '.join(SIH_SIGNS)}")
    return label


def sign_named(text: str) -> str:
    """The SIH sign whose display name is `text` in any case ("brain sag" -> "sag"); "" for none."""
    return next((s for s in SIH_SIGNS if FINDINGS[sign_label(s)].display.lower() == text.lower()), "")

# --- segmentation (DICOM SEG): property category for lesions (CID 7150) --------------------------------------
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = _code("49755003", "SCT", "Morphologically abnormal structure")
ARTIFICIAL_INTELLIGENCE = _code("123110", "DCM", "Artificial Intelligence")  # algorithm family (CID 7162)

# --- CID 240 Present/Absent (plus Undetermined for "not analysed") ---------------------------------------
PRESENT = _code("52101004", "SCT", "Present")
ABSENT = _code("272519000", "SCT", "Absent")
UNDETERMINED = _code("373068000", "SCT", "Undetermined")

# --- report structure and items ----------------------------------------------------------------------------
IMAGING_MEASUREMENT_REPORT = _code("126000", "DCM", "Imaging Measurement Report")
PROBABILITY = _code("122157", "DCM", "Probability")
UNIT_PERCENT = _code("%", "UCUM", "percent")
UNIT_COUNT = _code("{count}", "UCUM", "count")
UNIT_MM = _code("mm", "UCUM", "millimeter")
DIAMETER = _code("81827009", "SCT", "Diameter")  # part 16 (CID 218, 7470)
MICROBLEED_COUNT = _code("DN-0008", PRIVATE_SCHEME, "Number of cerebral microbleeds")
LOBAR_MICROBLEED_COUNT = _code("DN-0009", PRIVATE_SCHEME, "Number of lobar cerebral microbleeds")
DEEP_MICROBLEED_COUNT = _code("DN-0010", PRIVATE_SCHEME, "Number of deep cerebral microbleeds")
FLAIR_WMH_FRACTION = _code("DN-0011", PRIVATE_SCHEME, "FLAIR white matter hyperintensity, share of brain tissue")
# Measurements a pipeline reports by key (`analysis.Measurement.concept`): concept and UCUM unit.
MEASUREMENTS: dict[str, tuple[CodedConcept, CodedConcept]] = {
    "diameter": (DIAMETER, UNIT_MM),
    "microbleed_count": (MICROBLEED_COUNT, UNIT_COUNT),
    "lobar_microbleed_count": (LOBAR_MICROBLEED_COUNT, UNIT_COUNT),
    "deep_microbleed_count": (DEEP_MICROBLEED_COUNT, UNIT_COUNT),
    "flair_wmh_fraction": (FLAIR_WMH_FRACTION, UNIT_PERCENT),
}
COMMENT = _code("121106", "DCM", "Comment")
IMPRESSION = _code("121073", "DCM", "Impression")
# TID 1500 row "Qualitative Evaluations" container (UMLS concept, as in DICOM part 16).
QUALITATIVE_EVALUATIONS = _code("C0034375", "UMLS", "Qualitative Evaluations")

# --- procedures reported (LOINC, from DICOM part 16 CID 646) -------------------------------------------------
PROCEDURE_HEAD_CT = _code("24725-4", "LN", "Head CT")
PROCEDURE_BRAIN_MR = _code("24590-2", "LN", "Brain MRI")

# --- contributing equipment purpose (IHE AIR trial-implementation placeholder) ------------------------------
PROCESSING_ALGORITHM = _code("Newcode1", IHE_SCHEME, "Processing Algorithm")


def finding_concept(label: str) -> FindingConcept:
    """The concept for a model label; ValueError for a label we have no code for."""
    try:
        return FINDINGS[label]
    except KeyError:
        raise ValueError(f"no coded concept for model label {label!r}; known: {sorted(FINDINGS)}") from None


def measurement(key: str) -> tuple[CodedConcept, CodedConcept]:
    """(concept, UCUM unit) of a measurement key (`analysis.Measurement.concept`); ValueError if unknown."""
    try:
        return MEASUREMENTS[key]
    except KeyError:
        raise ValueError(f"no coded concept for measurement {key!r}; known: {sorted(MEASUREMENTS)}") from None


def presence(present: bool | None) -> CodedConcept:
    """CID 240 value for a finding: Present, Absent, or Undetermined when it was not analysed."""
    if present is None:
        return UNDETERMINED
    return PRESENT if present else ABSENT


def labels_for_task(task: str, model_name: str = "") -> tuple[str, ...]:
    """The labels a task reports, used when an analysis has no findings (not analysed / failed)."""
    key = f"{task} {model_name}".lower()
    if "ich" in key:
        return ICH_LABELS
    if "sih" in key:
        return SIH_LABELS
    raise ValueError(f"unknown model task {task!r} (model {model_name!r}): cannot name its findings")


def procedure_for_modality(modality: str) -> CodedConcept:
    """Procedure Reported when the source carries no Procedure Code Sequence: the imaging procedure."""
    return PROCEDURE_BRAIN_MR if modality.upper() == "MR" else PROCEDURE_HEAD_CT


def coding_scheme_identification() -> list[Dataset]:
    """Items of the Coding Scheme Identification Sequence (0008,0110) for the non-standard schemes we use."""
    items = []
    for designator, name, org in (
        (PRIVATE_SCHEME, "dicom-node private codes (see docs/conformance.md)", "dicom-node project"),
        (IHE_SCHEME, "IHE Radiology AI Results trial implementation codes", "IHE"),
    ):
        item = Dataset()
        item.CodingSchemeDesignator = designator
        item.CodingSchemeName = name
        item.CodingSchemeResponsibleOrganization = org
        items.append(item)
    return items
