"""Shared data shapes (frozen dataclasses), plus the versioned-JSON helpers of ``core.jsonio`` re-exported.

Every JSON file written to results/ or dags/ carries ``schema_version``; ``read_json`` rejects
versions it does not know. Sections below are owned by the stage that produces the data.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from scripts.causal.core.errors import DataFormatError
from scripts.causal.core.evidence_shapes import (  # noqa: F401  (re-exported: shapes of the evidence table)
    EVIDENCE_CLASSES,
    EVIDENCE_METRICS,
    CalibrationItem,
    EvidenceEntry,
    TransferResult,
    VerifiedRecord,
)
from scripts.causal.core.jsonio import (  # noqa: F401  (re-exported: every stage imports them from schema)
    MATRIX_SCHEMA_VERSION,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    _jsonable,
    file_sha256,
    read_json,
    write_json,
)

# ---------------------------------------------------------------------------------------------
# Training (issue 2). RunResult itself is defined in train_gpt.py (the trainer is standalone);
# it is re-exported here so stages import every shape from one place.
# ---------------------------------------------------------------------------------------------


def __getattr__(name: str):
    # Lazy re-export of train_gpt.RunResult, so that importing schema does not import torch.
    if name == "RunResult":
        from train_gpt import RunResult

        return RunResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Intervention matrix (issue 3: extract_interventions)
# ---------------------------------------------------------------------------------------------

#: Canonical feature names of the intervention matrix, in CSV column order (fixed by issue 3).
INTERVENTION_FEATURES: tuple[str, ...] = (
    "num_layers", "model_dim", "mlp_mult", "vocab_size", "train_seq_len", "tied_embeddings", "activation",
    "smeargate", "bigram_hash", "value_embeddings", "xsa", "partial_rope", "ln_scale", "unet_skips",
    "depth_recurrence", "parallel_residuals", "qk_gain", "logit_softcap", "muon", "muon_weight_decay",
    "muoneq_r", "ema", "swa", "qat", "quant_bits", "gptq", "compression", "sliding_window_eval", "ttt",
    "lora_ttt", "ngram_cache", "warmdown_iters", "fp16_embed", "orthogonal_init", "attention_gate",
    "caseops", "varlen_attention",
)

#: The naive baseline's value of every canonical feature (upstream train_gpt.py, 2026-03-18).
BASELINE_FEATURES: dict[str, object] = {
    "num_layers": 9, "model_dim": 512, "mlp_mult": 2, "vocab_size": 1024, "train_seq_len": 1024,
    "tied_embeddings": True, "activation": "relu2", "smeargate": False, "bigram_hash": False,
    "value_embeddings": False, "xsa": False, "partial_rope": False, "ln_scale": False, "unet_skips": True,
    "depth_recurrence": False, "parallel_residuals": False, "qk_gain": 1.5, "logit_softcap": 30.0,
    "muon": True, "muon_weight_decay": False, "muoneq_r": False, "ema": False, "swa": False, "qat": False,
    "quant_bits": 8, "gptq": "none", "compression": "zlib", "sliding_window_eval": False, "ttt": False,
    "lora_ttt": False, "ngram_cache": False, "warmdown_iters": 1200, "fp16_embed": False,
    "orthogonal_init": False, "attention_gate": False, "caseops": False, "varlen_attention": False,
}


@dataclasses.dataclass(frozen=True)
class SeedScore:
    """One seed's final score inside a record."""

    seed: int
    val_bpb: float | None


#: Classes of a mined ablation row; only ``ablation`` rows (one canonical feature, a bpb delta, a direction) are
#: evidence. multi_feature: several features at once; record_vs_base: the record against its base / SOTA;
#: headline: an overall claim ("Improvement: 0.1144 nats (threshold: 0.005)"); sweep_unmapped: a knob with no
#: canonical feature (LR, momentum); unmapped: names no feature; fragment: a cut sentence; no_direction: a numeric
#: feature without values or direction; no_delta: no usable bpb delta; quoted_estimate: another submission's figure
#: or a projection; penalty: a quantization gap of one model; restated: prose repeating a table-measured change with
#: another figure; nonadjacent: a config-table row against a reference that may differ in more (extract.row_gates);
#: untyped: read from a schema-1 matrix.
ABLATION_KINDS: tuple[str, ...] = ("ablation", "multi_feature", "record_vs_base", "headline", "sweep_unmapped",
                                   "unmapped", "fragment", "no_direction", "no_delta", "quoted_estimate", "penalty",
                                   "restated", "nonadjacent", "untyped")
