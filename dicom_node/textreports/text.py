"""Report text -> context-tagged features: sections, clauses, negation, uncertainty and history.

The labeller's network reads words; what a word *means* in a report depends on where it stands. This
module marks every word with one context before the network sees it:

- `A` affirmed: a finding the radiologist reports (findings or impression, no cue governing it);
- `N` negated: "no acute hemorrhage", "subdural is not seen", "previously seen SAH has resolved",
  "no longer visible", "SAH excluded";
- `U` uncertain: "cannot exclude", "possible", "questionable", "?SAH", "may represent";
- `H` history: anything in a history / indication / clinical details / comparison / technique section,
  and in the findings after "history of", "rule out", "status post", "which showed".

Sections are found from headers (`Findings:`, `IMPRESSION`, `Clinical details:`, `Hx:` …, at the start of
a line or sentence); a report without headers is all findings. Clauses end at `. ; ! ?`, line breaks and
scope terminators ("but", "however", "although", "except", "apart from", "there is" …). A cue before its
term (`no`, `without`, `possible`) governs the words after it up to the next cue or the clause's end; a
cue after it (`is not seen`, `has resolved`, `cannot be excluded`) governs the words before it. Pseudo-
cues ("no change", "no interval change", "not only") are consumed without effect, so "no change in the
subdural" stays affirmed. Probable findings ("likely", "consistent with", "suspicious for") are affirmed.

Features, per sentence part (a sentence cut at commas and at "and", "with", "plus" after tagging, so
"SAH with intraventricular extension" is two statements while "no bleed, mass or infarct" stays
negated throughout): each word and each pair of neighbouring words in one context, a 5-letter prefix of
long words (robust to typos), and modifiers combined with the part's words ("chronic" + "infarct"), each
prefixed with its context: `A:subdural`, `N:acute_hemorrhage`, `U:sah`. The labeller scores each part
and takes, per label, a soft maximum (a report states a finding if one of its parts does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

AFFIRMED, NEGATED, UNCERTAIN, HISTORY = "A", "N", "U", "H"
BREAK = ""  # context of a comma kept in `tag_clause`'s output

# section name by header word(s); a header not listed (e.g. "Ventricles:") keeps the current section
_SECTIONS = {
    "history": "history", "clinical history": "history", "clinical": "history", "indication": "history",
    "indications": "history", "reason": "history", "reason for exam": "history", "reason for study": "history",
    "reason for examination": "history", "reason for referral": "history", "rfe": "history", "hx": "history",
    "clinical details": "history", "clinical information": "history", "clinical info": "history",
    "clinical question": "history", "clinical indication": "history", "question": "history",
    "referral": "history", "presenting complaint": "history", "request": "history", "ci": "history",
    "clinical notes": "history", "symptoms": "history", "history and indication": "history",
    "comparison": "comparison", "comparisons": "comparison", "compared": "comparison", "priors": "comparison",
    "prior studies": "comparison", "prior": "comparison", "previous": "comparison",
    "previous studies": "comparison", "compared with": "comparison", "compared to": "comparison",
    "technique": "technique", "exam": "technique", "examination": "technique", "procedure": "technique",
    "protocol": "technique", "study": "technique", "sequences": "technique", "modality": "technique",
    "dose": "technique", "contrast": "technique", "type of study": "technique", "examination type": "technique",
    "findings": "findings", "finding": "findings", "report": "findings", "description": "findings",
    "results": "findings", "result": "findings", "body": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "opinion": "impression", "summary": "impression", "interpretation": "impression",
    "comment": "impression", "comments": "impression", "diagnosis": "impression", "assessment": "impression",
    "final impression": "impression", "addendum": "impression",
}
HISTORY_SECTIONS = frozenset({"history", "comparison", "technique"})

_HEADER = re.compile(r"^\s*([a-z][a-z /&'-]{0,40}?)\s*(?::|-{1,2}\s)\s*")
_STANDALONE = re.compile(r"^\s*([a-z][a-z /&'-]{0,40}?)\s*$")
# sentence ends within a line: . ; ! ? followed by space (not decimals)
_SENTENCES = re.compile(r"(?<=[.;!?])\s+")
_TOKENS = re.compile(r"[a-z0-9]+(?:[/'][a-z0-9]+)*|[?,]")
_BRITISH = (("haem", "hem"), ("oedem", "edem"), ("tumour", "tumor"), ("leucoenc", "leukoenc"),
            ("ischaem", "ischem"), ("foetal", "fetal"), ("visualis", "visualiz"), ("characteris", "characteriz"),
            ("demyelinat", "demyelinat"), ("centre", "center"), ("anaesth", "anesth"))

TERMINATORS = ("but", "however", "although", "though", "yet", "except", "apart from", "aside from", "other than",
               "there is", "there are", "there has been", "there have been", "whereas", "while", "which is",
               "which are", "save for", "with the exception of", "nevertheless", "otherwise")
PSEUDO = ("no change", "no significant change", "no interval change", "no appreciable change", "no definite change",
          "not changed", "not significantly changed", "no increase", "no significant increase", "no decrease",
          "without change", "without significant change", "without interval change", "not only", "no further change",
          "no substantial change", "no material change", "no interval increase", "not increased",
          "no other", "not previously seen", "no longer than", "not only")
PRE_NEGATION = ("no", "not", "without", "negative for", "free of", "absence of", "absent", "nor", "neither",
                "resolution of", "resolved", "clearance of", "interval clearance of", "cleared", "interval resolution of", "complete resolution of", "never",
                "rather than", "instead of", "ruled out", "excluded", "exclusion of", "nil", "none")
POST_NEGATION = ("not seen", "not identified", "not demonstrated", "not visualized", "not present", "not evident",
                 "not detected", "not appreciated", "not noted", "not apparent", "not shown", "not visible",
                 "is absent", "are absent", "absent", "has resolved", "have resolved", "resolved",
                 "no longer seen", "no longer visible", "no longer evident", "no longer present",
                 "no longer identified", "no longer demonstrated", "no longer", "has cleared", "have cleared",
                 "cleared", "excluded", "ruled out", "unlikely", "is negative", "not found", "none seen",
                 "none identified", "none", "not clearly seen", "not convincingly seen", "gone",
                 "has disappeared", "disappeared")
PRE_UNCERTAIN = ("possible", "possibly", "questionable", "question of", "?", "query", "cannot exclude",
                 "can not exclude", "can't exclude", "cant exclude", "could not exclude", "cannot rule out",
                 "can't rule out", "cannot be sure", "equivocal", "may represent", "may be", "might",
                 "might represent", "could represent", "could be", "uncertain", "indeterminate",
                 "doubtful", "suspected", "may reflect", "may indicate", "differential includes", "differential diagnosis includes",
                 "not entirely excluded", "? of", "versus", "vs", "not excluded", "not ruled out")
POST_UNCERTAIN = ("cannot be excluded", "can not be excluded", "can't be excluded", "cannot be ruled out",
                  "can't be ruled out", "not excluded", "is not excluded", "are not excluded", "not ruled out",
                  "not entirely excluded", "not completely excluded", "not fully excluded", "is questioned",
                  "is possible", "are possible", "is not certain", "is uncertain", "is equivocal",
                  "is suspected", "not excluded entirely", "remains possible", "?", "cannot be entirely excluded",
                  "cannot be completely excluded", "is a possibility", "is not entirely excluded",
                  "of uncertain significance", "of unclear significance", "of indeterminate significance",
                  "of doubtful significance", "of questionable significance", "uncertain significance")
PRE_HISTORY = ("history of", "hx of", "h/o", "hx", "history", "indication", "clinical history", "rule out", "to rule out", "r/o", "evaluate for",
               "evaluation for", "assess for", "assessment for", "to exclude", "exclude", "status post", "s/p",
               "which showed", "which demonstrated", "that showed", "previously showed", "known history of",
               "past history of", "pmh", "clinical suspicion of", "query for", "presenting with",
               "presented with", "presents with")
MODIFIERS = frozenset({"acute", "subacute", "chronic", "old", "remote", "new", "hyperacute", "recent", "late",
                       "early", "evolving", "established", "prior", "previous", "age", "expected", "mild",
                       "small", "enhancing", "hyperdense", "hypodense", "restricted", "restricting", "hemorrhagic",
                       "lacunar", "punctate", "diffuse", "smooth", "multiple", "periventricular", "deep"})
HISTORY_STARTS = frozenset({"query", "rule", "r/o", "ro", "history", "hx", "h/o", "known", "assess", "evaluate",
                            "to", "suspected", "previous", "prior", "concern", "clinical", "follow", "f/u",
                            "s/p", "status", "pmh", "exclude", "question", "possible", "on", "fall", "headache",
                            "recent", "sudden", "ongoing", "worsening", "please"})
COMMA_BREAKS = frozenset({"chronic", "old", "stable", "unchanged", "known", "again", "there", "mild", "moderate",
                          "moderately", "marked", "extensive", "likely", "probable", "small", "minor", "minimal",
                          "scattered", "few", "several", "persistent", "residual", "evolving", "established",
                          "remote", "interval", "redemonstrated", "however", "but", "although", "which", "with",
                          "though", "whereas", "consistent", "compatible", "in", "suggestive", "findings"})

_KINDS = (("pseudo", PSEUDO), ("term", TERMINATORS), ("post_u", POST_UNCERTAIN), ("pre_u", PRE_UNCERTAIN),
          ("post_n", POST_NEGATION), ("pre_n", PRE_NEGATION), ("pre_h", PRE_HISTORY))


def _cue_table() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First token -> [(cue tokens, kind)], longest cues first; on equal length the earlier kind wins."""
    table: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    order = {kind: i for i, (kind, _) in enumerate(_KINDS)}
    seen: set[tuple[str, ...]] = set()
    for kind, cues in _KINDS:
        for cue in cues:
            toks = tuple(_TOKENS.findall(cue))
            if toks and toks not in seen:
                seen.add(toks)
                table.setdefault(toks[0], []).append((toks, kind))
    for entries in table.values():
        entries.sort(key=lambda e: (-len(e[0]), order[e[1]]))
    return table


