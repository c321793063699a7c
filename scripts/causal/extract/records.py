"""Reading leaderboard record folders: discovery, tolerant file loading, JSON scores, log metrics,
`key: value` config dumps, env listings, code defaults, and the challenge README's leaderboard tables.

Everything here is pure text -> data; nothing raises on bad input. Problems are appended to a
``warnings`` list as one line naming the file and the fix, and parsing goes on.
"""
from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path
from urllib.parse import unquote

LOG_SUFFIXES = (".log", ".txt")
CODE_NAMES = ("train_gpt.py",)
MAX_TEXT_BYTES = 4_000_000


@dataclasses.dataclass(frozen=True)
class RecordSources:
    """All the text one record folder offers, keyed by path relative to the folder."""

    folder: Path
    readme: str | None
    jsons: dict[str, dict]
    logs: dict[str, str]
    code: dict[str, str]


@dataclasses.dataclass(frozen=True)
class LeaderboardRow:
    """One row of a leaderboard table in the challenge README."""

    table: str
    rank: int
    run: str
    score: float | None
    author: str
    summary: str
    date: str
    prs: tuple[int, ...]
    record_path: str | None  # "track/folder" when the Info link points at a record README


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def read_text_safe(path: Path, warnings: list[str]) -> str | None:
    """Read a text file; non-UTF-8 bytes are replaced (with a warning), unreadable files give None."""
    try:
        raw = path.read_bytes()[:MAX_TEXT_BYTES]
    except OSError as exc:
        warnings.append(f"{path}: cannot read ({exc}); skipped")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        warnings.append(f"{path}: not valid UTF-8 (byte {exc.start}); undecodable bytes replaced")
        return raw.decode("utf-8", errors="replace")


def is_record_folder(folder: Path) -> bool:
    """A record folder has a README.md plus a submission JSON or a train log, or (no README) a train log with
    a final val_bpb line: folders the leaderboard lists that hold only logs (and maybe a JSON)."""
    has_json = any(p.suffix == ".json" for p in folder.iterdir() if p.is_file())
    logs = _log_files(folder)
    if (folder / "README.md").is_file():
        return has_json or bool(logs)
    return any(_has_final_metric(p) for p in logs)


def _has_final_metric(path: Path) -> bool:
    try:
        text = path.read_bytes()[:MAX_TEXT_BYTES].decode("utf-8", errors="replace")
    except OSError:
        return False
    return bool(log_metrics(strip_line_prefixes(text)))


def _log_files(folder: Path) -> list[Path]:
    out = [p for p in folder.iterdir() if p.is_file() and p.suffix in LOG_SUFFIXES and p.name != "requirements.txt"]
    for sub in ("logs", "log"):
        if (folder / sub).is_dir():
            out += [p for p in (folder / sub).iterdir() if p.is_file() and p.suffix in LOG_SUFFIXES]
    return sorted(out)


