"""One leaderboard record folder -> a record dict and its own features (no lineage yet).

Sources are read in order of trust: log config dumps and env settings, code defaults, submission JSON keys,
README / JSON prose. The headline score reconciles JSON, README headline, logs and the leaderboard row.
Ablation rows are mined from the README (``ablations``) and typed (``row_types``) on this record's stack.
Bad input never raises: it becomes a warning naming the file.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from scripts.causal.core.schema import SeedScore
from scripts.causal.extract import features as fr
from scripts.causal.extract import lineage as lin
from scripts.causal.extract import records as rp
from scripts.causal.extract.ablations import extract_ablations

_num = rp._num


def _readme_numbers(readme: str) -> list[tuple[float, str, str]]:
    """(value, text, context) of bpb-looking numbers in the README."""
    out = []
    for m in re.finditer(r"(?<![\d.])([0-4]\.\d{3,8})(?![\d.])", readme or ""):
        ctx = readme[max(0, m.start() - 80): m.end() + 40]
        out.append((float(m.group(1)), m.group(1), ctx))
    return out


def _precise_match(target: float, candidates: list[tuple[float, str]], tol: float) -> float | None:
    """The most precise candidate within ``tol`` of ``target``."""
    best = None
    for v, text in candidates:
        if abs(v - target) <= tol:
            digits = len(text.split(".")[-1]) if "." in text else 0
            if best is None or digits > best[1]:
                best = (v, digits)
    return best[0] if best else None


_HEADLINE = re.compile(r"val[_\\ ]*(?:var[_\\ ]*)?bpb\W{0,6}(?:=|:)?\W{0,4}([0-4]\.\d{3,8})|([0-4]\.\d{3,8})\s*BPB", re.I)


def readme_headline(readme: str) -> tuple[float, str, str] | None:
    """The score a README headlines in its first lines: (value, text, line)."""
    lines = (readme or "").splitlines()[:12]
    for line in lines:
        m = _HEADLINE.search(line)
        if m:
            text = m.group(1) or m.group(2)
            context = " ".join(x for x in lines if text in x)  # the title's score is often qualified below it
            return float(text), text, context
    return None


def _digits(text: str) -> int:
    return len(text.split(".")[-1])


def _headline(src: rp.RecordSources, jname: str | None, jd: dict, log_finals: dict[str, tuple[str, float]],
              lb_score: float | None, prov: dict, warns: list[str]) -> float | None:
    val, key = rp.json_headline(jd)
    if val is not None:
        prov["val_bpb"] = f"{jname}:{key}"
    head = readme_headline(src.readme or "")
    if head is not None and val is not None:
        hv, htext, hline = head
        if abs(round(val, _digits(htext)) - hv) > 10 ** -_digits(htext) / 2 + 1e-12 and re.search(r"mean|avg|average",
                                                                                                  hline, re.I):
            warns.append(f"{src.folder.name}: {jname} {key}={val} is not the README's headline mean {htext}; "
                         "using the README")
            val = hv
            prov["val_bpb"] = "README.md:headline mean (JSON held a single seed)"
            lb_score = None
    seeds = [v for _, v in rp.json_seed_scores(jd) if v is not None]
    readme_nums = [(v, t) for v, t, ctx in _readme_numbers(src.readme or "")
                   if re.search(r"bpb|mean|score|val", ctx, re.I)]
    # JSON gave the best seed while the README headlines the mean
    if val is not None and len(seeds) > 1 and abs(val - min(seeds)) < 1e-9:
        mean = statistics.fmean(seeds)
        stated = _precise_match(mean, readme_nums, 6e-5)
        val = stated if stated is not None else round(mean, 8)
        prov["val_bpb"] = f"README.md:mean of seeds (JSON {key} was the best seed)"
    if val is None and head is not None and log_finals:
        # no JSON: the README headline decides; a log value that rounds to it adds precision
        hv, htext, _ = head
        d = _digits(htext)
        cands = [v for _, v in log_finals.values()] + [statistics.fmean(v for _, v in log_finals.values())]
        close = [v for v in cands if abs(round(v, d) - hv) <= 10 ** -d / 2 + 1e-12]
        val = round(close[0], 8) if close else hv
        prov["val_bpb"] = "README.md:headline" + (" (precise value from logs)" if close else "")
    if val is None and log_finals:
        vals = [v for _, v in log_finals.values()]
        mean = statistics.fmean(vals)
        stated = _precise_match(mean, readme_nums, 6e-5) if len(vals) > 1 else None
        val = stated if stated is not None else (vals[0] if len(vals) == 1 else round(mean, 8))
        prov["val_bpb"] = ("log:" + next(iter(log_finals.values()))[0]) if len(vals) == 1 else "logs:mean of seeds"
    if val is None and readme_nums:
        m = re.search(r"(?:val_bpb|bpb|score)[^0-9\n]{0,30}([0-4]\.\d{3,8})", src.readme or "", re.I)
        if m:
            val = float(m.group(1))
            prov["val_bpb"] = "README.md:first bpb number"
    if head is not None and val is None:
        val = head[0]
        prov["val_bpb"] = "README.md:headline"
    head_agrees = head is not None and val is not None and abs(
        round(val, _digits(head[1])) - head[0]) <= 10 ** -_digits(head[1]) / 2 + 1e-12
    if head_agrees:
        lb_score = None
    if lb_score is not None and val is not None and _digits(repr(lb_score)) <= 6:
        d = _digits(repr(lb_score))
        if abs(round(val, d) - lb_score) > 10 ** -d / 2 + 1e-12:
            stated = [(v, t) for v, t, ctx in _readme_numbers(src.readme or "") if re.search(r"mean", ctx, re.I)]
            better = _precise_match(lb_score, stated, 10 ** -d / 2)
            if better is not None:
                val = better
                prov["val_bpb"] = "README.md:stated mean matching the leaderboard score"
    if lb_score is not None:
        if val is None or abs(val - lb_score) > 6e-4:
            cands = readme_nums + [(v, f"{v}") for _, v in log_finals.values()]
            cands += [(float(v), str(v)) for k, v in jd.items() if "bpb" in k and isinstance(v, (int, float))]
            better = _precise_match(lb_score, cands, 5.1e-4)
            if better is not None:
                if val is not None:
                    warns.append(f"{src.folder.name}: headline {val} disagrees with leaderboard {lb_score}; "
                                 f"using {better}")
                val = better
                prov["val_bpb"] = "matched leaderboard score (most precise source value)"
            elif val is None:
                val = lb_score
                prov["val_bpb"] = "leaderboard table score"
    return val


def _merged_config(src: rp.RecordSources, jd: dict) -> tuple[dict[str, str], dict[str, str]]:
    """Config keys with their source kind: log dump > env settings > code defaults > JSON scalars."""
    cfg: dict[str, str] = {}
    kind: dict[str, str] = {}

    def add(d: dict, label: str) -> None:
        for k, v in d.items():
            if k not in cfg:
                cfg[k] = str(v)
                kind[k] = label

    for name, text in src.logs.items():
        if not name.endswith(".txt") and not name.endswith(".log"):
            continue
        add(rp.log_config(text), f"log:{name}")
        if len(cfg) > 20:
            break
    for name, text in src.logs.items():
        add(rp.env_assignments(text[:20000]), f"log:{name}(env)")
        break
    add(rp.env_assignments(src.readme or ""), "README.md(env)")
    add(rp.readme_config_table(src.readme or ""), "README.md(table)")
    for name, code in src.code.items():
        add(rp.code_defaults(code), f"code:{name}")
    flat = dict(jd)
    for key in ("config", "hyperparameters", "hparams", "args", "model", "architecture", "training", "settings"):
        if isinstance(jd.get(key), dict):
            flat.update({k: v for k, v in jd[key].items() if k not in flat})
    add({k.lower(): v for k, v in flat.items() if isinstance(v, (int, float, bool))
         or (isinstance(v, str) and len(v) < 40)}, "json")
    return cfg, kind


def _prose_sources(src: rp.RecordSources, jd: dict, lb_row: rp.LeaderboardRow | None) -> list[tuple[str, str]]:
    texts = []
    if src.readme:
        texts.append(("README.md", fr.positive_text(src.readme)))
    jtext = " . ".join(str(jd.get(k, "")) for k in ("name", "blurb", "technique_summary", "description", "summary"))
    if isinstance(jd.get("techniques"), list):
        jtext += " . " + " . ".join(map(str, jd["techniques"]))
    texts.append(("json", jtext))
    if lb_row is not None:
        texts.append(("leaderboard", f"{lb_row.run} . {lb_row.summary}"))
    return texts


def _nats_ratio(jd: dict) -> float | None:
    """bpb per nat of this record (its tokenizer's bytes per token), from a matching bpb/loss pair."""
    for bk, lk in (("val_bpb", "val_loss"), ("mean_val_bpb", "mean_val_loss"), ("val_bpb", "val_loss_sliding"),
                   ("val_bpb", "val_loss_nats"), ("pre_quant_val_bpb", "pre_quant_val_loss")):
        bpb, loss = _num(jd.get(bk)), _num(jd.get(lk))
        if bpb and loss and loss > bpb * 1.2:
            return bpb / loss
    return None


def extract_record(folder: Path, *, track: str, lb_row: rp.LeaderboardRow | None, warnings: list[str],
                   record_absent: dict | None = None) -> tuple[dict, dict[str, tuple[object, str]]]:
    """Everything one folder says (no lineage yet). Returns (record dict, own features with provenance)."""
    warns: list[str] = []
    record_absent = {} if record_absent is None else record_absent
    src = rp.load_record(folder, warns)
    jname, jd = rp.submission_json(src)
    if jname is None:
        warns.append(f"{folder.name}: no submission JSON; scores come from the README and logs")
    prov: dict[str, str] = {}
    log_finals: dict[str, tuple[str, float]] = {}
    log_seeds: dict[int, float] = {}
    for name, text in src.logs.items():
        fin = rp.log_final_bpb(text)
        if fin:
            log_finals[name] = fin
            s = rp.log_seed(name, text)
            if s is not None:
                log_seeds.setdefault(s, fin[1])
    val = _headline(src, jname, jd, log_finals, lb_row.score if lb_row else None, prov, warns)

    pre = None
    for k in ("pre_quant_val_bpb", "pre_quant_bpb", "prequant_val_bpb", "val_bpb_prequant"):
        if _num(jd.get(k)) is not None:
            pre, prov["pre_quant_bpb"] = _num(jd[k]), f"{jname}:{k}"
            break
    post = None
    for k in ("post_quant_val_bpb", "int6_zstd_val_bpb", "int8_zlib_val_bpb", "val_bpb_roundtrip",
              "post_quant_standard_val_bpb", "roundtrip_val_bpb", "quantized_val_bpb"):
        if _num(jd.get(k)) is not None:
            post, prov["post_quant_bpb"] = _num(jd[k]), f"{jname}:{k}"
            break
    if post is None or pre is None:
        for name, text in src.logs.items():
            for mname, v in rp.log_metrics(text):
                low = mname.lower()
                if post is None and "roundtrip" in low and low.endswith("_exact"):
                    post, prov["post_quant_bpb"] = v, f"log:{name}:{mname}"
                if pre is None and re.search(r"pre[_-]?quant|prequant|pre_ema|ema_eval", low):
                    pre, prov["pre_quant_bpb"] = v, f"log:{name}:{mname}"
            break
    art, akey = rp.json_artifact_bytes(jd)
    if art is not None:
        prov["artifact_bytes"] = f"{jname}:{akey}"
    else:
        for name, text in src.logs.items():
            m = re.findall(r"Total submission size[^:\n]*:\s*(\d+)\s*bytes", text)
            if m:
                art, prov["artifact_bytes"] = int(m[-1]), f"log:{name}:Total submission size"
                break

    seeds = [SeedScore(seed=s, val_bpb=v) for s, v in rp.json_seed_scores(jd)]
    if any(s.val_bpb is None for s in seeds) and log_seeds:
        seeds = [SeedScore(seed=s.seed, val_bpb=s.val_bpb if s.val_bpb is not None else log_seeds.get(s.seed))
                 for s in seeds]
    if not seeds and log_seeds:
        seeds = [SeedScore(seed=s, val_bpb=v) for s, v in log_seeds.items()]
        prov["seeds"] = "logs:final metric per seed"
    elif seeds:
        prov["seeds"] = f"{jname}:seed_results"

    own_pr = None
    for k in ("pr", "pr_number", "pull_request"):
        if own_pr is None and _num(jd.get(k)) is not None:
            own_pr = int(jd[k])
    base_prs = lin.base_prs(src.readme or "", jd, own_pr, lb_row.summary if lb_row else "")
    if own_pr is None and lb_row is not None:
        # the leaderboard's "On PR #N" is usually the record's own PR, unless the README names N as its base
        own_pr = next((n for n in lb_row.prs if n not in base_prs), None)
    base_prs = [n for n in base_prs if n != own_pr]
    base_links = [f for f in lin.base_record_links(src.readme or "") if f != folder.name]

    # features, in order of trust
    own: dict[str, tuple[object, str]] = {}
    cfg, kind = _merged_config(src, jd)
    for feat, (value, rule) in fr.features_from_config(cfg).items():
        key = rule.split(":", 1)[1].split(" ")[0].split("/")[0]
        own[feat] = (value, f"{kind.get(key, 'config')}: {rule}")
    for name, code in src.code.items():
        for feat, (value, rule) in fr.features_from_code(code).items():
            if feat not in own:
                own[feat] = (value, f"code:{name}: {rule}")
    for name, text in src.logs.items():  # runtime lines (e.g. varlen warmup buckets) reveal code paths too
        m = re.search(r"^(?:warmup_cu_buckets|cu_seqlens)\b.*$", text, re.M)
        if m and "varlen_attention" not in own:
            own["varlen_attention"] = (True, f"log:{name}: '{m.group(0)[:40]}'")
    for label, text in _prose_sources(src, jd, lb_row):
        for feat, (value, rule) in fr.features_from_prose(text).items():
            if feat not in own or ("dead code" in rule and label == "README.md"):
                own[feat] = (value, f"{label}: {rule}")  # "X was dead code" overrides X's config flag
    dump_sizes = {name: rp.dump_block_size(text) for name, text in src.logs.items()}
    big = max(dump_sizes, key=dump_sizes.get) if dump_sizes else None
    absent = {}
    if big is not None and dump_sizes[big] >= fr.FULL_DUMP_MIN_KEYS:
        absent = {f: (False, f"log:{big}: no config key for it in the full config dump")
                  for f in fr.KEYED_FLAGS if f not in own}
    record_absent[folder.name] = absent
    if not src.readme and not jd and not src.logs:
        warns.append(f"{folder.name}: no readable README, JSON or logs; record has nulls only")

    ratio = _nats_ratio(jd)
    ablations = extract_ablations(src.readme or "", nats_to_bpb=ratio)  # what the record states (logs give scores)
    date = (str(jd.get("date"))[:10] if jd.get("date") else None) or (lb_row.date if lb_row else None)
    if date is None:
        m = re.match(r"(\d{4}-\d{2}-\d{2})", folder.name)
        date = m.group(1) if m else None
    author = jd.get("author") or (lb_row.author if lb_row else None)
    record = {
        "record_id": folder.name, "track": track, "date": date, "author": author, "val_bpb": val,
        "pre_quant_bpb": pre, "post_quant_bpb": post, "artifact_bytes": art, "seeds": seeds,
        "base_prs": tuple(base_prs), "ablations": tuple(ablations), "provenance": prov, "pr": own_pr,
        "_base_links": base_links,
        "leaderboard_rank": lb_row.rank if lb_row else None, "leaderboard_score": lb_row.score if lb_row else None,
        "summary": lb_row.summary if lb_row else (jd.get("name") if isinstance(jd.get("name"), str) else None),
        "warnings": tuple(warns),
    }
    warnings.extend(warns)
    return record, own