_CUES = _cue_table()
_POST_CONTEXT = {"post_n": NEGATED, "post_u": UNCERTAIN}
_PRE_CONTEXT = {"pre_n": NEGATED, "pre_u": UNCERTAIN, "pre_h": HISTORY}


# "?sah", "? small sdh": a question mark before a word (not after one) is a pre cue ("query sah")
_QUERY = re.compile(r"\?(?=[a-z])|(?:(?<=^)|(?<=[\s(]))\?\s+(?=[a-z])", re.MULTILINE)


def normalise(text: str) -> str:
    out = _QUERY.sub(" query ", text.lower())
    for uk, us in _BRITISH:
        if uk in out:
            out = out.replace(uk, us)
    return out


def section_of(header: str) -> str | None:
    return _SECTIONS.get(" ".join(header.replace("/", " ").split()))


def sentences(text: str) -> Iterable[tuple[str, str]]:
    """(section, sentence) for each sentence of the normalised report, headers removed.

    A header alone on its line opens a section that lasts until the next header; a history, comparison
    or technique section so opened also ends at a blank line. One with text after it on its line
    ("Indication: fall. ?SAH. No bleed.") covers that sentence and the following ones on the line that
    start like history ("?", "rule out", "known", "history of" …, `HISTORY_STARTS`), so a one-paragraph
    report's findings are not read as history."""
    section = "findings"
    for line in text.split("\n"):
        if not line.strip():
            if section in HISTORY_SECTIONS:
                section = "findings"
            continue
        inline = False  # in a history section opened by a header with text on this line
        for raw in _SENTENCES.split(line):
            sentence = raw.strip()
            if not sentence:
                continue
            m = _HEADER.match(sentence)
            found = section_of(m.group(1)) if m else None
            if m and found is not None:
                section = found
                sentence = sentence[m.end():].strip()
                inline = bool(sentence) and found in HISTORY_SECTIONS
            elif m is None and (sm := _STANDALONE.match(sentence.rstrip(".: "))) and section_of(sm.group(1)):
                section = section_of(sm.group(1)) or section
                inline = False
                continue
            elif inline and sentence.split(" ", 1)[0].strip(".,:") not in HISTORY_STARTS:
                section, inline = "findings", False
            if sentence:
                yield section, sentence
        if inline:
            section = "findings"


