"""Every real study in ../shared/data that reaches a running node gets its reports at the PACS, and every
object we write for it is valid: the old GE head CT without PatientBirthDate/PatientSex, the
de-identified CQ500 slice (PatientIdentityRemoved YES, no method), the NEMA Toshiba CT, real MR series.

One `dicom-node serve` (the default config's three demo models: ICH, SIH, microbleeds; CPU) with DCMTK
storescp as the PACS; studies sent with storescu. Each MR study gets an SIH and a microbleed report (none of
these real series is an SWI, so the latter says why it was not analysed).
Path from DICOM_NODE_SHARED_DATA, default <repo>/../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import (
    CMB_DEMO_VERSION,
    DEMO_MODELS,
    SR_CLASS,
    CollectingSCP,
    ServeProcess,
    e2e_sections,
    storescu,
)
from shared_data import DATA, require_data

from dicom_node.config import load_config
from dicom_node.outputs.readback import sr_findings, sr_text
from dicom_node.outputs.validate import dciodvfy_errors, dsrdump

pytestmark = [pytest.mark.shared_data, pytest.mark.timeout(600)]


# (study folder, files, models expected to answer). One encoding of each single-instance NEMA/CQ500 file:
# the other files in those folders are the same SOP instance in other transfer syntaxes.
STUDIES = {
    "ge-no-birth-date": ("head_ct/ge_hispeed_head_gantry_tilt_series", "*.dcm", {"ICH"}),
    "cq500-deidentified": ("head_ct/cq500_ct310_ich_single_slice", "693_UNCI.dcm", {"ICH"}),
    "nema-toshiba-ct": ("head_ct/nema_wg04_ct2_toshiba_head_slice", "CT2_UNC.dcm", {"ICH"}),
    "philips-mr-survey": ("brain_mr/philips_head_survey_j2k", "*.dcm", {"SIH", "CMB"}),
    "siemens-mr-loc": ("brain_mr/siemens_head_loc_mpr_cor_jpegll", "*.dcm", {"SIH", "CMB"}),
}
# storescu proposes uncompressed syntaxes only unless told: JPEG 2000 lossless, JPEG lossless SV1
PROPOSE = {"philips-mr-survey": ("-xv",), "siemens-mr-loc": ("-xs",)}

require_data()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[pydicom.Dataset]]:
    """Every object the PACS received, per study key, after the node answered every study."""
    tmp = tmp_path_factory.mktemp("shared-reports")
    uids: dict[str, str] = {}
    names: set[str] = set()
    with CollectingSCP(tmp / "pacs") as pacs:
        models = {"enabled": [*DEMO_MODELS, {"name": "cmb", "version": CMB_DEMO_VERSION}]}
        config = load_config(write_config(tmp, **e2e_sections(pacs.port, models=models)))
        with ServeProcess(config.source, config.node.port, tmp / "serve.log"):  # type: ignore[arg-type]
            for key, (folder, pattern, _models) in STUDIES.items():
                files = sorted((DATA / folder).glob(pattern))
                assert files, f"{folder}/{pattern} is missing from {DATA}"
                header = pydicom.dcmread(files[0], stop_before_pixels=True)
                uids[key] = str(header.StudyInstanceUID)
                names.add(str(header.get("PatientName", "")))
                storescu(config.node.port, files, "STORESCU", *PROPOSE.get(key, ()))

            def answered() -> bool:  # every model that reads the study's modality has answered
                got = [(str(ds.StudyInstanceUID), str(ds.SeriesDescription).split(":")[0])
                       for ds in pacs.received() if ds.SOPClassUID == SR_CLASS]
                return all((uid, f"AI {m}") in got for key, uid in uids.items() for m in STUDIES[key][2])

            wait_for(answered, timeout=300, interval=0.5, msg="an SR at the PACS for every shared study")
        received = pacs.received()
    log = (tmp / "serve.log").read_text(errors="replace")
    for name in filter(None, names):  # at INFO, library warnings included ("REMOVED" is CQ500's)
        assert name not in log, f"patient name {name!r} in the serve log"
    return {key: [ds for ds in received if str(ds.StudyInstanceUID) == uid] for key, uid in uids.items()}


@pytest.mark.parametrize("key", list(STUDIES))
def test_every_real_study_is_answered_with_valid_objects(reports: dict[str, list[pydicom.Dataset]], key: str) -> None:
    objects = reports[key]
    srs = [pydicom.dcmread(ds.filename) for ds in objects if ds.SOPClassUID == SR_CLASS]
    assert {str(sr.SeriesDescription).split(":")[0].removeprefix("AI ") for sr in srs} == STUDIES[key][2]
    for ds in objects:
        assert dciodvfy_errors(Path(ds.filename)) == [], (key, ds.SeriesDescription)
    for sr in srs:
        assert dsrdump(Path(sr.filename)).returncode == 0
        findings = sr_findings(sr)
        assert findings and all(f.presence in ("Present", "Absent", "Undetermined") for f in findings)
        if all(f.presence == "Undetermined" for f in findings):  # not analysed: the reason is stated
            assert any(t.startswith(("Not analysed: ", "Analysis failed: ")) for t in sr_text(sr))
        if sr.SeriesDescription.startswith("AI CMB"):  # no real SWI here: each series named with its reason
            assert sr.SeriesDescription.startswith("AI CMB: NOT ANALYSED")
            assert any(t.startswith("Not analysed: no SWI series") and "series " in t.split(":", 2)[2]
                       for t in sr_text(sr)), sr_text(sr)


def test_the_ge_series_without_birth_date_gets_its_report(reports: dict[str, list[pydicom.Dataset]]) -> None:
    (sr,) = [pydicom.dcmread(ds.filename) for ds in reports["ge-no-birth-date"] if ds.SOPClassUID == SR_CLASS]
    assert sr.PatientBirthDate == "" and sr.PatientSex == ""
    assert sr.SeriesDescription.startswith(("AI ICH: PRESENT", "AI ICH: ABSENT", "AI ICH: NOT ANALYSED"))


def test_a_deidentified_study_says_so_in_every_output(reports: dict[str, list[pydicom.Dataset]]) -> None:
    for ds in reports["cq500-deidentified"]:
        full = pydicom.dcmread(ds.filename, stop_before_pixels=True)
        assert full.PatientIdentityRemoved == "YES"
        assert full.get("DeidentificationMethod") or full.get("DeidentificationMethodCodeSequence")