ABLATION_METRICS: tuple[str, ...] = ("pre_quant", "post_quant", "post_ttt", "sliding", "unknown")  # score measured
ABLATION_SOURCES: tuple[str, ...] = ("table", "prose", "log")  # where a row was read


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One ablation reported by a record; ``delta_bpb`` < 0 means the change helped. Schema 2 types it: ``kind``,
    canonical ``features`` with ``from_value`` -> ``to_value``, ``direction`` (+1 adds / raises, -1 removes /
    lowers), ``metric``, the stack (``record_id``, ``base``), ``n_seeds`` (None = not stated), ``source_kind``,
    the ``reference`` row, the prose ``context`` after the number, and a ``note`` saying why."""

    change: str
    delta_bpb: float | None
    source: str
    kind: str = "untyped"
    features: tuple[str, ...] = ()
    from_value: object = None
    to_value: object = None
    direction: int = 1
    metric: str = "unknown"
    record_id: str | None = None
    base: str | None = None
    n_seeds: int | None = None
    source_kind: str = "prose"
    reference: str | None = None
    context: str = ""
    note: str = ""

    @property
    def is_evidence(self) -> bool:
        return self.kind == "ablation" and self.delta_bpb is not None and len(self.features) == 1

    @classmethod
    def from_dict(cls, data: dict) -> "AblationRow":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["features"] = tuple(kw.get("features") or ())
        kw.setdefault("source", "unknown")
        if "change" not in kw or "delta_bpb" not in kw:
            raise DataFormatError(f"ablation row {data!r}: needs 'change' and 'delta_bpb'")
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class InterventionRecord:
    """One leaderboard record as a row of the intervention matrix (see results/interventions.json)."""

    record_id: str
    track: str
    date: str | None
    author: str | None
    val_bpb: float | None
    pre_quant_bpb: float | None
    post_quant_bpb: float | None
    artifact_bytes: int | None
    seeds: tuple[SeedScore, ...]
    base_prs: tuple[int, ...]
    features: dict[str, object]
    ablations: tuple[AblationRow, ...]
    provenance: dict[str, str]
    pr: int | None = None
    leaderboard_rank: int | None = None
    leaderboard_score: float | None = None
    summary: str | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return _jsonable(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InterventionRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["seeds"] = tuple(SeedScore(**s) for s in data.get("seeds") or ())
        kw["ablations"] = tuple(AblationRow.from_dict(a) for a in data.get("ablations") or ())
        kw["base_prs"] = tuple(data.get("base_prs") or ())
        kw["warnings"] = tuple(data.get("warnings") or ())
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Causal structure (issue 4: estimate_dag, identifiability_check, select_interventions)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExperimentRow:
    """One of our own runs, fed to the causal stage as an interventional row (regime variable = 1).

    ``arm`` is "control" or "treatment"; control rows have intervention "control" and feature/value
    None. ``val_bpb`` is the real measured value of that run. A numeric feature (model_dim, ...) enters
    the FCI matrix only with ``control_value`` (as baseline + (value - control_value)), because our
    presets are on another scale than the leaderboard.
    """

    intervention: str
    feature: str | None
    value: Any
    val_bpb: float
    seed: int
    arm: str = "treatment"
    control_value: Any = None  # optional: the feature's value in the control config (numeric features)


@dataclasses.dataclass(frozen=True)
class PagEdge:
    """One edge of a PAG: ``mark_a``/``mark_b`` are the endpoint marks at a/b: "tail", "arrow" or "circle"."""

    a: str
    b: str
    mark_a: str
    mark_b: str

    @property
    def text(self) -> str:
        left = {"tail": "-", "arrow": "<", "circle": "o"}[self.mark_a]
        right = {"tail": "-", "arrow": ">", "circle": "o"}[self.mark_b]
        return f"{self.a} {left}-{right} {self.b}"


@dataclasses.dataclass(frozen=True)
class CandidateIntervention:
    """A runnable intervention the ranking may propose (from the experiment registry or the defaults)."""

    name: str
    feature: str
    description: str = ""
    value: Any = None  # the feature's value under this intervention (None = unknown)

# ---------------------------------------------------------------------------------------------
# Experiments and statistics (issue 5: interventions, experiment_runner, statistical_analysis)
# ---------------------------------------------------------------------------------------------

RUNS_ROW_FIELDS = (
    "intervention", "arm", "seed", "backend", "status", "val_bpb", "post_quant_val_loss", "post_quant_val_bpb",
    "sliding_val_bpb",
    "ttt_val_bpb", "artifact_bytes", "model_bytes", "within_budget",
    "steps", "wall_s", "step_losses", "val_history",
)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run as stored in the ledger (``runs`` table) and, trimmed, in ``runs.json``.

    ``arm`` is "control" or "treatment"; control rows have intervention "control".
    ``status`` is "ok" | "diverged" | "failed"; metrics are None when the run produced none.
    """

    screen_id: str
    intervention: str
    arm: str
    seed: int
    backend: str
    config_hash: str
    status: str
    error: str | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    post_quant_val_loss: float | None = None
    post_quant_val_bpb: float | None = None
    artifact_bytes: int | None = None
    sliding_val_bpb: float | None = None  # sliding-window eval of the exported model (None: stage off)
    ttt_val_bpb: float | None = None  # score-first TTT eval (None: stage off)
    model_bytes: int | None = None  # the compressed model alone (artifact_bytes = model + code bytes)
    within_budget: bool | None = None  # artifact_bytes <= 16,000,000
    steps: int | None = None
    wall_s: float | None = None
    tokens_per_s: float | None = None
    step_losses: list = dataclasses.field(default_factory=list)
    val_history: list = dataclasses.field(default_factory=list)
    versions: dict = dataclasses.field(default_factory=dict)
    git_commit: str | None = None
    executor: str | None = None
    config: dict = dataclasses.field(default_factory=dict)
    finished_at: float = 0.0
    horizon_metrics: dict = dataclasses.field(default_factory=dict)  # branched cooldowns: {"H": scored fields}

    def runs_row(self) -> dict:
        """The ``runs.json`` row (the agreed subset of fields, plus config_hash and error; horizon_metrics when the
        run branched cooldowns)."""
        row = {k: getattr(self, k) for k in RUNS_ROW_FIELDS}
        row["config_hash"] = self.config_hash
        row["error"] = self.error
        if self.horizon_metrics:
            row["horizon_metrics"] = self.horizon_metrics
        return row


