"""Selection rules against a table of real vendor series descriptions and headers (GE, Siemens, Philips,
Canon; CT and MR; with and without contrast; scouts, bone kernels, dose reports, MPR/3D), with the
decision each must get from the rules the shipped manifests declare; then every CT/MR file of the
`pydicom-data` package, and the rules' overrides through config.toml and the manifest.

A decision is "ich" (the ICH model reads the series), "axial"/"coronal" (the SIH model reads it as its
axial or coronal post-contrast T1), or a fragment of the reason the series is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import data_store
import pytest
from conftest import REPO, write_config
from ml_helpers import CORONAL, MR, SC, decide, series, shipped_manifest

from dicom_node.config import load_config
from dicom_node.errors import ConfigError, ModelError
from dicom_node.ml.analysis import InstanceRef
from dicom_node.ml.datasets import scan_dicom
from dicom_node.ml.device import choose_device
from dicom_node.ml.manifest import load_manifest
from dicom_node.ml.registry import load_pipeline
from dicom_node.ml.rules import Contrast
from dicom_node.ml.selection import DEFAULT_RULES, group_series, has_contrast, reject_reason, select_series

MODELS = REPO / "models"
ICH, SIH = shipped_manifest("ich"), shipped_manifest("sih")
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
LOCALIZER = ("ORIGINAL", "PRIMARY", "LOCALIZER")
TILT_18 = (1.0, 0.0, 0.0, 0.0, math.cos(math.radians(18.5)), -math.sin(math.radians(18.5)))


# (vendor, SeriesDescription, other header values, decision)
CT_TABLE: list[tuple[str, str, dict[str, object], str]] = [
    ("GE", "HEAD WO", {"convolution_kernel": "STANDARD"}, "ich"),
    ("GE", "CT HEAD WO CONTRAST", {"convolution_kernel": "STANDARD"}, "ich"),
    ("GE", "HEAD NO CONTRAST", {"convolution_kernel": "SOFT"}, "ich"),
    ("GE", "Head C-", {"convolution_kernel": "STANDARD"}, "ich"),
    ("GE", "Post Fossa 2.5mm", {"convolution_kernel": "SOFT", "slice_thickness": 2.5}, "ich"),
    ("GE", "HEAD POST OP", {"convolution_kernel": "STANDARD"}, "ich"),
    ("GE", "Head Routine 5mm STND", {"convolution_kernel": "STANDARD", "image_orientation": TILT_18}, "ich"),
    ("GE", "Scout", {"image_type": LOCALIZER}, "ImageType contains LOCALIZER"),
    ("GE", "BONE 1.25mm", {"convolution_kernel": "BONEPLUS", "slice_thickness": 1.25}, "excluded pattern"),
    ("GE", "Head 5mm", {"convolution_kernel": "BONEPLUS"}, "bone/sharp kernel"),
    ("GE", "Dose Report", {"sop_class_uid": SC, "image_type": ("DERIVED", "SECONDARY", "SCREEN SAVE")},
     "ImageType contains"),
    ("GE", "HEAD W CONTRAST", {"convolution_kernel": "STANDARD"}, "contrast given"),
    ("GE", "Head C+", {"convolution_kernel": "STANDARD"}, "contrast given"),
    ("GE", "Reformatted COR", {"image_type": ("DERIVED", "SECONDARY", "REFORMATTED"), "image_orientation": CORONAL},
     "ImageType contains"),
    ("GE", "CTA HEAD", {"contrast_agent": "OMNIPAQUE 350", "slice_thickness": 0.625}, "excluded pattern"),
    ("GE", "CT PERFUSION", {"image_type": ("ORIGINAL", "PRIMARY", "AXIAL")}, "excluded pattern"),
    ("Siemens", "Head 5.0 H30s", {"convolution_kernel": "H30s"}, "ich"),
    ("Siemens", "Head 4.0 Hr38 3", {"convolution_kernel": "Hr38", "slice_thickness": 4.0}, "ich"),
    ("Siemens", "KOPF NATIV 5.0 H31s", {"convolution_kernel": "H31s"}, "ich"),
    ("Siemens", "Topogram 0.6 T20s", {"image_type": LOCALIZER, "convolution_kernel": "T20s"}, "LOCALIZER"),
    ("Siemens", "Head 2.0 H70h", {"convolution_kernel": "H70h", "slice_thickness": 2.0}, "bone/sharp kernel"),
    ("Siemens", "Head 0.75 Hr64h", {"convolution_kernel": "Hr64h", "slice_thickness": 0.75}, "bone/sharp kernel"),
    ("Siemens", "Patient Protocol", {"sop_class_uid": SC, "image_type": ("DERIVED", "SECONDARY", "OTHER")},
     "ImageType contains"),
    ("Siemens", "Kopf KM 5.0 H31s", {"convolution_kernel": "H31s"}, "contrast given"),
    ("Siemens", "MPR Sag", {"image_type": ("DERIVED", "SECONDARY", "MPR"), "image_orientation": SAGITTAL},
     "ImageType contains"),
    ("Siemens", "MIP 10mm", {"slice_thickness": 10.0}, "excluded pattern"),
    ("Siemens", "VRT Schaedel", {"image_type": ("DERIVED", "SECONDARY", "VOLUME RENDER")}, "ImageType contains"),
    ("Philips", "Brain 5mm", {"convolution_kernel": "UB"}, "ich"),
    ("Philips", "Brain W/O", {"convolution_kernel": "UB"}, "ich"),
    ("Philips", "iDose (3) Brain 5mm", {"convolution_kernel": "UB"}, "ich"),
    ("Philips", "Surview", {"image_type": LOCALIZER}, "LOCALIZER"),
    ("Philips", "Brain 1mm", {"convolution_kernel": "YC", "slice_thickness": 1.0}, "bone/sharp kernel"),
    ("Philips", "Dose Info", {"sop_class_uid": SC, "image_type": ("DERIVED", "SECONDARY", "DOSE INFO")},
     "ImageType contains"),
    ("Philips", "Brain + C", {"convolution_kernel": "UB"}, "contrast given"),
    ("Philips", "Brain 5mm", {"convolution_kernel": "UB", "contrast_agent": "Ultravist 370"}, "contrast given"),
    ("Canon", "Head 5.0 FC21 AIDR 3D", {"convolution_kernel": "FC21"}, "ich"),
    ("Canon", "Brain 5.0 FC26 AIDR 3D Enhanced", {"convolution_kernel": "FC26"}, "ich"),
    ("Canon", "HEAD SIN CONTRASTE", {"convolution_kernel": "FC21"}, "ich"),
    ("Canon", "Scanogram", {"image_type": LOCALIZER}, "LOCALIZER"),
    ("Canon", "Head 0.5 FC30", {"convolution_kernel": "FC30", "slice_thickness": 0.5}, "bone/sharp kernel"),
    ("Canon", "Head 5.0 (+C)", {"convolution_kernel": "FC21"}, "contrast given"),
    ("any", "Head 12mm", {"slice_thickness": 12.0}, "slice thickness 12"),
    ("any", "Head 5mm", {"body_part": "CHEST"}, "body part CHEST"),
]

_MR = {"modality": "MR", "sop_class_uid": MR, "convolution_kernel": "", "body_part": "HEAD",
       "image_type": ("ORIGINAL", "PRIMARY", "M", "ND")}
COR: dict[str, object] = {"image_orientation": CORONAL}
THIN: dict[str, object] = {"slice_thickness": 1.0}
MR_TABLE: list[tuple[str, str, dict[str, object], str]] = [
    ("Siemens", "t1_mprage_tra_Gd", THIN, "axial"),
    ("Siemens", "t1_se_cor_post", COR, "coronal"),
    ("Siemens", "T1_POST", {}, "axial"),
    ("Siemens", "T1_CE", {}, "axial"),
    ("Siemens", "t1_se_tra_KM", {}, "axial"),
    ("Siemens", "t1_mprage_tra_Gd", {**THIN, "image_type": ("DERIVED", "PRIMARY", "M", "ND", "NORM", "DIS2D")}, "axial"),
    ("Siemens", "t1_se_tra", {}, "no contrast agent"),
    ("Siemens", "t1_se_tra", {"contrast_agent": "Gadovist"}, "axial"),
    ("Siemens", "t1_mprage_sag_p2_iso", {**THIN, "image_orientation": SAGITTAL}, "orientation is sagittal"),
    ("Siemens", "t2_tse_tra", {}, "matches none"),
    ("Siemens", "t2_tirm_tra_dark-fluid", {}, "matches none"),
    ("Siemens", "ep2d_diff_3scan_trace_p2", {}, "matches none"),
    ("Siemens", "AAHead_Scout_64ch-head-coil", {}, "matches none"),
    ("Siemens", "t1_mprage_tra_Gd_MPR_cor", {"image_type": ("DERIVED", "SECONDARY", "MPR"), **COR}, "ImageType contains"),
    ("Siemens", "t1_fl3d_tra_SUB", {"image_type": ("DERIVED", "PRIMARY", "M", "SUB")}, "ImageType contains SUB"),
    ("GE", "AX T1 FLAIR +C", {}, "axial"),
    ("GE", "COR T1 +C", COR, "coronal"),
    ("GE", "T1+C", {}, "axial"),
    ("GE", "T1 C+ COR", COR, "coronal"),
    ("GE", "AX BRAVO +C", THIN, "axial"),
    ("GE", "AX T1 POST", {}, "axial"),
    ("GE", "AX T1 FLAIR", {}, "no contrast agent"),
    ("GE", "AX T1 PRE", {}, "excluded pattern"),
    ("GE", "Ax T2 FLAIR", {}, "matches none"),
    ("GE", "AX FLAIR +C", {}, "matches none"),
    ("GE", "SAG T1 BRAVO +C", {**THIN, "image_orientation": SAGITTAL}, "orientation is sagittal"),
    ("GE", "AX SWAN", {}, "matches none"),
    ("GE", "3-PLANE LOC", {"image_type": LOCALIZER}, "ImageType contains LOCALIZER"),
    ("Philips", "T1W_3D_TFE +C", THIN, "axial"),
    ("Philips", "T1W_3D_TFE_CE", THIN, "axial"),
    ("Philips", "T1W_SE_GD", {}, "axial"),
    ("Philips", "T1W_TSE_COR_GD", COR, "coronal"),
    ("Philips", "sT1W_3D_TFE", THIN, "no contrast agent"),
    ("Philips", "T2W_FLAIR", {}, "matches none"),
    ("Philips", "Survey_MST", {}, "matches none"),
    ("Philips", "DWI_SENSE", {}, "matches none"),
    ("Canon", "T1 AX SE +C", {}, "axial"),
    ("Canon", "T1_FLAIR_COR_GD", COR, "coronal"),
    ("Canon", "T1 MPRAGE POST GAD", THIN, "axial"),
    ("Canon", "T2 FLAIR AX", {}, "matches none"),
    ("Canon", "T1 SE AX", {"slice_thickness": 8.0, "contrast_agent": "Gadovist"}, "slice thickness 8"),
]


@pytest.mark.parametrize(("vendor", "description", "header", "expected"), CT_TABLE + MR_TABLE,
                         ids=[f"{v}:{d}" for v, d, _h, _e in CT_TABLE + MR_TABLE])
def test_vendor_description_table(vendor: str, description: str, header: dict[str, object], expected: str) -> None:
    base = _MR if (vendor, description, header, expected) in MR_TABLE else {}
    refs = series(f"9.{abs(hash(description)) % 10_000}", 20, **{**base, "series_description": description, **header})
    got = decide(refs)
    assert expected in got, f"{vendor} {description!r}: {got}"


@pytest.mark.parametrize(
    ("description", "contrast"),
    [
        ("CT HEAD WO CONTRAST", False), ("HEAD NO CONTRAST", False), ("HEAD NON-CONTRAST", False),
        ("HEAD W/O", False), ("Head C-", False), ("T1 pre contrast", False), ("KOPF NATIV", False),
        ("HEAD SIN CONTRASTE", False), ("Post Fossa 2.5mm", False), ("HEAD POST OP", False),
        ("AIDR 3D Enhanced", False), ("iDose (3)", False), ("T1 AX", False),
        ("t1_mprage_tra_Gd", True), ("T1_POST", True), ("T1_CE", True), ("AX T1 FLAIR +C", True),
        ("T1 MPRAGE POST GAD", True), ("T1+C", True), ("T1 C+", True), ("T1 post Gd", True),
        ("HEAD W CONTRAST", True), ("Kopf KM", True), ("T1 MPRAGE +C", True), ("T1_postGd", True),
    ],
)
def test_contrast_words(description: str, contrast: bool) -> None:
    assert has_contrast(series("1.1", 1, series_description=description)[0]) is contrast


# Every CT/MR series among pydicom-data's files (one series per SeriesInstanceUID, headers as stored).
PYDICOM_DATA = Path(data_store.__file__).parent / "data"
PYDICOM_DATA_DECISIONS = {
    # CQ500 head CT slice in three encodings, "5/5mm Plain": a non-contrast head CT, but one slice
    "693_J2KR.dcm": "fewer than 8",
    "MR-SIEMENS-DICOM-WithOverlays.dcm": "ImageType contains MPR/SECONDARY",  # abdominal MPR
    "MR2_J2KI.dcm": "matches none",  # SE MR without a description
    "bad_sequence.dcm": "body part NECK",
    "eCT_Supplemental.dcm": "SOP class 1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT (multi-frame)
    "emri_small.dcm": "SOP class 1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR (multi-frame)
    "explicit_VR-UN.dcm": "body part PANCREAS",
}


def test_every_pydicom_data_ct_and_mr_series_gets_its_decision() -> None:
    refs = [r for r in scan_dicom(PYDICOM_DATA) if r.modality in ("CT", "MR")]
    got = {}
    for group in group_series(refs).values():
        first = min(Path(r.path).name for r in group)
        got[first] = decide(group)
    assert set(got) == set(PYDICOM_DATA_DECISIONS), "a series was added or removed: give it a decision"
    wrong = {k: v for k, v in got.items() if PYDICOM_DATA_DECISIONS[k] not in v}
    assert not wrong, wrong
    # the CQ500 slice's header, as a whole 5 mm series, is read as the non-contrast head CT it is
    cq500 = next(r for r in refs if Path(r.path).name == "693_J2KR.dcm")
    whole = [InstanceRef(**{**cq500.__dict__, "sop_instance_uid": f"{cq500.sop_instance_uid}.{i}",
                            "image_position": (0.0, 0.0, 5.0 * i)}) for i in range(30)]
    assert decide(whole) == "ich"


def test_shipped_manifests_declare_their_rules() -> None:
    for manifest in (ICH, SIH):
        assert set(manifest.raw["selection"]) == set(DEFAULT_RULES[manifest.task])
        assert manifest.rules == DEFAULT_RULES[manifest.task]
    assert ICH.rules["series"].contrast is Contrast.ABSENT and ICH.rules["series"].preferred_thickness_mm == 5.0


def _enabled(**rules: object) -> dict[str, object]:
    return {"path": str(MODELS), "enabled": [{"name": "ich", "version": "0.1.0-synthetic-demo", "rules": rules}]}


def test_site_override_in_config_changes_selection(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, models=_enabled(series={
        "preferred_thickness_mm": 0.625, "description_exclude": ["scout", "bone", "research"]})))
    override = config.models.enabled[0].rules["series"]
    assert override == {"preferred_thickness_mm": 0.625, "description_exclude": ("scout", "bone", "research")}
    rule = ICH.rules["series"].replace(**override)
    thin = series("1.1", 200, slice_thickness=0.625)
    thick = series("1.2", 30, slice_thickness=5.0)
    assert select_series(thin + thick, ICH.rules["series"])[0].series_uid == "1.2"
    assert select_series(thin + thick, rule)[0].series_uid == "1.1"
    assert "excluded pattern 'research'" in (reject_reason(rule, series("1.3", 30, series_description="RESEARCH")) or "")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"series": {"contrast": "abesnt"}}, "models.enabled[0].rules.series.contrast: must be one of absent, present, any"),
        ({"series": {"orientation": "axail"}}, "models.enabled[0].rules.series.orientation: must be one of axial"),
        ({"series": {"descripton_exclude": ["x"]}}, "models.enabled[0].rules.series.descripton_exclude: unknown key"),
        ({"series": {"description_exclude": ["(unclosed"]}},
         "models.enabled[0].rules.series.description_exclude: '(unclosed' is not a valid regular expression"),
        ({"series": {"slice_thickness_mm": [5, 1]}}, "models.enabled[0].rules.series.slice_thickness_mm: must be"),
        ({"series": {"min_images": 0}}, "models.enabled[0].rules.series.min_images: must be an integer >= 1"),
        ({"series": "axial"}, "models.enabled[0].rules.series: must be a table"),
    ],
)
def test_config_check_names_the_bad_rule_key(tmp_path: Path, rules: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, models=_enabled(**rules)))
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_manifest_rule_typo_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ich" / "0.1.0-synthetic-demo"
    folder.mkdir(parents=True)
    text = (MODELS / "ich" / "0.1.0-synthetic-demo" / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text.replace('"contrast": "absent"', '"contrast": "abesnt"'))
    with pytest.raises(ModelError, match=r"selection\.series\.contrast: must be one of absent, present, any"):
        load_manifest(folder)


def test_loaded_pipeline_uses_the_site_rules_and_refuses_unknown_rule_names() -> None:
    cpu = choose_device("cpu", 1)
    pipeline = load_pipeline(MODELS, "ich", "0.1.0-synthetic-demo", cpu,
                             rules={"series": {"preferred_thickness_mm": 0.625}})
    assert pipeline.rules["series"].preferred_thickness_mm == 0.625
    assert pipeline.rules["series"].replace(preferred_thickness_mm=5.0) == ICH.rules["series"]
    with pytest.raises(ModelError, match=r"rules for \['axial'\] but model ich .* has the selection rules \['series'\]"):
        load_pipeline(MODELS, "ich", "0.1.0-synthetic-demo", cpu, rules={"axial": {"min_images": 3}})
