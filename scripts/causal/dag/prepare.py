"""Turn the intervention matrix (+ our own experiment rows) into a clean numeric table for FCI.

Encoding: binary flags -> 0/1 (null = 0: a record that does not mention a trick did not use it);
categoricals -> one indicator column per non-reference level (``activation=gelu``; null = reference);
numerics -> float (null imputed with the median when at most ``max_null_frac`` of rows are null, else the
column is dropped). Mediators: ``params`` (estimated from the shape features), ``artifact_bytes``,
``quant_gap`` (post- minus pre-quant bpb). Context variables (tier 0, never treatments): our experiment
rows get ``regime_experiment = 1``; records of the non-record track get ``track_non_record = 1``.

Cleaning: all-null, constant and near-constant columns, exact duplicates / complements and columns that
make the correlation matrix singular are dropped, each with its reason, so Fisher-z never sees a singular
matrix and never links a constant column to everything.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.stats import rankdata

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.schema import BASELINE_FEATURES, ExperimentRow
from scripts.causal.dag.expert import CANONICAL_FEATURES, TARGET, ExpertDag

REGIME = "regime_experiment"
TRACK = "track_non_record"  # context: the non-record track has other rules (unlimited compute, exotic models)
CONTEXTS = (REGIME, TRACK)
MEDIATORS = ("params", "artifact_bytes", "quant_gap")
CATEGORICAL_REFERENCE = {"activation": "relu2", "gptq": "none", "compression": "zlib"}
ROW_FIELDS = ("intervention", "feature", "value", "val_bpb", "seed", "arm")


@dataclasses.dataclass(frozen=True)
class PreparedMatrix:
    """The FCI input: ``data`` (n x p float, no NaN), column names, tiers and what was dropped/imputed."""

    data: np.ndarray
    columns: tuple[str, ...]
    tiers: tuple[int, ...]
    feature_of: Mapping[str, str]  # column -> canonical feature / mediator it encodes
    row_ids: tuple[str, ...]
    dropped: tuple[dict, ...]
    imputed: tuple[dict, ...]
    excluded_rows: tuple[dict, ...]

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.data[:, self.columns.index(name)]


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, str):
        try:
            return None if v is None else float(v)
        except ValueError:
            return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


def _kind_of(values: list[Any], feature: str, expert_kinds: Mapping[str, str]) -> str:
    if feature in expert_kinds:
        return expert_kinds[feature]
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "binary"
    if present and all(isinstance(v, str) for v in present):
        return "categorical"
    return "numeric"


def estimate_params(f: Mapping[str, Any]) -> float | None:
    """Rough parameter count from the shape features (None when a shape is unknown)."""
    L, d, m, v = (_num(f.get(k)) for k in ("num_layers", "model_dim", "mlp_mult", "vocab_size"))
    if None in (L, d, m, v):
        return None
    tied = f.get("tied_embeddings")
    return L * (4 * d * d + 2 * m * d * d) + v * d * (1 if tied in (True, None) else 2)


def validate_experiment_rows(rows: Iterable[Mapping | ExperimentRow]) -> list[ExperimentRow]:
    """Check experiment rows ``{"intervention","feature","value","val_bpb","seed","arm"}``."""
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, ExperimentRow):
            out.append(r)
            continue
        missing = [k for k in ROW_FIELDS if k not in r]
        if missing:
            raise DataFormatError(f"experiment_rows[{i}]: missing fields {missing}; each row needs {list(ROW_FIELDS)}")
        if r["arm"] not in ("control", "treatment"):
            raise DataFormatError(f"experiment_rows[{i}].arm is {r['arm']!r}; allowed: 'control', 'treatment'")
        if _num(r["val_bpb"]) is None:
            raise DataFormatError(f"experiment_rows[{i}].val_bpb is {r['val_bpb']!r}; it must be the measured number")
        out.append(ExperimentRow(str(r["intervention"]), r["feature"], r["value"], float(r["val_bpb"]),
                                 int(r["seed"]), r["arm"], r.get("control_value")))
    return out


def _raw_rows(records: list[Mapping], experiment_rows: list[ExperimentRow]) -> tuple[list[dict], list[dict]]:
    rows, excluded = [], []
    for i, rec in enumerate(records):
        rid = str(rec.get("record_id", f"records[{i}]"))
        y = _num(rec.get("val_bpb"))
        if y is None:
            excluded.append({"row": rid, "reason": "val_bpb is null"})
            continue
        feats = dict(rec.get("features") or {})
        pre, post = _num(rec.get("pre_quant_bpb")), _num(rec.get("post_quant_bpb"))
        row = {"_id": rid, "_features": feats, TARGET: y, "params": estimate_params(feats),
               "artifact_bytes": _num(rec.get("artifact_bytes")),
               "quant_gap": (post - pre) if pre is not None and post is not None else None}
        row[TRACK] = 1.0 if "non_record" in str(rec.get("track") or "") else 0.0
        if experiment_rows:
            row[REGIME] = 0.0
        rows.append(row)
    for j, ex in enumerate(experiment_rows):
        rid = f"exp:{ex.intervention}:{ex.arm}:{ex.seed}:{j}"
        feats = dict(BASELINE_FEATURES)
        if ex.arm == "treatment":
            if not ex.feature or ex.feature not in BASELINE_FEATURES:
                excluded.append({"row": rid, "reason": f"treatment has no canonical feature ({ex.feature!r}); "
                                 "analysed only under 'experiments'"})
                continue
            base = BASELINE_FEATURES[ex.feature]
            if isinstance(base, (int, float)) and not isinstance(base, bool):
                if _num(ex.value) is None or _num(ex.control_value) is None:
                    excluded.append({"row": rid, "reason": f"numeric feature {ex.feature} without control_value: "
                                     "our preset's scale differs from the leaderboard's"})
                    continue
                feats[ex.feature] = float(base) + _num(ex.value) - _num(ex.control_value)
            else:
                feats[ex.feature] = ex.value
        rows.append({"_id": rid, "_features": feats,
                     TARGET: ex.val_bpb, "params": estimate_params(feats), "artifact_bytes": None,
                     "quant_gap": None, REGIME: 1.0, TRACK: 0.0})
    return rows, excluded


def build_matrix(records: list[Mapping], *, expert: ExpertDag | None = None,
                 experiment_rows: Iterable[Mapping | ExperimentRow] = (), max_null_frac: float = 0.5,
                 min_minority: int = 3, max_mode_frac: float = 0.95) -> PreparedMatrix:
    """Encode records into a numeric matrix and clean it; every drop and imputation is reported."""
    exp_rows = validate_experiment_rows(experiment_rows)
    rows, excluded = _raw_rows(list(records), exp_rows)
    if len(rows) < 5:
        raise DataFormatError(f"intervention matrix has {len(rows)} usable rows (val_bpb non-null); need at least 5")
    expert_kinds = {n.name: n.kind for n in expert.nodes} if expert else {}
    features = [f for f in CANONICAL_FEATURES if any(f in r["_features"] for r in rows)]
    features += sorted({k for r in rows for k in r["_features"]} - set(features))
    cols: dict[str, np.ndarray] = {}
    feature_of: dict[str, str] = {}
    tiers: dict[str, int] = {}
    dropped: list[dict] = []
    imputed: list[dict] = []
    n = len(rows)

    def put(name: str, values: np.ndarray, feature: str, tier: int) -> None:
        cols[name], feature_of[name], tiers[name] = values, feature, tier

    if exp_rows:
        put(REGIME, np.array([r[REGIME] for r in rows]), REGIME, 0)
    put(TRACK, np.array([r[TRACK] for r in rows]), TRACK, 0)
    for f in features:
        values = [r["_features"].get(f) for r in rows]
        kind = _kind_of(values, f, expert_kinds)
        n_null = sum(v is None for v in values)
        if n_null == n:
            dropped.append({"column": f, "reason": "all null"})
            continue
        if kind == "binary":
            arr = np.array([0.0 if v is None else float(bool(v) and v not in ("false", "0", "none")) for v in values])
            if n_null:
                imputed.append({"column": f, "n": n_null, "strategy": "null -> 0 (flag not mentioned = not used)"})
            put(f, arr, f, 0)
        elif kind == "categorical":
            ref = CATEGORICAL_REFERENCE.get(f)
            levels = sorted({str(v) for v in values if v is not None})
            if ref is None:
                ref = max(levels, key=lambda lv: sum(str(v) == lv for v in values))
            if n_null:
                imputed.append({"column": f, "n": n_null, "strategy": f"null -> reference level {ref!r}"})
            for lv in levels:
                if lv != ref:
                    put(f"{f}={lv}", np.array([1.0 if str(v) == lv else 0.0 for v in values]), f, 0)
        else:
            nums = [_num(v) for v in values]
            _put_numeric(f, nums, 0, put, dropped, imputed, max_null_frac)
    for m in MEDIATORS:
        _put_numeric(m, [r[m] for r in rows], 1, put, dropped, imputed, max_null_frac)
    put(TARGET, np.array([r[TARGET] for r in rows]), TARGET, 2)
    names = list(cols)
    keep, more = clean_columns(np.column_stack([cols[c] for c in names]), names, min_minority=min_minority,
                               max_mode_frac=max_mode_frac, protect=(TARGET, REGIME))
    dropped.extend(more)
    data = np.column_stack([cols[c] for c in keep])
    return PreparedMatrix(data, tuple(keep), tuple(tiers[c] for c in keep), {c: feature_of[c] for c in keep},
                          tuple(r["_id"] for r in rows), tuple(dropped), tuple(imputed), tuple(excluded))


def _put_numeric(name, nums, tier, put, dropped, imputed, max_null_frac) -> None:
    n_null = sum(v is None for v in nums)
    if n_null == len(nums):
        dropped.append({"column": name, "reason": "all null"})
        return
    if n_null / len(nums) > max_null_frac:
        dropped.append({"column": name, "reason": f"{n_null} of {len(nums)} values null (> {max_null_frac:.0%})"})
        return
    med = float(np.median([v for v in nums if v is not None]))
    if n_null:
        imputed.append({"column": name, "n": n_null, "strategy": f"null -> median {med:.6g}"})
    put(name, np.array([med if v is None else v for v in nums], dtype=float), name, tier)


def clean_columns(data: np.ndarray, names: list[str], *, min_minority: int = 3, max_mode_frac: float = 0.95,
                  protect: tuple[str, ...] = (TARGET,)) -> tuple[list[str], list[dict]]:
    """Names to keep and a list of {column, reason} for constant, near-constant, duplicate and collinear ones."""
    n = data.shape[0]
    keep: list[int] = []
    dropped: list[dict] = []
    for j, name in enumerate(names):
        col = data[:, j]
        uniq, counts = np.unique(col, return_counts=True)
        if len(uniq) <= 1:
            dropped.append({"column": name, "reason": f"constant (all {uniq[0]:.6g})" if len(uniq) else "empty"})
            continue
        minority = n - int(counts.max())
        if name not in protect and (minority < min_minority or counts.max() / n > max_mode_frac):
            dropped.append({"column": name, "reason": f"near-constant ({minority} of {n} rows differ from the mode)"})
            continue
        twin = next((names[k] for k in keep if np.array_equal(data[:, k], col)), None)
        if twin is None and len(uniq) == 2:
            twin = next((names[k] for k in keep if _is_complement(data[:, k], col)), None)
            if twin is not None:
                dropped.append({"column": name, "reason": f"complement of {twin} (perfectly collinear)"})
                continue
        if twin is not None:
            dropped.append({"column": name, "reason": f"exact duplicate of {twin}"})
            continue
        keep.append(j)
    # Greedy rank check on the rank-transformed columns: drop a column that is a linear function of the
    # kept ones (the Fisher-z partial correlations would need a singular inverse).
    final: list[int] = []
    corr_all = np.corrcoef(rank_transform(data[:, keep]), rowvar=False) if len(keep) > 1 else None
    for pos, j in enumerate(keep):
        if corr_all is not None and final:
            sub_idx = [keep.index(k) for k in final] + [pos]
            sub = corr_all[np.ix_(sub_idx, sub_idx)]
            if np.linalg.matrix_rank(sub, tol=1e-8) < len(sub_idx) and names[j] not in protect:
                dropped.append({"column": names[j], "reason": "linearly dependent on earlier columns (singular)"})
                continue
        final.append(j)
    return [names[j] for j in final], dropped


def _is_complement(a: np.ndarray, b: np.ndarray) -> bool:
    ua, ub = np.unique(a), np.unique(b)
    if len(ua) != 2 or len(ub) != 2:
        return False
    return bool(np.array_equal(a == ua[0], b == ub[1]))


def rank_transform(data: np.ndarray) -> np.ndarray:
    """Column-wise average ranks (Fisher-z on ranks = partial Spearman correlation, fit for mixed data)."""
    return rankdata(np.asarray(data, dtype=float), axis=0).astype(float)