@dataclasses.dataclass(frozen=True)
class ScreenPlan:
    """A screen's design, fixed before the first run (its pre-registration).

    ``treatments``: each treatment's resolved overrides on the control config ``base_config`` (a dict); seeds are
    shared. ``configs``: every arm's Hyperparameters, resolved once (not part of the pre-registration).
    ``aa_mode`` "repeat" (bit-reproducible backend: ``aa`` repeats the first seed, bit for bit) or "arm" (``aa``
    on every seed). ``effect_bpb`` None: the record bar, 0.005 nats, in bpb of the val split. ``sequential``
    (None: fixed n): {"n0", "step", "futility_effect_sd"}, ``seeds`` then the full ordered list (n_max seeds).
    """

    screen_id: str
    preset: str
    backend: str
    seeds: tuple[int, ...]
    treatments: tuple[tuple[str, dict], ...]
    base_config: dict
    alpha: float = 0.01
    margin_bpb: float = 0.0
    correction: str = "holm"
    metric: str = "post_quant_val_bpb"
    effect_bpb: float | None = None
    aa_mode: str = "arm"
    sequential: Mapping[str, Any] | None = None
    stack: str | None = None  # the leaderboard stack the control is (screen.stacks), None: the bare preset
    pool_aa: bool = False  # pool the variance of d with the A/A pairs (registered before the data)
    configs: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def intervention_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.treatments)

    def preregistration(self) -> dict:
        """What the ledger stores (and checks on resume) as the pre-registration (``pool_aa`` only when on)."""
        from scripts.causal.screen.registry import CALIBRATION

        return {**({"pool_aa": True} if self.pool_aa else {}),
            "preset": self.preset,
            "backend": self.backend,
            "seeds": list(self.seeds),
            "interventions": [{"name": n, "overrides": dict(o)} for n, o in self.treatments],
            "base_config": dict(self.base_config),
            "alpha": self.alpha,
            "margin_bpb": self.margin_bpb,
            "correction": self.correction,
            "metric": self.metric,
            "effect_bpb": self.effect_bpb,
            "family": [n for n in self.intervention_names if n not in CALIBRATION],
            "aa_mode": self.aa_mode,
            "sequential": dict(self.sequential) if self.sequential else None,
            "stack": self.stack,
            "design": "paired seeds, one shared control per seed, interleaved (control, treatments) per seed",
        }


@dataclasses.dataclass(frozen=True)
class ScreenResult:
    """What run_screen returns: the plan, every finished run (ledger order) and what this call did."""

    plan: ScreenPlan
    runs: tuple[RunRecord, ...]
    n_executed: int
    n_skipped: int


# -- statistics (statistical_analysis.py, sequential_design.py) --------------------------------


@dataclasses.dataclass(frozen=True)
class PooledSigma:
    """SD of A/A paired differences pooled over groups: sigma^2 = sum SS_g / sum (n_g - 1), df = sum (n_g - 1)."""

    sigma: float
    df: int
    n_pairs: int
    n_groups: int
    source: str = "aa"


@dataclasses.dataclass(frozen=True)
class Preregistration:
    """What a screen fixes before its first run and the analysis must use (stats/prereg.py enforces it).

    ``effect_bpb`` None: the record bar ``effect_nats`` converted with the val split's measured bytes per token.
    ``family``: the interventions in the multiplicity family (None: every non-calibration intervention).
    ``aa_mode``: repeat | arm | auto. ``pool_aa``, ``sequential`` (None: fixed n), ``stack``: as in ScreenPlan.
    """

    alpha: float = 0.01
    margin_bpb: float = 0.0
    effect_bpb: float | None = None
    effect_nats: float = 0.005
    correction: str = "holm"
    metric: str = "post_quant_val_bpb"
    family: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = ()
    aa_mode: str = "auto"
    pool_aa: bool = False
    sequential: Mapping[str, Any] | None = None
    stack: str | None = None


