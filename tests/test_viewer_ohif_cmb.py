"""The microbleed report in a real viewer: OHIF 3.13.2 in headless Chromium over Orthanc + DICOMweb.

Two generated SWI studies (one with bleeds, one without) go into Orthanc, which routes them to `dicom-node
serve` with the shipped `cmb` demo model; the node stores its SR (and SEG, overlay) back. OHIF opens each
SR: the viewport shows an image (OHIF blanks it when a measurement group lacks a region), the text it draws
names the bleed ("Microbleed 1 (lobar)", PRESENT, its diameter in mm and probability in %) or, for the study
without bleeds, the study-level finding ABSENT, all inside the viewport, and nothing is logged as a render
failure. Screenshots stay in `test-output/ohif-cmb/`. Parts come from `scripts/setup`, as for
test_viewer_ohif (missing parts fail the test, never skip it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from conftest import REPO, free_port, wait_for, write_config
from e2e_helpers import CMB_DEMO_VERSION, ServeProcess, e2e_sections, node_status
from ohif_helpers import OhifServer, View, missing_parts, view_pages
from orthanc_helpers import OrthancServer

from dicom_node.synth.swi_study import SwiStudy, write_mr_swi_study

pytestmark = [pytest.mark.timeout(600)]

SEED = 4111  # the studies test_e2e_cmb_orthanc checks the counts of
OUTPUT = REPO / "test-output" / "ohif-cmb"
FAILURE_MESSAGES = ("Error Boundary", "ReferencedSOPSequence", "Something went wrong")
NUMBER = re.compile(r"\d+(\.\d+)?\s*(%|mm)")


def _sr_series(pacs: OrthancServer, study: SwiStudy) -> str:
    [found] = pacs.post("/tools/lookup", study.study_uid.encode())
    for series in pacs.get(f"/studies/{found['ID']}/series"):
        tags = series["MainDicomTags"]
        if tags.get("Modality") == "SR" and "CMB" in tags.get("SeriesDescription", ""):
            return str(tags["SeriesInstanceUID"])
    raise AssertionError(f"no CMB SR series in Orthanc for {study.study_uid}")


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, View]]:
    missing = missing_parts()
    if missing:
        pytest.fail("the real-viewer test needs " + "; ".join(missing) + ": run ./scripts/setup", pytrace=False)
    tmp = tmp_path_factory.mktemp("ohif-cmb")
    gen = tmp / "studies"
    studies = {"bleeds": write_mr_swi_study(gen, SEED, svd_class="caa", patient_index=2, n_slices=40),  # + T1/T2/FLAIR
               "none": write_mr_swi_study(gen, SEED, svd_class="none", patient_index=5, n_slices=24,
                                          distractors=False)}
    assert studies["bleeds"].bleeds and not studies["none"].bleeds
    node_port = free_port()
    pacs = OrthancServer(tmp / "orthanc", modalities={"NODE": ("DICOMNODE", "127.0.0.1", node_port)},
                         dicomweb=True)
    sections = e2e_sections(pacs.dicom_port, node={"port": node_port},
                            models={"enabled": [{"name": "cmb", "version": CMB_DEMO_VERSION}]})
    sections["destinations"] = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                 "port": pacs.dicom_port}]
    config = write_config(tmp, **sections)
    with pacs, ServeProcess(config, node_port, tmp / "serve.log"), OhifServer(pacs) as ohif:
        for study in studies.values():
            parents = {pacs.upload(f)["ParentStudy"] for f in study.files}
            job = pacs.post("/modalities/NODE/store", sorted(parents))
            assert job is None or not job.get("FailedInstancesCount"), job
        uids = {s.study_uid for s in studies.values()}
        wait_for(lambda: {s["study_uid"] for s in node_status(config) if s["state"] == "delivered"} >= uids,
                 timeout=300, interval=0.5, msg="the node delivered both SWI studies to Orthanc")
        if OUTPUT.exists():
            shutil.rmtree(OUTPUT)
        pages = {name: (ohif.viewer_url(s.study_uid, _sr_series(pacs, s)), OUTPUT / f"sr-{name}.png")
                 for name, s in studies.items()}
        yield dict(zip(pages, view_pages(list(pages.values())), strict=True))


@pytest.mark.parametrize(("name", "words", "verdict"), [("bleeds", ("Microbleed 1 (",), "PRESENT"),
                                                        ("none", ("microbleeds",), "ABSENT")])
def test_ohif_shows_the_microbleed_report(views: dict[str, View], name: str, words: tuple[str, ...],
                                          verdict: str) -> None:
    view = views[name]
    failures = view.console_matching(*FAILURE_MESSAGES)
    assert not failures, "OHIF could not display the SR:\n" + "\n".join(failures[:10]) + f"\n{view.describe()}"
    assert not view.blank, f"the viewport is blank\n{view.describe()}"
    assert view.viewport is not None
    text = "\n".join(t.text for t in view.annotations)
    assert all(w.lower() in text.lower() for w in words), f"no {words} on screen\n{view.describe()}"
    assert verdict in text, f"no {verdict} on screen\n{view.describe()}"
    if name == "bleeds":
        assert NUMBER.search(text) and "mm" in text, f"no diameter in mm on screen\n{view.describe()}"
    # every group shows its probability as a number (OHIF prints a NUM of 0 as "Probability:  %")
    assert re.search(r"Probability: \d+(\.\d+)? %", text), f"no probability figure on screen\n{view.describe()}"
    outside = [t for t in view.annotations if not t.box.inside(view.viewport)]
    assert not outside, f"SR text not entirely inside the viewport {view.viewport}: {outside}\n{view.describe()}"


def test_ohif_asks_nothing_of_other_origins(views: dict[str, View]) -> None:
    for name, view in views.items():
        assert view.off_origin == [], f"{name}: requests outside {view.url}: {view.off_origin}"
