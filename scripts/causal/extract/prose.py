"""Ablation rows from a README's prose: sentences with a bpb (or nats) figure, pairs of scores, KEY=VALUE lines (bullet
lists and code blocks: ``list_sweeps``) and run lines naming their parent in brackets (``parent_lines``).

The words nearest a figure give its sign when the figure has none ("0.0040 better", "costs 0.0004 BPB"); a signed
figure keeps its sign unless the words before it in its sentence say otherwise. A sentence that names no change
borrows the one before it on the same line, unless that sentence has a figure of its own. Tables are read by
``extract.ablations``.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from scripts.causal.core.schema import AblationRow
from scripts.causal.extract.row_types import map_change
from scripts.causal.extract.table_shapes import clean as _clean

__all__ = ["GAIN", "LOSS", "MAX_DELTA", "NUM", "list_sweeps", "parent_lines", "prose_ablations", "to_float"]

NUM = r"[+\-−–]?\s?\d*\.\d+"
MAX_DELTA = 0.3
GAIN = re.compile(r"improv|\bgain|better|help|reduc|lower|saves?|benefit|win\b|beats?\b|outperform", re.I)
LOSS = re.compile(r"worse|hurt|regress|cost|penalt|degrad|higher|increase|quality loss|loss of quality", re.I)


def to_float(s: str) -> float | None:
    """A cell or figure as a number (unicode minus signs, spaces and emphasis dropped), else None."""
    s = s.replace("−", "-").replace("–", "-").replace(" ", "").replace("*", "").replace("`", "")
    try:
        return float(s)
    except ValueError:
        return None


_BY = re.compile(r"\b(?:val[_\s]?)?bp[bp]\s+by\s+([~≈]?\s*\d*\.\d+)(?!\s*(?:bpb|bpp|bits|nats?))", re.I)
# "0.003 BPB", a figure with its verdict and no unit ("+0.006 worse", "-0.003 improvement", "0.0040 better"), a
# signed figure a colon gives a change ("Sparse attention gate on vs off: -0.0011."), or a signed figure a change is
# "worth" ("LeakyReLU(0.5)² instead of relu² was worth −0.0042")
_PROSE = re.compile(rf"(?P<num>{NUM})\s*(?P<unit>bpb|bpp|bits per byte|nats?)\b|"
                    rf"(?P<snum>[+\-−–]?\s?\d*\.\d+)\s+(?=(?:worse|better|improvement|regression|gain)\b)|"
                    rf":\s*(?P<cnum>[+\-−–]\s?\d*\.\d+)(?=\s*(?:[.;,(]|$))|"
                    rf"\bworth\s+(?:about\s+|roughly\s+|[~≈]\s*)?(?P<wnum>[+\-−–]\s?\d*\.\d+)(?![\d.])"
                    rf"(?!\s*(?:bpb|bpp|bits|nats?|mb|kb|ms|s|%|x)\b)", re.I)


_PAIR = re.compile(r"(?<![\d.])([0-4]\.\d{3,8})(?!\d|\.\d)[^.\n]{0,90}?\b(?:improv\w*|reduc\w*|lower\w*|drop\w*|"
                   r"went|goes|moved|brought)\s+(?:that|it|this)?\s*(?:down\s+)?to\s+(?:about\s+|~|≈)?"
                   r"([0-4]\.\d{3,8})(?!\d|\.\d)|"
                   r"\bscore\s+from\s+([0-4]\.\d{3,8})\s+to\s+([0-4]\.\d{3,8})(?!\d|\.\d)",   # "the score from a to b"
                   re.I)


# two scores joined by an arrow: the sentence before them names the change ("X on that model: 1.1403 -> 1.1186")
_ARROW_PAIR = re.compile(r"(?<![\d.])([0-4]\.\d{3,8})\s*(?:->|→|=>)\s*([0-4]\.\d{3,8})(?!\d|\.\d)")


# two scores of one sentence, the change's arm first: "QK_GAIN_INIT=4.0 instead of 1.5 (1.1226 vs 1.1247)"
_SCORE_VS = re.compile(r"(?<![\d.])([1-4]\.\d{3,8})\s+(?:vs\.?|against)\s+([1-4]\.\d{3,8})(?!\d|\.\d)")   # not "(0.090 vs 0.085)"
_NEGATED_ARM = re.compile(r"\b(?:without|w/o|no|off|remov\w*|disabl\w*|drop\w*)\b", re.I)


def _score_pair(before: str, sent: str, src: str) -> list[AblationRow]:
    """A sentence with no figure of its own and one pair of scores, "X gave 1.1247 vs 1.1262": the first score is
    X's arm. A sentence whose words switch something off ("without SmearGate 1.1241 vs 1.1226 with") does not say
    which arm is which: no row."""
    found = list(_SCORE_VS.finditer(sent))
    if len(found) != 1:
        return []
    m = found[0]
    a, b = float(m.group(1)), float(m.group(2))
    change = re.sub(r"^\s*(?:[-*]\s+|\d+[.)]\s+)", "", _clean(sent[:m.start()])).rstrip(" :(—-,~≈")
    change = re.sub(r"\s+(?:gave|got|scored|reached|was|is|at|to|of)$", "", change, flags=re.I)
    if abs(a - b) >= 0.1 or len(change.split()) < 2 or _NEGATED_ARM.search(change):
        return []
    if before and not map_change(change)[0] and not re.search(r"\d*\.\d+", before):
        change = f"{_clean(before)} {change}"
    return [AblationRow(change=change, delta_bpb=round(a - b, 8), source=src)]


def _unit(m: re.Match) -> str:
    """The unit of a prose figure; a unitless signed verdict ("+0.006 worse") is in bpb."""
    return (m.group("unit") or "bpb").lower()


def prose_ablations(text: str, *, nats_to_bpb: float | None = None) -> list[AblationRow]:
    out: list[AblationRow] = []
    text = re.sub(r"[*`]+", "", text or "").replace("\\_", "_").replace("\\~", "~")
    for m in _PAIR.finditer(text):
        a, b = float(m.group(1) or m.group(3)), float(m.group(2) or m.group(4))
        if abs(b - a) < 0.2:
            start = max(text.rfind(". ", 0, m.start()), text.rfind("\n", 0, m.start())) + 1
            change = _clean(text[start: m.end()])[:120]
            out.append(AblationRow(change=change, delta_bpb=round(b - a, 8), source="README prose (before -> after)"))
    for m in _ARROW_PAIR.finditer(text):   # "Sliding-window eval (stride 64) on that same int6 model: 1.1403 -> 1.1186"
        line_start = text.rfind("\n", 0, m.start()) + 1
        start = max(text.rfind(". ", line_start, m.start()) + 1, line_start)
        change = re.sub(r"^\s*(?:[-*]\s+|\d+[.)]\s+)", "", _clean(text[start: m.start()])).rstrip(" :(—-,~≈")
        a, b = float(m.group(1)), float(m.group(2))
        if text[line_start:].lstrip().startswith("|") or abs(b - a) >= 0.2 or len(change.split()) < 2:
            continue
        out.append(AblationRow(change=change, delta_bpb=round(b - a, 8), source="README prose (before -> after)"))
    headings = [(h.start(), h.group(1).strip()) for h in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)]
    for pm in re.finditer(r"[^\n](?:[^\n]|\n(?![ \t]*\n))*", text):  # starts on a text line, not the blank's \n
        para = pm.group(0)
        lead = re.match(r"(?:[ \t]*#{1,6}\s+[^\n]*(?:\n|$))+", para)  # heading lines glued to their text
        body_start = pm.start() + (lead.end() if lead else 0)
        para = para[lead.end():] if lead else para
        if not para.strip() or para.lstrip().startswith("|"):
            continue
        section = next((h for pos, h in reversed(headings) if pos < body_start), "")
        src = f"README prose (section '{section}')" if section else "README prose"
        # (previous sentence on the same line, sentence): a sentence that names no change borrows the one before it
        pairs = [(parts[i - 1] if i else "", p) for line in para.split("\n")
                 for parts in [re.split(r"(?<=[.!?])\s+(?=[A-Z*(])", re.sub(r"^\s*[-*] ", "", line))]
                 for i, p in enumerate(parts)]
        for before, sent in pairs:
            sent = _BY.sub(r"by \1 bpb", sent)  # "improves val_bpb by ~0.034": the unit before the number
            matches = list(_PROSE.finditer(sent))
            if any(not _unit(m).startswith("nat") for m in matches):
                matches = [m for m in matches if not _unit(m).startswith("nat")]  # bpb twin given
            if not matches:
                out += _score_pair(before, sent, src)
            for m in matches:
                raw = m.group("num") or m.group("snum") or m.group("cnum") or m.group("wnum")
                d = to_float(raw)
                if d is None or abs(d) > MAX_DELTA or abs(d) < 1e-6:
                    continue
                signed = bool(re.match(r"[+\-−–]", raw.strip()))
                if not signed and not re.search(r"\(\s*$|by\s*$|of\s*$|[~≈]\s*$", sent[:m.start()]) \
                        and not GAIN.search(sent) and not LOSS.search(sent):
                    continue
                if not signed or d > 0:
                    # the words nearest the number decide: "0.001 BPB improvement", "costs +0.0004 BPB"
                    tone = None
                    # (a signed figure: the words before it in its sentence, not a later clause: "+0.0004 nats against
                    # the same config without EMA, ... I only saw a gain once ..." stays a loss; "Reduces collisions vs
                    # 4096 buckets (+0.001 bpb)" is a gain)
                    near = (sent[m.end(): m.end() + 20], sent[max(0, m.start() - 30): m.start()])
                    for ctx in (*near, sent[:m.start()] if signed else sent):
                        gain, loss = GAIN.search(ctx), LOSS.search(ctx)
                        if gain and not loss:
                            tone = "gain"
                        elif loss and not gain:
                            tone = "loss"
                        elif gain and loss:
                            tone = "gain" if gain.start() < loss.start() else "loss"
                        if tone:
                            break
                    if tone == "gain":
                        d = -abs(d)
                    elif tone == "loss":
                        d = abs(d)
                    elif not signed:
                        continue
                change = _clean(sent[:m.start()]).rstrip(" :(—-,~≈")
                change = re.sub(r"^\s*(?:[-*]\s+|\d+[.)]\s+)", "", change)
                if len(change.split()) < 4:  # "Improvement over baseline: ~" says little: keep the sentence
                    change = re.sub(r"^\s*(?:[-*]\s+|\d+[.)]\s+)", "", _clean(sent))
                # "Zero-byte cost, ~0.001 BPB improvement." names its change in the bullet's previous sentence; a
                # previous sentence with a figure of its own ("Reported as -0.0011 in PR #1667.") is another statement
                if before and not map_change(change)[0] and not re.search(r"\d*\.\d+", before):
                    change = f"{_clean(before)} {change}"
                change = change[-300:]
                if _unit(m).startswith("nat"):
                    if nats_to_bpb is None:
                        out.append(AblationRow(change=f"{change} (nats {d:+g}; no bpb ratio)", delta_bpb=None,
                                               source=src))
                        continue
                    d = d * nats_to_bpb
                tail = sent[m.end():]
                cut = re.search(rf"{NUM}\s*(?:bpb|bpp|bits)|[.;!?](?:\s|$)", tail, re.I)
                context = _clean(tail[: cut.start() if cut else 100])[:100]
                out.append(AblationRow(change=change, delta_bpb=round(d, 8), source=src, context=context))
    return out


# "- WARMDOWN_ITERS=3600: 1.2122 <- used", "MUON_WD=0.095    1.08236   (-0.00045)" (a bare line: one identifier),
# "- `TTT_EPOCHS=2` (was 1): 1.05858 (−0.00038)"
_LIST_SETTING = re.compile(r"^\s*(?:[-*]\s+([A-Za-z][\w .]*?)|([A-Za-z][A-Za-z0-9_]*))\s*=\s*(-?\d+(?:\.\d+)?)\s*"
                           r"(\([^)]*\)\s*)?(?:[:|—–]|->|→|=>|-)?\s*"
                           r"(?:[A-Za-z][\w-]*(?::?\s+|=))?"   # "sliding 1.1040", "sliding=1.1"
                           r"([0-4]\.\d{3,8})(?![\d.])(.*)$")
_CHOSEN = re.compile(r"←|<-|\b(?:used|chosen|selected|picked|submitted|adopted|final|kept|ours|default|reference|"
                     r"baseline|best)\b", re.I)
_REF = re.compile(r"\b(?:ref|reference|baseline)\b", re.I)   # the reference itself, over the setting kept
# "(+0.00131)" or "+0.00131" right after the score
_GIVEN = re.compile(r"^\s*(?:\(\s*)?([+\-−–]\s?\d*\.\d+)(?![\d.])\s*(?:bpb\b)?\s*(?:[),;]|$|\s)")
_WAS = re.compile(r"\(\s*(?:was|from|vs\.?|ref\.?)\s+(-?\d+(?:\.\d+)?)\s*\)", re.I)
# "- `QK_GAIN_INIT=5.0`: +0.00061": a setting and a signed delta, no score
_LIST_DELTA = re.compile(r"^\s*(?:[-*]\s+([A-Za-z][\w .]*?)|([A-Za-z][A-Za-z0-9_]*))\s*=\s*(-?\d+(?:\.\d+)?)\s*"
                         r"(\([^)]*\)\s*)?(?:[:|—–]|->|→|=>)\s*([+\-−–]\s?\d*\.\d+)(?![\d.])\s*(?:bpb\b)?(.*)$", re.I)
_FOOTNOTE = re.compile(r"\d[*†‡](?![*\w])")   # "1.08410*": a score its footnote qualifies


class _Setting(NamedTuple):
    """One line of ``list_sweeps``: a knob's setting, its score and what the line says of it."""
    key: str
    value: str
    score: float | None
    chosen: bool
    ref: bool
    given: float | None
    was: str | None
    footnoted: bool