def discover_records(root: Path) -> list[Path]:
    """Record folders under ``root`` (``root`` itself may be one), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    if is_record_folder(root) and not _looks_like_challenge_root(root):
        return [root]
    found: list[Path] = []
    folders = {readme.parent for readme in root.rglob("README.md")}
    tracks = [root] if root.name.startswith("track") else [p for p in root.rglob("track*") if p.is_dir()]
    folders |= {sub for t in tracks for sub in t.iterdir() if sub.is_dir()}  # log-only folders have no README
    for folder in sorted(folders):
        if folder == root and _looks_like_challenge_root(root):
            continue
        if is_record_folder(folder):
            found.append(folder)
    # a record's own sub-folders (logs/, ttt_*/) are not records
    return [f for f in found if not any(p in found for p in f.parents)]


def _looks_like_challenge_root(folder: Path) -> bool:
    return any(p.is_dir() and p.name.startswith("track") for p in folder.iterdir())


def empty_candidate_folders(root: Path) -> list[Path]:
    """Leaf folders under a track folder that are not records (empty, or README-less)."""
    out = []
    for track in [root] + [p for p in Path(root).iterdir() if p.is_dir()] if Path(root).is_dir() else []:
        if not track.name.startswith("track"):
            continue
        for sub in sorted(track.iterdir()):
            if sub.is_dir() and not is_record_folder(sub):
                out.append(sub)
    return out


def load_record(folder: Path, warnings: list[str]) -> RecordSources:
    """Read README, submission JSON(s), logs and code of one record, tolerating bad files."""
    folder = Path(folder)
    readme = read_text_safe(folder / "README.md", warnings) if (folder / "README.md").is_file() else None
    if readme is None:
        warnings.append(f"{folder}: README.md missing or unreadable")
    jsons: dict[str, dict] = {}
    for p in sorted(folder.glob("*.json")):
        text = read_text_safe(p, warnings)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            warnings.append(f"{p}: malformed JSON ({exc.msg} at line {exc.lineno}); its fields are ignored")
            continue
        if isinstance(data, dict):
            jsons[p.name] = data
        else:
            warnings.append(f"{p}: expected a JSON object, got {type(data).__name__}; ignored")
    logs: dict[str, str] = {}
    for p in _log_files(folder):
        text = read_text_safe(p, warnings)
        if text is not None:
            logs[str(p.relative_to(folder))] = strip_line_prefixes(text)
    code: dict[str, str] = {}
    for p in sorted(folder.glob("*.py")):
        if p.name.startswith("train_gpt") or p.name in CODE_NAMES:
            text = read_text_safe(p, warnings)
            if text is not None:
                code[p.name] = text
    for name, text in logs.items():
        embedded = code_from_log(text)
        if embedded and not code:
            code[f"{name}#embedded-source"] = embedded
    return RecordSources(folder=folder, readme=readme, jsons=jsons, logs=logs, code=code)


def submission_json(src: RecordSources) -> tuple[str | None, dict]:
    """The record's submission JSON: ``submission*.json`` first, else the first top-level JSON."""
    names = sorted(src.jsons, key=lambda n: (not n.startswith("submission"), n))
    return (names[0], src.jsons[names[0]]) if names else (None, {})


# ---------------------------------------------------------------------------------------------
# Logs: embedded source, config dumps, metrics
# ---------------------------------------------------------------------------------------------

_LINE_PREFIX = re.compile(r"^(?:\d{9,}(?:\.\d+)?[ \t]|\[rank\d+\]:[ \t]?)", re.M)


def strip_line_prefixes(text: str) -> str:
    """Drop per-line unix timestamps and ``[rankN]:`` prefixes that some launchers add to logs."""
    return _LINE_PREFIX.sub("", text)


_CODE_START = re.compile(r'^(?:"""|from __future__|import |#!)', re.M)


def code_from_log(text: str) -> str | None:
    """Upstream-style logs open with the script's own source; return it, or None."""
    head = text[:200_000]
    if "class Hyperparameters" not in head or "os.environ" not in head:
        return None
    m = _CODE_START.search(head)
    if not m or m.start() > 5000:
        return None
    end = re.search(r"^(?:={20,}|logs/|val_bpb:enabled|world_size:|Running Python)", head[m.start():], re.M)
    return head[m.start(): m.start() + end.start()] if end else head[m.start():]


_DUMP_HEADS = ("hyperparameters", "config", "args", "hparams")
_DUMP_LINE = re.compile(r"^\s{1,4}([a-z][a-z0-9_]*):\s?(.*?)\s*$")
_KV_TOKEN = re.compile(r"(?<![\w/.-])([a-z][a-z0-9_]*):([^\s,:\[\]{}]+)")
_KV_EQ = re.compile(r"(?<![\w/.-])([a-z][a-z0-9_]*)=([^\s,;()\[\]{}]+)")
_ENV_TOKEN = re.compile(r"(?<![\w-])([A-Z][A-Z0-9_]{2,})=(\"[^\"]*\"|'[^']*'|[^\s\\;&|`),]+)")
_NON_CONFIG_TOKENS = {"step", "train_time", "step_avg", "val_loss", "val_bpb", "train_loss", "eval_time",
                      "elapsed", "time", "peak_memory_allocated", "reserved"}