@dataclasses.dataclass(frozen=True)
class ConfirmPlan:
    """Stage two of the two-stage design: confirm the screen's winners on fresh seeds with Holm."""

    interventions: tuple[str, ...]
    seeds: tuple[int, ...]
    excluded_seeds: tuple[int, ...]
    alpha: float
    margin_bpb: float
    correction: str = "holm"
    screen_correction: str = "bh"
    metric: str = "post_quant_val_bpb"
    effect_bpb: float | None = None
    effect_nats: float = 0.005


@dataclasses.dataclass(frozen=True)
class GroupSequentialDesign:
    """Looks (valid pairs per intervention) and per-look one-sided t boundaries from Lan-DeMets OBF spending."""

    looks: tuple[int, ...]
    alpha: float
    spent: tuple[float, ...]
    t_bounds: tuple[float, ...]
    n_sim: int
    seed: int
    f_bounds: tuple[float, ...] = ()  # non-binding futility: stop a non-final look when |t| <= f_k (0 = never)
    futility_effect_sd: float | None = None
    beta_futility: float = 0.0

# ---------------------------------------------------------------------------------------------
# Pipeline and report (issue 6: run_pipeline, report, plots)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a pipeline run was: the provenance block of report.md and report.json. ``test`` states the
    pre-registered test in words; ``confirm_seeds`` are fresh seeds reserved for confirmation (disjoint)."""

    run_id: str
    started_utc: str
    command: str
    git_commit: str | None
    versions: dict
    backend: str
    hardware: str
    preset: str
    seeds: tuple[int, ...]
    confirm_seeds: tuple[int, ...]
    interventions: tuple[str, ...]
    test: str
    alpha: float
    margin_bpb: float
    correction: str
    cycles: int
    stack: str | None = None  # the leaderboard stack the screens ran on (None: the bare preset)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Everything run_pipeline.py was asked to do, resolved from its flags (stored in report.json).

    ``interventions`` empty means "top_k from the ranking"; ``calibration`` arms are always added.
    ``budget_minutes`` None means no budget; stages that would not fit are skipped and reported.
    """

    run_id: str
    output_dir: str
    preset: str
    backend: str
    seeds: tuple[int, ...]
    confirm_seeds: tuple[int, ...]
    interventions: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ("aa",)
    top_k: int = 3
    cycles: int = 1
    max_null_cycles: int = 2
    budget_minutes: float | None = None
    alpha: float = 0.01
    margin_bpb: float = 0.0
    correction: str = "holm"
    confirm: bool = True
    promote: bool = True
    apply_promotion: bool = False
    resume: bool = False
    dag_alpha: float = 0.05
    bootstrap: int = 100
    dag_seed: int = 0
    matrix_path: str = "results/interventions.json"
    data_overrides: dict = dataclasses.field(default_factory=dict)
    extra_overrides: dict = dataclasses.field(default_factory=dict)
    profile: str = "default"
    threads: int | None = None  # torch CPU threads (None: decided once from the load)
    effect_bpb: float | None = None  # effect of interest (None: the record bar, 0.005 nats, in bpb)
    sequential: bool = False  # group-sequential seeds in the screens
    max_seeds: int | None = None  # with sequential: seeds at most per arm
    futility_sd: float | None = None  # with sequential: planned effect / sigma_d for the futility bound
    stack: str | None = None  # the screens' control is this leaderboard stack (screen.stacks)
    executor: str = "inprocess"  # where screen runs execute (screen.executors.EXECUTORS), e.g. "ray"
    ray_address: str | None = None  # --executor ray: None starts a local cluster, "auto" joins `ray start`
    transfer_dir: str | None = "results/transfer_calibration"  # transfer_<preset>.json for the report and ranking
    metric: str = "final_val_bpb"  # the pre-registered decision metric (stats.pairing.METRICS)
    train_script: str | None = None  # screen this upstream-style script under torchrun (screen.script_target)
    timeout_s: float | None = None  # per-run limit of the subprocess/torchrun/ray executors (None: theirs)
    nproc_per_node: int | None = None  # torchrun processes per run (None: the executor's default)


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung of a ladder (pipeline.ladder): a screen at ``preset`` + ``overrides`` on its own ``seeds``."""

    name: str
    preset: str
    overrides: dict
    seeds: tuple[int, ...]
    executor: str | None = None  # None: the pipeline's --executor; "torchrun" for an H100 rung
