"""Every sentence the radiologist reads about a result, built from the final verdicts in one place.

The SR's comments and impression, the series descriptions (what a viewer's series list shows before
the report is opened) and the overlay captions all come from here, so they say the same thing.
"""

from __future__ import annotations

from dicom_node.ml.analysis import AnalysisStatus, Finding, Measurement, StudyAnalysis
from dicom_node.outputs import codes

DEMO_MARK = "synthetic-demo"
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"
UNVERIFIED = "unverified AI result"
LO_LENGTH = 64  # a Long String (LO) attribute's maximum
SERIES_DESCRIPTION_LENGTH = LO_LENGTH
SUMMARY_LABEL = "any"  # the study-level label of a model with subtypes (see verdicts.reconcile)


def verdict(finding: Finding) -> str:
    """PRESENT / ABSENT / UNDETERMINED."""
    if finding.present is None:
        return "UNDETERMINED"
    return "PRESENT" if finding.present else "ABSENT"


PERCENT_FLOOR = 0.01  # the smallest probability (in %) a report states; below it: "< 0.01 %"


def percent(probability: float) -> float:
    """A probability as the percentage a reader needs, for a NUM or a sentence: one decimal; under 0.05 %
    two significant digits; under 0.01 % (0 included) the floor 0.01. Never written as zero: OHIF prints a
    NUM of 0 as an empty value ("Probability:  %"), and no model output is a certainty. Never a number like
    8.8e-16, which reads as noise. `percent_text` writes the floor as "< 0.01"."""
    value = float(probability) * 100.0
    if value < PERCENT_FLOOR:
        return PERCENT_FLOOR
    return float(f"{value:.2g}") if value < 0.05 else round(value, 1)


def percent_text(probability: float) -> str:
    """The percentage for a sentence: `percent`'s figure ("93", "0.04"), or "< 0.01" at the floor."""
    value = float(probability) * 100.0
    return f"< {PERCENT_FLOOR:g}" if value < PERCENT_FLOOR else f"{percent(probability):g}"


def model_name_lo(display_name: str) -> str:
    """A model's name for a 64-character (LO) attribute: whole when it fits; else without its bracketed list
    (an ensemble's members, which the SR states in full), else cut at a word with "..." (ASCII: the
    default character repertoire). Never cut mid-word, as "[ich-all 0.2.0-syntheti" would be."""
    if len(display_name) <= LO_LENGTH:
        return display_name
    base = display_name.split(" [", 1)[0].rstrip()
    if len(base) <= LO_LENGTH:
        return base
    cut = base[: LO_LENGTH - 3].rsplit(" ", 1)[0].rstrip(" ,;(")
    return cut + "..."


MARK = "Mark: "  # what the region is on, where the model names it (an SIH sign): "Mark: brain sag"


def finding_line(finding: Finding) -> str:
    """E.g. "Subdural hemorrhage PRESENT"."""
    return f"{codes.finding_concept(finding.label).display} {verdict(finding)}"


def viewer_lines(finding: Finding) -> list[str]:
    """The short lines a viewer shows beside a region (OHIF: one per Comment, ~8.5 px a character, and a
    text box that starts at the region's right edge and is not kept on screen: the shorter the better).
    The demo marking is in the series description and the report's statement, not here."""
    name = codes.finding_concept(finding.label).display
    if finding.instance:  # one of several findings with this label: "Microbleed 3 (lobar)"
        name += f" {finding.instance}" + (f" ({finding.detail})" if finding.detail else "")
    elif finding.detail:  # what the region is on: "Mark: brain sag"
        return [name, f"{MARK}{finding.detail}", f"{verdict(finding)}, unverified AI"]
    return [name, f"{verdict(finding)}, unverified AI"]


def ai_statement(analysis: StudyAnalysis) -> str:
    """The plain-text statement that this is an AI result (with the demo warning when it applies)."""
    model = analysis.model
    text = (
        f"AI result produced automatically by {model.display_name} version {model.version} "
        f"(dicom-node); not reviewed by a physician."
    )
    if model.synthetic_demo:
        text += f" {DEMO_MARK}: demo weights trained on generated phantoms. {NOT_FOR_CLINICAL_USE}."
    return text