def list_sweeps(text: str) -> list[AblationRow]:
    """Lines that set one knob and give a score, as a bullet list or bare lines (a code block):

    - three lines or more in a row with the same key are a sweep: each setting against the one line that marks
      itself the reference ("(ref)", "baseline"), else the one line the list marks chosen (used / kept / final /
      default / bold, or an arrow); without exactly one such line the list says no reference;
    - a line outside such a sweep that gives its own signed delta after the score ("TTT_EPOCHS=2 (was 1): 1.05858
      (−0.00038)") is that one setting's row, from the value it names as replaced, if any.

    - a line that gives a signed delta and no score ("- `QK_GAIN_INIT=5.0`: +0.00061") is that setting against the
      value it names as replaced, else the value the README's run command sets (the config the list varies).

    A score with a footnote mark ("1.08410*") is qualified by its footnote: no row."""
    out: list[AblationRow] = []
    runs: list[list[_Setting]] = [[]]
    final = run_command_settings(text)
    for line in (text or "").replace("\\_", "_").splitlines():
        plain = re.sub(r"[*`]+(?=\S)|(?<=\S)[*`]+", "", line)
        m = _LIST_SETTING.match(plain)
        d = None if m else _LIST_DELTA.match(plain)
        key = (m.group(1) or m.group(2)) if m else (d.group(1) or d.group(2)) if d else None
        if key is None or (runs[-1] and runs[-1][0].key.lower() != key.lower()):
            runs.append([])
        if m is not None:
            note = f"{m.group(4) or ''} {m.group(6)}"
            given, was = _GIVEN.match(m.group(6)), _WAS.search(m.group(4) or "")
            runs[-1].append(_Setting(key, m.group(3), float(m.group(5)),
                                     chosen=bool(_CHOSEN.search(note)) or "**" in line, ref=bool(_REF.search(note)),
                                     given=to_float(given.group(1)) if given else None,
                                     was=was.group(1) if was else None, footnoted=bool(_FOOTNOTE.search(line))))
        elif d is not None:   # "- QK_GAIN_INIT=5.0: +0.00061": against the record's own setting, which its run
            was = _WAS.search(d.group(4) or "")  # command states, unless the line names the value it replaced
            old = was.group(1) if was else final.get(key.lower())
            runs[-1].append(_Setting(key, d.group(3), None, chosen=False, ref=bool(_REF.search(d.group(4) or "")),
                                     given=to_float(d.group(5)), was=old, footnoted=False))
    for run in runs:
        refs = [r for r in run if r.ref and not r.footnoted]
        marked = refs if len(refs) == 1 else [r for r in run if r.chosen and not r.footnoted]
        if len(run) >= 3 and len(marked) == 1 and all(r.score is not None for r in run):   # a footnoted line
            # counts in its sweep and gives no row
            ref = marked[0]
            out += [AblationRow(change=f"{r.key} = {r.value}", delta_bpb=round(r.score - ref.score, 8),
                                reference=f"{ref.key} = {ref.value}", source="README list (vs the marked line)")
                    for r in run if r is not ref and not r.footnoted]
            continue
        out += [AblationRow(change=f"{r.key} = {r.value}", delta_bpb=r.given,
                            reference=f"{r.key} = {r.was}" if r.was else None, source="README list (its own delta)")
                for r in run if r.given is not None and abs(r.given) <= MAX_DELTA and not r.ref and not r.footnoted
                and (r.was is None or to_float(r.was) != to_float(r.value))]
    return out