def tag_clause(tokens: list[str], default: str) -> list[tuple[str, str]]:
    """(context, token) for each non-cue token of one sentence; cues set contexts, terminators end them.

    A comma ends a cue's scope only before a word that starts a new statement (`COMMA_BREAKS`: "no
    hemorrhage, old left infarct"); in a list ("no hemorrhage, mass or infarct") the scope runs on. A
    post cue with nothing before it to govern acts on what follows ("resolved SAH", "?SAH")."""
    out: list[tuple[str, str]] = []
    context = default
    start = 0  # first output index of the current scope
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == ",":
            if i + 1 < n and tokens[i + 1] in COMMA_BREAKS and default != HISTORY:
                context, start = default, len(out)
            out.append((BREAK, ","))  # a place where `features` may cut the sentence
            i += 1
            continue
        match = None
        entries = _CUES.get(tok)
        if entries:
            for cue, kind in entries:
                if tuple(tokens[i:i + len(cue)]) == cue:
                    match = (cue, kind)
                    break
        if match is None:
            out.append((context, tok))
            i += 1
            continue
        cue, kind = match
        i += len(cue)
        if default == HISTORY or kind == "pseudo":
            continue
        if kind == "term":
            context, start = default, len(out)
        elif kind in _POST_CONTEXT and any(c == default for c, _ in out[start:]):
            post = _POST_CONTEXT[kind]
            for k in range(start, len(out)):  # the words before it in this scope that no other cue governs
                if out[k][0] == default and out[k][1] != ",":
                    out[k] = (post, out[k][1])
            context, start = default, len(out)
        else:
            context = _PRE_CONTEXT.get(kind) or _POST_CONTEXT[kind]
    return out


