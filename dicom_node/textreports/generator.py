"""Generated head CT and brain MR reports with their labels: `generate(n, seed)`, `write_reports(...)`.

Report `i` of a set depends only on (seed, i). A report is composed from `phrases.py`: 0-3 findings
stated as present (plainly, as probable, or as persisting since a prior study), normal statements that
contradict none of them, negated, hedged ("cannot exclude"), resolved ("previously seen SDH has
resolved") and clinical-history mentions of absent findings, an impression, and one of several styles
(US sections, UK "clinical details / report / conclusion", one paragraph, organ sub-headings, lower-case
dictation), with abbreviations, British spellings, upper case and typos. Only findings stated as present
or probable set labels; `consistent` adds `hemorrhage` for a subtype and `any_abnormality` for any.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dicom_node.textreports import LABELS, consistent
from dicom_node.textreports.phrases import (
    BY_KEY,
    COMPARISONS,
    CONCEPTS,
    FILLER,
    HISTORIES,
    HISTORY,
    LIST_NEGATIONS,
    NEGATIONS,
    NO_ACUTE,
    NO_OTHER,
    NORMAL,
    NORMAL_IMPRESSIONS,
    NORMAL_PREDICATES,
    PERSISTENT,
    PROBABLE,
    RESOLVED,
    SLOTS,
    STRUCTURES,
    SUBHEADS,
    TECHNIQUES,
    TITLES,
    UNCERTAIN,
    Concept,
)

GENERIC_HEMORRHAGE = ("intracranial hemorrhage", "acute hemorrhage", "hemorrhage", "bleed", "ICH",
                      "intracranial haemorrhage", "acute intracranial blood", "haemorrhage")
# label groups a present finding is drawn from (uniformly, so every label is common enough)
_GROUPS = {
    "CT": (("sdh",), ("edh",), ("sah",), ("ivh",), ("iph",), ("stroke_ct", "stroke_ct", "transformation"), ("mass",),
           ("atrophy",),
           ("vascular",), ("svd_ct",), ("encephalomalacia",), ("hydrocephalus", "fracture", "cyst")),
    "MR": (("sdh",), ("sah",), ("ivh",), ("iph",), ("stroke_mr", "stroke_mr", "transformation"), ("mass",),
           ("atrophy",), ("vascular",),
           ("svd_mr",), ("demyelination",), ("encephalomalacia",), ("sih",), ("microbleeds",),
           ("hydrocephalus", "cyst"), ("edh",), ("sih",), ("microbleeds",), ("demyelination",)),
}
_HEADERS = {
    "history": ("CLINICAL HISTORY", "HISTORY", "INDICATION", "Clinical details", "Clinical information",
                "Reason for exam", "Hx", "Indication", "Clinical indication", "Reason for study", "Clinical"),
    "comparison": ("COMPARISON", "Comparison", "Prior studies", "Compared with"),
    "technique": ("TECHNIQUE", "Technique", "Protocol"),
    "findings": ("FINDINGS", "Findings", "Report", "REPORT", "Description"),
    "impression": ("IMPRESSION", "Impression", "Conclusion", "CONCLUSION", "Opinion", "Summary", "Comment",
                   "Interpretation"),
}
_STYLES = ("us", "us", "uk", "uk", "paragraph", "subheads", "dictation")
_SUBHEAD_NAMES = ["Brain parenchyma", "Ventricles", "Extra-axial spaces", "Vessels", "Bones", "Meninges",
                  "Posterior fossa", "Sinuses and mastoids", "Orbits", "Brain volume"]


@dataclass(frozen=True)
class GeneratedReport:
    id: str
    modality: str
    text: str
    labels: dict[str, int]


def _fill(rng: random.Random, template: str, chosen: dict[str, str] | None = None) -> str:
    """The template with its slots filled; `chosen` keeps one value per slot (the same side in findings
    and impression)."""
    values = {} if chosen is None else chosen

    def pick(m: re.Match[str]) -> str:
        slot = m.group(1)
        if slot not in SLOTS:
            return m.group(0)
        if slot not in values:
            values[slot] = rng.choice(SLOTS[slot])
        return values[slot]

    return _cap(re.sub(r"\{(\w+)\}", pick, template))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _noun(rng: random.Random, template: str, noun: str) -> str:
    text = template.replace("{N}", _cap(noun)).replace("{n}", noun)
    text = text.replace("{A}", "{a}")
    return _cap(text)


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    for i in rng.sample(candidates, min(len(candidates), rng.randint(1, 3))):
        w = words[i]
        k = rng.randrange(1, len(w) - 2)
        kind = rng.randrange(3)
        words[i] = (w[:k] + w[k + 1] + w[k] + w[k + 2:] if kind == 0 else w[:k] + w[k + 1:] if kind == 1
                    else w[:k] + w[k] + w[k:])
    return " ".join(words)


def _absent_nouns(rng: random.Random, modality: str, present: list[Concept], k: int) -> list[str]:
    """Noun phrases of findings that are absent and share no label with a present one."""
    taken = {label for c in present for label in c.labels}
    keys = {c.key for c in present}
    pool = [c for c in CONCEPTS if c.modality in ("any", modality) and c.key not in keys and c.key != "variant"
            and not set(c.labels) & taken]
    nouns = [rng.choice(c.nouns) for c in rng.sample(pool, min(k, len(pool)))]
    if not any("hemorrhage" in c.labels or set(c.labels) & _SUBTYPES for c in present) and rng.random() < 0.6:
        nouns.insert(rng.randrange(len(nouns) + 1), rng.choice(GENERIC_HEMORRHAGE))
    return nouns


_SUBTYPES = {"epidural", "subdural", "subarachnoid", "intraventricular", "intraparenchymal"}


def _present(rng: random.Random, modality: str) -> list[Concept]:
    r = rng.random()
    if r < 0.3:
        return [BY_KEY["variant"]] if rng.random() < 0.3 else []
    n = 1 if r < 0.65 else 2 if r < 0.88 else 3
    groups = rng.sample(_GROUPS[modality], n)
    chosen = [BY_KEY[rng.choice(g)] for g in groups]
    if rng.random() < 0.15:
        chosen.append(BY_KEY["variant"])
    return chosen


def _finding_sentence(rng: random.Random, c: Concept, chosen: dict[str, str]) -> str:
    r = rng.random()
    if r < 0.72 or not c.labels:
        return _fill(rng, rng.choice(c.present), chosen)
    if r < 0.87:
        return _noun(rng, rng.choice(PROBABLE), rng.choice(c.nouns))
    return _noun(rng, rng.choice(PERSISTENT), rng.choice(c.nouns))


def _findings(rng: random.Random, modality: str, present: list[Concept], slots: list[dict[str, str]]
              ) -> list[tuple[str, str]]:
    """(sub-heading, sentence) pairs of the findings section, in a shuffled but plausible order."""
    keys = {c.key for c in present}
    normals = [s for s, denies in NORMAL["any"] + NORMAL[modality] if not keys & set(denies)]
    out = [(SUBHEADS.get(c.key, "Brain parenchyma"), _finding_sentence(rng, c, chosen))
           for c, chosen in zip(present, slots, strict=True)]
    labelled = [k for k, c in enumerate(present) if c.labels]
    if len(labelled) >= 2 and rng.random() < 0.3:  # two findings in one sentence ("SAH with IVH")
        first, other = labelled[:2]
        second = _fill(rng, rng.choice(present[other].short), slots[other]).rstrip(".")
        joined = out[first][1].rstrip(".") + rng.choice((", with ", " and ", ", with associated ", "; also ", " plus "))
        out[first] = (out[first][0], joined + second[:1].lower() + second[1:] + ".")
        del out[other]
    n_findings = len(out)
    out += [("Other", s) for s in rng.sample(normals, min(len(normals), rng.randint(1, 5)))]
    structures = [(st, d) for st, d in STRUCTURES if not keys & set(d)]
    for st, _ in rng.sample(structures, min(len(structures), rng.choice((0, 0, 1, 2, 3)))):
        out.append(("Other", rng.choice(NORMAL_PREDICATES).replace("{S}", _cap(st)).replace("{s}", st)))
    if rng.random() < 0.35:
        out.append(("Other", rng.choice(FILLER)))
    absent = _absent_nouns(rng, modality, present, rng.randint(1, 4))
    while absent:
        if len(absent) >= 3 and rng.random() < 0.5:
            n1, n2, n3 = absent[:3]
            absent = absent[3:]
            t = rng.choice(LIST_NEGATIONS)
            out.append(("Other", _cap(t.replace("{A}", _cap(n1)).format(a=n1, b=n2, c=n3))))
        else:
            out.append(("Other", _noun(rng, rng.choice(NEGATIONS), absent.pop())))
    extra = _absent_nouns(rng, modality, present, 2)
    if extra and rng.random() < 0.15:
        out.append(("Other", _noun(rng, rng.choice(UNCERTAIN), extra[0])))
    if len(extra) > 1 and rng.random() < 0.12:
        out.append(("Other", _noun(rng, rng.choice(RESOLVED), extra[1])))
    head, tail = out[:n_findings], out[n_findings:]
    rng.shuffle(tail)
    if rng.random() < 0.3:
        rng.shuffle(head)
        return tail[:1] + head + tail[1:]
    return head + tail


def _impression(rng: random.Random, modality: str, present: list[Concept], slots: list[dict[str, str]]
                ) -> list[str]:
    labelled = [(c, chosen) for c, chosen in zip(present, slots, strict=True) if c.labels or c.other]
    if not labelled:
        return [rng.choice(NORMAL_IMPRESSIONS["any"] + NORMAL_IMPRESSIONS[modality])]
    lines = [_fill(rng, rng.choice(c.short), chosen) for c, chosen in labelled]
    if rng.random() < 0.4:
        lines.append(rng.choice(NO_OTHER if any(c.acute for c, _ in labelled) else NO_ACUTE + NO_OTHER))
    return lines


def _history(rng: random.Random, modality: str, present: list[Concept]) -> str:
    parts = [rng.choice(HISTORIES)]
    if rng.random() < 0.55:
        pool = [c for c in CONCEPTS if c.modality in ("any", modality) and c.labels]
        noun = rng.choice(GENERIC_HEMORRHAGE + tuple(n for c in pool for n in c.nouns[:3]))
        parts.append(_noun(rng, rng.choice(HISTORY), noun))
    return " ".join(parts)


def generate_report(seed: int, index: int) -> GeneratedReport:
    rng = random.Random(f"dicom-node-reports:{seed}:{index}")
    modality = "CT" if rng.random() < 0.58 else "MR"
    present = _present(rng, modality)
    slots: list[dict[str, str]] = [{} for _ in present]
    findings = _findings(rng, modality, present, slots)
    impression = _impression(rng, modality, present, slots) if rng.random() < 0.85 else []
    history = _history(rng, modality, present) if rng.random() < 0.75 else ""
    style = rng.choice(_STYLES)
    text = _render(rng, style, modality, history, findings, impression)
    if rng.random() < 0.3:
        text = _typo(rng, text)
    if style in ("us", "uk") and rng.random() < 0.15:
        text = text.upper()
    positive = consistent({label for c in present for label in c.labels} | ({"any_abnormality"} if any(
        c.other for c in present) else set()))
    return GeneratedReport(f"r{seed}-{index:06d}", modality, text, {k: int(k in positive) for k in LABELS})


def _header(rng: random.Random, section: str) -> str:
    return rng.choice(_HEADERS[section])


def _render(rng: random.Random, style: str, modality: str, history: str, findings: list[tuple[str, str]],
            impression: list[str]) -> str:
    title = rng.choice(TITLES[modality])
    sentences = [s for _, s in findings]
    numbered = len(impression) > 1 and rng.random() < 0.6
    imp = "\n".join(f"{i}. {s}" for i, s in enumerate(impression, 1)) if numbered else " ".join(impression)
    if style == "us":
        parts = [f"EXAMINATION: {title}" if rng.random() < 0.5 else title]
        if history:
            parts.append(f"{_header(rng, 'history')}: {history}")
        if rng.random() < 0.6:
            parts.append(f"{_header(rng, 'technique')}: {rng.choice(TECHNIQUES[modality])}")
        if rng.random() < 0.6:
            parts.append(f"{_header(rng, 'comparison')}: {rng.choice(COMPARISONS)}")
        body = "\n".join(sentences) if rng.random() < 0.5 else " ".join(sentences)
        parts.append(f"{_header(rng, 'findings')}:\n{body}")
        if impression:
            parts.append(f"{_header(rng, 'impression')}:\n{imp}")
        return "\n\n".join(parts)
    if style == "uk":
        parts = [title]
        if history:
            parts.append(f"{_header(rng, 'history')}: {history}")
        parts.append(f"{rng.choice(('Report', 'Findings', 'REPORT'))}:\n" + " ".join(sentences))
        if impression:
            parts.append(f"{rng.choice(('Conclusion', 'Opinion', 'Comment', 'Summary'))}: {imp}")
        return "\n".join(parts)
    if style == "paragraph":
        lead = f"{title}. " + (f"{rng.choice(('Indication', 'Hx', 'History', 'Clinical'))}: {history} " if history else "")
        tail = f" {rng.choice(('Impression', 'IMPRESSION', 'Conclusion'))}: {' '.join(impression)}" if impression else ""
        return lead + rng.choice(("Findings: ", "")) + " ".join(sentences) + tail
    if style == "subheads":
        parts = [title]
        if history:
            parts.append(f"{_header(rng, 'history')}: {history}")
        parts.append(f"{_header(rng, 'findings')}:")
        grouped: dict[str, list[str]] = {}
        for head, s in findings:
            grouped.setdefault(head, []).append(s)
        for head in rng.sample(_SUBHEAD_NAMES, rng.randint(1, 3)):  # sub-headings with nothing to report
            if head not in grouped:
                grouped[head] = [rng.choice(("Normal.", "Unremarkable.", "No abnormality.", "Normal in size.",
                                             "Within normal limits.", "No collection.", "None."))]
        parts += [f"{head}: {' '.join(ss)}" for head, ss in grouped.items()]
        if impression:
            parts.append(f"{_header(rng, 'impression')}:\n{imp}")
        return "\n".join(parts)
    # dictation: lower case, no headers except a leading indication, impression folded in
    lead = f"{history.lower()} " if history and rng.random() < 0.5 else ""
    body = " ".join(s[:1].lower() + s[1:] for s in sentences + impression)
    return (f"{title.lower()}. " if rng.random() < 0.5 else "") + (f"indication {lead}" if lead else "") + body


def generate(n: int, seed: int, start: int = 0) -> Iterable[GeneratedReport]:
    return (generate_report(seed, i) for i in range(start, start + n))


def write_reports(reports: Iterable[GeneratedReport], out: Path,
                  progress: Callable[[Iterable[GeneratedReport]], Iterable[GeneratedReport]] | None = None) -> int:
    """`out/reports.csv` (`id,modality,text`) and `out/labels.csv` (`id,<label>…`); returns the count."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out / "reports.csv", "w", newline="", encoding="utf-8") as rf, \
            open(out / "labels.csv", "w", newline="", encoding="utf-8") as lf:
        rw, lw = csv.writer(rf), csv.writer(lf)
        rw.writerow(["id", "modality", "text"])
        lw.writerow(["id", *LABELS])
        for r in progress(reports) if progress else reports:
            rw.writerow([r.id, r.modality, r.text])
            lw.writerow([r.id, *(r.labels[k] for k in LABELS)])
            n += 1
    return n