_CODE_BLOCK = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_ENV = re.compile(r"(?<![\w-])([A-Z][A-Z0-9_]{2,})=(-?\d+(?:\.\d+)?)(?![\w.])")


def run_command_settings(text: str) -> dict[str, str]:
    """``KEY=value`` settings (keys lower-cased) of the README's run commands: fenced code blocks that launch the
    trainer (torchrun / python). A key the blocks set to two values is left out."""
    seen: dict[str, set[str]] = {}
    for block in _CODE_BLOCK.findall((text or "").replace("\\_", "_")):
        if re.search(r"\b(?:torchrun|python3?)\b", block):
            for k, v in _ENV.findall(block):
                seen.setdefault(k.lower(), set()).add(v)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


# "**exp03 [exp02]** — + SmearGate (...): 1.3349": a run, the run it builds on in brackets, its change and score
_RUN_LINE = re.compile(r"^\W*(?P<id>[A-Za-z]{1,5}[-_]?\d{1,3}[a-z]?)\W*(?:\[\s*(?P<parent>[A-Za-z]{1,5}[-_]?\d{1,3}[a-z]?)"
                       r"\s*\])?\W*[—–:-]+\s*(?P<change>.+?):\s*(?P<score>[0-4]\.\d{3,6})(?!\d|\.\d)")


def parent_lines(text: str) -> list[AblationRow]:
    """A run log written as lines, each run naming in brackets the run it builds on ("**exp05 [exp04]** — + SmearGate
    on top of bigram: 1.3322"): each run against its parent's score, when the parent's own line gives one."""
    scores: dict[str, tuple[float, str]] = {}
    out = []
    for line in re.sub(r"[*`]+", "", text or "").splitlines():
        m = _RUN_LINE.match(line)
        if m is None:
            continue
        run, parent, change = m.group("id").lower(), (m.group("parent") or "").lower(), _clean(m.group("change"))
        score = float(m.group("score"))
        scores[run] = (score, change)
        if parent in scores:
            ref_score, ref_change = scores[parent]
            out.append(AblationRow(change=change, delta_bpb=round(score - ref_score, 8), reference=ref_change,
                                   source=f"README run lines (vs run {m.group('parent')}, named in brackets)"))
    return out