def tagged(text: str) -> list[list[tuple[str, str]]]:
    """The report as sentences of (context, token)."""
    out = []
    for section, sentence in sentences(normalise(text)):
        default = HISTORY if section in HISTORY_SECTIONS else AFFIRMED
        tokens = _TOKENS.findall(sentence)
        if tokens:
            out.append(tag_clause(tokens, default))
    return out


STOPWORDS = frozenset({"the", "a", "an", "of", "in", "is", "are", "and", "or", "with", "to", "on", "at", "by",
                       "for", "from", "this", "that", "as", "be", "was", "were", "which", "it", "its", "has",
                       "have", "been", "also", "both", "these", "those", "there", "within", "into", "along",
                       "measuring", "measures", "approximately", "up", "mm", "cm", "ml", "x", "#"})


def sentence_features(clause: list[tuple[str, str]]) -> list[str]:
    """One sentence's distinct context-tagged features. Numbers become `#`; function words
    (`STOPWORDS`) count only inside word pairs."""
    feats: set[str] = set()
    add = feats.add
    prev_ctx, prev_tok = "", ""
    mods = [t for c, t in clause if t in MODIFIERS]
    for ctx, tok in clause:
        if tok[0].isdigit():
            tok = "#"
        stop = tok in STOPWORDS
        if not stop:
            add(f"{ctx}:{tok}")
            if len(tok) > 6:
                add(f"{ctx}:{tok[:5]}~")
            if mods and ctx != HISTORY and len(tok) > 3 and tok not in MODIFIERS:
                for m in mods:
                    add(f"{ctx}:{m}+{tok}")
        if ctx == prev_ctx and not (stop and prev_tok in STOPWORDS):
            add(f"{ctx}:{prev_tok}_{tok}")
        prev_ctx, prev_tok = ctx, tok
    return sorted(feats)


SPLIT_WORDS = frozenset({"and", "with", "plus", "also", "as", "whilst", "while"})


def parts(clause: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """A tagged sentence cut at commas and joining words ("SAH with intraventricular extension", "A, and B"):
    each part keeps the contexts the whole sentence gave its words, so a negation's list stays negated."""
    out: list[list[tuple[str, str]]] = [[]]
    for ctx, tok in clause:
        if ctx == BREAK or tok in SPLIT_WORDS:
            if out[-1]:
                out.append([])
            continue
        out[-1].append((ctx, tok))
    return [p for p in out if p]


def features(text: str) -> list[list[str]]:
    """The report's features, one list per sentence part (see the module docstring); parts without a
    feature are left out."""
    out = []
    for clause in tagged(text):
        for part in parts(clause):
            f = sentence_features(part)
            if f:
                out.append(f)
    return out
