"""What the radiologist sees, in a real viewer: OHIF 3.13.2 in headless Chromium over Orthanc + DICOMweb.

Generated studies (a head CT with a subdural hemorrhage, a normal head CT, a brain MR with SIH signs) go
into Orthanc, which routes them to `dicom-node serve` (`/modalities/NODE/store`); the node stores its SR
and overlays back into Orthanc. OHIF, served from one origin with `/dicom-web` proxied to that Orthanc,
opens each SR, the positive CT's overlay and the SIH study's SEG, and the tests assert on what is on
screen: an image in the viewport, the finding with PRESENT/ABSENT and its probability in the text OHIF
draws for the SR (for SIH also the sign under the mark), all of that text inside the viewport, the SEG's
segments listed by name once it is loaded, and no render failure logged at any console level.
Screenshots stay in `test-output/ohif/`.

Every part comes from `scripts/setup` (Debian chromium and orthanc-dicomweb, npm @ohif/app and
playwright-core); a missing part fails the tests with what to run, it never skips them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import REPO, free_port, wait_for, write_config
from e2e_helpers import ServeProcess, e2e_sections, node_status
from ohif_helpers import OhifServer, View, missing_parts, view_pages
from orthanc_helpers import OrthancServer

from dicom_node.outputs.codes import finding_concept, sign_label
from dicom_node.synth import SynthStudy, write_ct_head_study, write_mr_sih_study

pytestmark = [pytest.mark.timeout(600)]

SEED = 4101  # the studies test_e2e_orthanc checks the verdicts of
OUTPUT = REPO / "test-output" / "ohif"
# OHIF logs these (at debug/log level, not only as errors) when it cannot display an SR.
FAILURE_MESSAGES = ("Error Boundary", "ReferencedSOPSequence", "Something went wrong")
PROBABILITY = re.compile(r"\d+(\.\d+)?\s*%")


@dataclass
class Case:
    name: str
    study: SynthStudy
    finding: tuple[str, ...]  # any of these words names the finding on screen
    verdict: str  # PRESENT or ABSENT
    marks: tuple[str, ...] = ()  # one of these must be on screen too (SIH: "Mark: <a sign the study shows>")
    sr_series: str = ""
    overlay_series: tuple[str, ...] = ()
    seg_series: str = ""


@dataclass
class Viewed:
    cases: dict[str, Case]
    views: dict[str, View]


def _series_by_modality(pacs: OrthancServer, study: SynthStudy) -> dict[str, list[str]]:
    """The series the node added to `study` in Orthanc (not the generated ones), by modality."""
    [found] = pacs.post("/tools/lookup", study.study_uid.encode())
    orthanc_id = found["ID"]
    added: dict[str, list[str]] = {}
    for series in pacs.get(f"/studies/{orthanc_id}/series"):
        tags = series["MainDicomTags"]
        if tags["SeriesInstanceUID"] not in study.series_uids.values():
            added.setdefault(tags.get("Modality", ""), []).append(tags["SeriesInstanceUID"])
    return added


@pytest.fixture(scope="module")
def viewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewed]:
    missing = missing_parts()
    if missing:
        pytest.fail("the real-viewer test needs " + "; ".join(missing) + ": run ./scripts/setup", pytrace=False)
    tmp = tmp_path_factory.mktemp("ohif")
    gen = tmp / "studies"
    cases = {
        "ct-subdural": Case("ct-subdural", write_ct_head_study(gen, SEED, ("subdural",), n_slices=32, size=256),
                            ("hemorrhage", "subdural"), "PRESENT"),
        "ct-normal": Case("ct-normal", write_ct_head_study(gen, SEED, (), n_slices=32, size=256, patient_index=1),
                          ("hemorrhage",), "ABSENT"),
        "mr-sih": Case("mr-sih", write_mr_sih_study(gen, SEED, sih=True, patient_index=2), ("hypotension",),
                       "PRESENT"),
    }
    sih = cases["mr-sih"]
    sih.marks = tuple(f"Mark: {finding_concept(sign_label(s)).display.lower()}" for s in sih.study.findings)
    node_port = free_port()
    pacs = OrthancServer(tmp / "orthanc", modalities={"NODE": ("DICOMNODE", "127.0.0.1", node_port)},
                         dicomweb=True)
    sections = e2e_sections(pacs.dicom_port, node={"port": node_port})
    sections["destinations"] = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                 "port": pacs.dicom_port}]
    config = write_config(tmp, **sections)
    with pacs, ServeProcess(config, node_port, tmp / "serve.log"), OhifServer(pacs) as ohif:
        for case in cases.values():
            parents = {pacs.upload(f)["ParentStudy"] for f in case.study.files}
            job = pacs.post("/modalities/NODE/store", sorted(parents))
            assert job is None or not job.get("FailedInstancesCount"), job
        uids = {c.study.study_uid for c in cases.values()}
        wait_for(lambda: {s["study_uid"] for s in node_status(config) if s["state"] == "delivered"} >= uids,
                 timeout=240, interval=0.5, msg="the node delivered all three studies to Orthanc")
        for case in cases.values():
            added = _series_by_modality(pacs, case.study)
            assert len(added.get("SR", [])) == 1, f"{case.name}: series added in Orthanc: {added}"
            case.sr_series = added["SR"][0]
            case.overlay_series = tuple(uid for modality, series in added.items() if modality not in ("SR", "SEG")
                                        for uid in series)
            case.seg_series = next(iter(added.get("SEG", [])), "")
        assert cases["ct-subdural"].overlay_series, "the positive CT got no overlay series"

        if OUTPUT.exists():
            shutil.rmtree(OUTPUT)
        pages = {f"sr-{c.name}": (ohif.viewer_url(c.study.study_uid, c.sr_series), OUTPUT / f"sr-{c.name}.png")
                 for c in cases.values()}
        positive = cases["ct-subdural"]
        pages["overlay-ct-subdural"] = (ohif.viewer_url(positive.study.study_uid, positive.overlay_series[0]),
                                        OUTPUT / "overlay-ct-subdural.png")
        sih = cases["mr-sih"]
        assert sih.seg_series, "the SIH-positive MR got no SEG"
        pages["seg-mr-sih"] = (ohif.viewer_url(sih.study.study_uid, sih.seg_series), OUTPUT / "seg-mr-sih.png",
                               ['text="Yes"', '[data-cy="panelSegmentation-btn"]'])  # load it, list its segments
        views = view_pages(list(pages.values()))
        yield Viewed(cases, dict(zip(pages, views, strict=True)))


@pytest.mark.parametrize("name", ["ct-subdural", "ct-normal", "mr-sih"])
def test_ohif_shows_the_sr(viewed: Viewed, name: str) -> None:
    case, view = viewed.cases[name], viewed.views[f"sr-{name}"]
    failures = view.console_matching(*FAILURE_MESSAGES)
    assert not failures, "OHIF could not display the SR:\n" + "\n".join(failures[:10]) + f"\n{view.describe()}"
    assert not view.blank, f"the viewport is blank\n{view.describe()}"
    assert view.viewport is not None
    # What the SR itself puts on screen: the annotation text OHIF draws next to its region.
    drawn = view.annotations
    text = "\n".join(t.text for t in drawn)
    assert any(word in text.lower() for word in case.finding), f"no {case.finding} on screen\n{view.describe()}"
    assert case.verdict in text, f"no {case.verdict} on screen\n{view.describe()}"
    assert PROBABILITY.search(text), f"no probability in % on screen\n{view.describe()}"
    if case.marks:  # the report names the sign under its mark, and it is one the study shows
        assert any(m in text for m in case.marks), f"none of {case.marks} on screen\n{view.describe()}"
    outside = [t for t in drawn if not t.box.inside(view.viewport)]
    assert not outside, f"SR text not entirely inside the viewport {view.viewport}: {outside}\n{view.describe()}"


def test_ohif_asks_nothing_of_other_origins(viewed: Viewed) -> None:
    for name, view in viewed.views.items():
        assert view.off_origin == [], f"{name}: requests outside {view.url}: {view.off_origin}"


def test_ohif_shows_the_seg_of_the_signs(viewed: Viewed) -> None:
    """The SIH SEG opened in OHIF: the image shows, nothing fails, and the segments OHIF lists name the
    finding and each sign the report names."""
    view = viewed.views["seg-mr-sih"]
    assert not view.blank, f"the SEG viewport is blank\n{view.describe()}"
    failures = view.console_matching(*FAILURE_MESSAGES)
    assert not failures, "\n".join(failures[:10])
    page = view.screenshot.with_suffix(".html").read_text()
    assert "Spontaneous intracranial hypotension" in page, view.describe()
    marks = viewed.cases["mr-sih"].marks
    assert any(m.removeprefix("Mark: ").capitalize() in page for m in marks), view.describe()


def test_ohif_shows_the_overlay(viewed: Viewed) -> None:
    view = viewed.views["overlay-ct-subdural"]
    assert not view.blank, f"the overlay viewport is blank\n{view.describe()}"
    failures = view.console_matching(*FAILURE_MESSAGES)
    assert not failures, "\n".join(failures[:10])