def summary(analysis: StudyAnalysis) -> str:
    """One line a radiologist reads first: what was found, or why nothing was."""
    if analysis.status == AnalysisStatus.NOT_ANALYSED:
        return f"Not analysed: {analysis.reason or 'no reason given'}"
    if analysis.status == AnalysisStatus.FAILED:
        return f"Analysis failed: {analysis.reason or 'no reason given'}"
    present = [f for f in analysis.findings if f.present and not f.instance]  # lesions: counted below
    absent = [f for f in analysis.findings if f.present is not None and not f.present]
    parts = []
    if present:
        parts.append("Present: " + ", ".join(
            f"{codes.finding_concept(f.label).display} (probability {percent_text(f.probability)} %"
            + (f"; signs marked: {signs_text(f.signs)}" if f.signs else "") + ")"
            for f in present))
    if absent:
        parts.append("Absent: " + ", ".join(codes.finding_concept(f.label).display for f in absent))
    if analysis.measurements:
        parts.append("; ".join(_measured(m) for m in analysis.measurements))
    return ". ".join(parts) + "." if parts else "No findings reported."


def signs_text(signs: tuple[str, ...]) -> str:
    """E.g. "pachymeningeal enhancement, brain sag"."""
    return ", ".join(codes.finding_concept(codes.sign_label(s)).display.lower() for s in signs)


def _measured(m: Measurement) -> str:
    """E.g. "Number of cerebral microbleeds: 7", "FLAIR white matter hyperintensity, ...: 21.3 %"."""
    name, unit = codes.measurement(m.concept)
    return f"{name.meaning}: {m.value:g}" + ("" if unit.value == "{count}" else f" {unit.value}")


def _present_subtypes(analysis: StudyAnalysis) -> list[Finding]:
    return [f for f in analysis.findings if f.present and f.label != SUMMARY_LABEL and not f.instance]


def _fit(head: str, names: list[str], short: list[str], tail: str) -> str:
    """`head names tail` within 64 characters: full names, else abbreviations, else a count."""
    for listed in (", ".join(names), ", ".join(short), ",".join(short), f"{len(names)} findings"):
        text = f"{head} {listed}{tail}" if listed else f"{head}{tail}"
        if len(text) <= SERIES_DESCRIPTION_LENGTH:
            return text
    return (head + tail)[:SERIES_DESCRIPTION_LENGTH]


def sr_series_description(analysis: StudyAnalysis) -> str:
    """The verdict as a viewer's series list shows it, e.g. "AI ICH: PRESENT subdural (unverified)"."""
    model = analysis.model
    head = f"AI {model.name.upper()}:"
    demo = f", {DEMO_MARK}" if model.synthetic_demo else ""
    if analysis.status == AnalysisStatus.NOT_ANALYSED:
        return _fit(f"{head} NOT ANALYSED", [], [], f" ({DEMO_MARK})" if demo else "")
    if analysis.status == AnalysisStatus.FAILED:
        return _fit(f"{head} ANALYSIS FAILED", [], [], f" ({DEMO_MARK})" if demo else "")
    tail = f" (unverified{demo})"
    if not any(f.present for f in analysis.findings):
        return _fit(f"{head} ABSENT", [], [], tail)
    subtypes = _present_subtypes(analysis)
    return _fit(f"{head} PRESENT", [f.label for f in subtypes],
                [codes.finding_concept(f.label).short or f.label for f in subtypes], tail)


def overlay_series_description(analysis: StudyAnalysis) -> str:
    """E.g. "AI ICH key images: subdural (unverified, synthetic-demo)"."""
    model = analysis.model
    shown = _present_subtypes(analysis) or [f for f in analysis.findings if f.present]
    demo = f", {DEMO_MARK}" if model.synthetic_demo else ""
    return _fit(f"AI {model.name.upper()} key images:", [f.label for f in shown],
                [codes.finding_concept(f.label).short or f.label for f in shown], f" (unverified{demo})")


def caption(analysis: StudyAnalysis, finding: Finding) -> list[str]:
    """The overlay's burned-in caption; the last line is the warning."""
    model = analysis.model
    return [
        f"{codes.finding_concept(finding.label).display}: {verdict(finding)} {percent(finding.probability):.0f}%",
        *([f"{MARK}{finding.detail}"] if finding.detail and not finding.instance else []),
        f"{model_name_lo(model.display_name)} {model.version}",  # the SR names an ensemble's members
        f"AI RESULT - {NOT_FOR_CLINICAL_USE}" if model.synthetic_demo else "AI RESULT - UNVERIFIED, CONFIRM ON IMAGES",
    ]