def log_dump(text: str) -> dict[str, str]:
    """The ``Hyperparameters:`` block of a log (``  key: value`` lines), every field the trainer printed; a log
    holding several runs gives the last one's values. Empty when the log prints no such block."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").lower() in _DUMP_HEADS:
            for nxt in lines[i + 1: i + 400]:
                m = _DUMP_LINE.match(nxt)
                if not m:
                    break
                out[m.group(1)] = m.group(2).strip()
    return out


def log_config(text: str) -> dict[str, str]:
    """Config values a log states: a ``Hyperparameters:`` block of ``  key: value`` lines, and
    ``key:value`` tokens on non-step lines (``num_layers:11 model_dim:512``)."""
    out = log_dump(text)
    body = code_from_log(text)
    scan = text[len(body):] if body else text
    for line in scan.splitlines()[:3000]:
        s = line.strip()
        if not s or s.startswith(("step:", "ttt_chunk", "[")) or "val_loss" in s:
            continue
        pairs = _KV_TOKEN.findall(s)  # "num_layers:11 model_dim:512"
        if re.match(r"(?:args|config|hparams|hyperparameters|namespace)\b", s, re.I) or "Namespace(" in s:
            pairs += [(k, v) for k, v in _KV_EQ.findall(s) if re.fullmatch(r"[-+\w.'\"]+", v)
                      and not re.match(r"(?:args|self|cfg|config)\.", v)]  # Namespace(num_layers=11, ...)
        for k, v in pairs:
            if k not in _NON_CONFIG_TOKENS and not k.startswith("final"):
                out[k] = v.strip("'\"")
    return out


def dump_block_size(text: str) -> int:
    """Number of keys in the largest ``Hyperparameters:`` block of a log (0 when there is none)."""
    best = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().rstrip(":").lower() in _DUMP_HEADS:
            n = 0
            for nxt in lines[i + 1: i + 400]:
                if not _DUMP_LINE.match(nxt):
                    break
                n += 1
            best = max(best, n)
    return best


def env_assignments(text: str) -> dict[str, str]:
    """``KEY=value`` env settings (shell commands, env listings); keys lower-cased."""
    out: dict[str, str] = {}
    for k, v in _ENV_TOKEN.findall((text or "").replace("\\_", "_")):
        out.setdefault(k.lower(), v.strip("\"'"))
    return out


def readme_config_table(text: str) -> dict[str, str]:
    """``| snake_case_key | value |`` rows of README tables (hyperparameter tables)."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        s = line.strip()
        if not s.startswith("|"):
            continue
        cells = [re.sub(r"[`*]", "", c).replace("\\_", "_").strip() for c in s.strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", cells[0]) \
                and re.fullmatch(r"[\w.+-]{1,30}", cells[1]):
            out.setdefault(cells[0], cells[1])
    return out


_ENV_DEFAULT = re.compile(
    r"""os\.environ\.get\(\s*["']([A-Z][A-Z0-9_]*)["']\s*,\s*("[^"]*"|'[^']*'|[^)\s]+)\s*\)""")


_CONFIG_CLASS = re.compile(r"^class\s+\w*(?:Hyperparameters|Config|Args|HParams)\w*\b.*?:\s*$", re.M)
_CLASS_LITERAL = re.compile(r"^\s{4}([a-z_][a-z0-9_]*)\s*(?::\s*[\w\[\], |.]+)?\s*=\s*"
                            r"([-+]?[\d_.]+(?:e[-+]?\d+)?|True|False|\"[^\"]*\"|'[^']*')\s*(?:#.*)?$", re.M)


def code_defaults(code: str) -> dict[str, str]:
    """Defaults of ``os.environ.get("KEY", default)`` in a training script, then literal attributes of a
    Hyperparameters / Config class (``num_layers: int = 11``); keys lower-cased."""
    out: dict[str, str] = {}
    for k, v in _ENV_DEFAULT.findall(code or ""):
        out.setdefault(k.lower(), v.strip("\"'").replace("_", "") if re.fullmatch(r"[\d_.]+", v) else v.strip("\"'"))
    for m in _CONFIG_CLASS.finditer(code or ""):
        body = code[m.end():]
        end = re.search(r"^\S", body, re.M)
        for k, v in _CLASS_LITERAL.findall(body[: end.start()] if end else body):
            out.setdefault(k, v.strip("\"'").replace("_", "") if re.fullmatch(r"[\d_.]+", v) else v.strip("\"'"))
    return out


# A named final-metric line: a name (words joined by _ - : or one space, e.g. "pre-quantization post-ema",
# "ttt_sliding:done"), optional key:value tokens ("stride:64"), an optional val_loss, then val_bpb.
_METRIC_LINE = re.compile(
    r"^(?P<name>[A-Za-z][\w:.-]*(?: [A-Za-z][\w.-]*)?)(?:[ \t]+(?!val_)[a-z_]+[:=][\w.]+)*"
    r"(?:[ \t,]+val_loss[:=]\s*(?P<loss>[0-9.]+))?[ \t,]+val_bpb[:=]\s*(?P<bpb>[0-9.]+)", re.M)


def log_metrics(text: str) -> list[tuple[str, float]]:
    """(name, val_bpb) of every named final-metric line: ``final_int8_zlib_roundtrip_exact val_loss:.. val_bpb:..``,
    ``quantized_ttt_phased val_bpb:..`` (no loss), ``final_sliding_window_eval_exact stride:64 val_loss:..``,
    ``pre-quantization post-ema val_loss:..``. Step lines (``step:N/M``) are not final metrics."""
    out = []
    for m in _METRIC_LINE.finditer(text):
        name = m.group("name").rstrip(":")
        if name.startswith("step") or name.lower() in ("val", "eval") or re.match(r"step[:\s]", m.group(0)):
            continue
        try:
            out.append((name, float(m.group("bpb"))))
        except ValueError:
            continue
    return out


def log_final_bpb(text: str) -> tuple[str, float] | None:
    """The final score of a log: the latest evaluation stage (post-quant, sliding, TTT) read through the table of
    final-line formats (``core/log_formats.py``), named by its line; for a log none of whose lines is in the
    table, the last named metric line (an ``*_exact`` line wins over its rounded twin)."""
    from scripts.causal.core.log_formats import final_score

    fin = final_score(text)
    if fin is not None and fin.stage != "pre_quant":
        return re.split(r" (?:stride:\S+ )?(?:sliding )?val_(?:loss|bpb)", fin.line)[0], fin.val_bpb
    metrics = log_metrics(text)
    if not metrics:
        return None
    last_name, last = metrics[-1]
    exact = [(n, v) for n, v in metrics if n.endswith("_exact")]
    if exact and (last_name.endswith("_exact") or exact[-1][0].startswith(last_name)):
        return exact[-1]
    return last_name, last


def log_seed(name: str, text: str) -> int | None:
    m = re.search(r"^\s*seed[:=]\s*(\d+)\s*$", text[:400_000], re.M) or re.search(r"seed[_-]?(\d+)", name)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# JSON scores
# ---------------------------------------------------------------------------------------------

def _num(v) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def json_seed_scores(d: dict) -> list[tuple[int, float | None]]:
    """Per-seed scores from ``seed_results`` ({seed: {val_bpb|...}}) or ``seeds`` + ``seed_scores``."""
    out: list[tuple[int, float | None]] = []
    sr = d.get("seed_results")
    if isinstance(sr, dict):
        for k, v in sr.items():
            try:
                seed = int(k)
            except ValueError:
                continue
            val = None
            if isinstance(v, dict):
                for key in ("val_bpb", "mean_val_bpb", "sliding_val_bpb", "post_ttt_val_bpb", "val_var_bpb"):
                    if _num(v.get(key)) is not None:
                        val = _num(v.get(key))
                        break
                if val is None:
                    bpb_keys = [k2 for k2 in v if "bpb" in k2 and _num(v[k2]) is not None]
                    val = _num(v[bpb_keys[0]]) if bpb_keys else None
            else:
                val = _num(v)
            out.append((seed, val))
    elif isinstance(sr, list):
        for item in sr:
            if isinstance(item, dict) and _num(item.get("seed")) is not None:
                out.append((int(item["seed"]), _num(item.get("val_bpb"))))
    if not out and isinstance(d.get("seeds"), list):
        scores = d.get("seed_scores") or d.get("seed_val_bpb") or []
        for i, s in enumerate(d["seeds"]):
            if _num(s) is None:
                continue
            v = _num(scores[i]) if isinstance(scores, list) and i < len(scores) else None
            out.append((int(s), v))
    if not out and _num(d.get("seed")) is not None:
        out.append((int(d["seed"]), None))
    return out


def json_headline(d: dict) -> tuple[float | None, str | None]:
    """The headline bpb a submission JSON gives, and the key it came from.

    Order: an explicit mean, a sliding/TTT score next to a plain one (the lower, i.e. the headline),
    ``val_bpb``; then ``val_loss`` when it is the only score and lies in the bpb range."""
    for key in ("mean_val_bpb", "val_bpb_mean", "bpb_mean", "final_val_bpb", "headline_val_bpb"):
        if _num(d.get(key)) is not None:
            return _num(d[key]), key
    plain = _num(d.get("val_bpb"))
    for key in ("sliding_val_bpb", "ttt_val_bpb", "val_bpb_sliding", "sliding_window_val_bpb", "post_ttt_val_bpb"):
        v = _num(d.get(key))
        if v is not None and (plain is None or v < plain):
            return v, key
    if plain is not None:
        return plain, "val_bpb"
    for key, v in d.items():  # any other top-level bpb score (val_var_bpb, final_bpb, ...)
        if "bpb" in key.lower() and _num(v) is not None and not re.search(
                r"std|pre|delta|gap|base|best|prev|sota|roundtrip|diff|improv|target|quant", key, re.I):
            return _num(v), key
    seeds = [v for _, v in json_seed_scores(d) if v is not None]
    if seeds:
        return statistics.fmean(seeds), "seed_results(mean)"
    loss = _num(d.get("val_loss"))
    if loss is not None and 0.9 <= loss <= 1.6:
        return loss, "val_loss(as bpb)"
    return None, None


def json_artifact_bytes(d: dict) -> tuple[int | None, str | None]:
    for key in ("bytes_total", "artifact_bytes", "artifact_size_bytes", "artifact_bytes_max", "artifact_bytes_mean",
                "total_bytes", "submission_bytes"):
        v = _num(d.get(key))
        if v is not None and v > 1000:
            return int(v), key
    return None, None


# ---------------------------------------------------------------------------------------------
# Challenge README leaderboard tables
# ---------------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(<([^>]*)>\)|\]\(((?:[^()\s]|\([^()]*\))*)\)")
_PR_REF = re.compile(r"(?:PR\s*#|pull/|#)(\d{2,5})\b")


def parse_leaderboard(text: str) -> list[LeaderboardRow]:
    """Rows of every markdown table whose header has Run and Score columns."""
    rows: list[LeaderboardRow] = []
    lines = (text or "").splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and "score" in line.lower() and "run" in line.lower():
            header = [c.strip().lower() for c in line.strip("|").split("|")]
            i += 2
            rank = 0
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                cell = dict(zip(header, cells, strict=False))
                rank += 1
                info = cell.get("info", "")
                m = None
                for angled, plain in _LINK.findall(info):  # link targets; %20, <a b> spaces, (balanced) parens
                    m = m or re.search(r"records/([^/]+/[^/]+?)(?:/README\.md|/)?$", unquote((angled or plain).strip()))
                summary = cell.get("summary", "")
                own = [int(x) for x in re.findall(r"pull/(\d+)", info)]
                lead = re.match(r"\s*On PR #(\d+)", summary)
                prs = tuple(dict.fromkeys(own + ([int(lead.group(1))] if lead else [])))
                rows.append(LeaderboardRow(
                    table=heading, rank=rank, run=cell.get("run", ""), score=_num(cell.get("score")),
                    author=cell.get("author", ""), summary=summary, date=cell.get("date", ""),
                    prs=prs, record_path=m.group(1) if m else None))
                i += 1
            continue
        i += 1
    return rows


def find_challenge_readme(input_dir: Path) -> Path | None:
    """``DIR/README.md`` or ``DIR/../README.md`` (or two up, for a single record) with a leaderboard table."""
    d = Path(input_dir).resolve()
    for cand in (d / "README.md", d.parent / "README.md", d.parent.parent / "README.md"):
        if cand.is_file():
            try:
                head = cand.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if re.search(r"^\|\s*Run\s*\|\s*Score", head, re.M | re.I):
                return cand
    return None
