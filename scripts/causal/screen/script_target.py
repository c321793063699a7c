"""An upstream-style ``train_gpt.py`` (a record's, a competitor's) as the thing a screen runs: ``--train-script``.

Such a script is configured only through environment variables. This module reads which ones from the source
(``script_knobs``: ``os.environ.get("NAME", default)``, ``os.getenv``, ``os.environ["NAME"]``, multi-line calls
and upstream's ``Hyperparameters`` class alike, through the AST), and builds the arms of a screen on it:

* the control is the script as it is (plus ``base_env``, e.g. ``DATA_PATH`` or a reduced
  ``MAX_WALLCLOCK_SECONDS``, the same for every arm);
* a registry intervention runs only if it declares its env form (``Intervention.env``) and the script reads
  every knob of it; otherwise ``ConfigError`` names the intervention and the missing knob;
* ``--override KEY=VALUE[,KEY2=V2]`` is one treatment of env settings (KEY upper-cased), checked the same way;
* seeds pair through ``SEED`` (a script without a SEED knob is refused: its runs could not be paired).

Each arm is a ``ScriptConfig``: the script's path and sha256 and the env it adds. Its ``config_hash`` keys
the ledger; the executor refuses to run a script whose bytes changed since the plan.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from scripts.causal.core.cli import parse_key_values
from scripts.causal.core.errors import ConfigError, DataFormatError

__all__ = ["ScriptConfig", "check_expressible", "script_arms", "script_knobs", "script_sha256"]

_ENV_CALLS = {"os.environ.get", "environ.get", "os.getenv", "getenv", "os.environ.setdefault"}
_ENV_MAPS = {"os.environ", "environ"}
SEED_KNOB = "SEED"
RUNTIME_PREFIXES = ("OMP_", "MKL_", "NCCL_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "CUDA_", "TRITON_", "GLOO_")


@dataclasses.dataclass(frozen=True)
class ScriptConfig:
    """One arm of a script screen: ``train_script`` (absolute path), its ``script_sha256`` and the ``env`` it
    sets (sorted (NAME, value) pairs; SEED is added per run). ``iterations`` is for progress display only."""

    train_script: str
    script_sha256: str
    env: tuple[tuple[str, str], ...] = ()
    iterations: int = 0

    def to_dict(self) -> dict:
        return {"train_script": self.train_script, "script_sha256": self.script_sha256, "env": dict(self.env)}

    def config_hash(self) -> str:
        """sha256 of (script bytes' hash, env): the ledger key of the arm (the path does not count)."""
        payload = {"script_sha256": self.script_sha256, "env": dict(self.env)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def env_for(self, seed: int) -> dict[str, str]:
        return {**dict(self.env), SEED_KNOB: str(int(seed))}


def script_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _env_helpers(tree: ast.AST) -> dict[str, int]:
    """{function name: index of its env-name parameter} for helpers like ``def _e(k, d): os.environ.get(k, d)``."""
    out = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        params = [a.arg for a in fn.args.args]
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) in _ENV_CALLS and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in params):
                out[fn.name] = params.index(node.args[0].id)
    return out


def script_knobs(path: str | Path) -> dict[str, str | None]:
    """{ENV_NAME: default as written in the source (None: read without a default)} of every env var the script
    reads. DataFormatError when the file is not Python, or reads no env var (e.g. a compressed, exec'd blob)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--train-script {path}: no such file")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a Python script the knob reader can parse ({exc})") from None
    knobs: dict[str, str | None] = {}
    helpers = _env_helpers(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
            i = helpers[node.func.id]  # a helper such as _e("NAME", default, int): its NAME argument
            name = _const_str(node.args[i]) if len(node.args) > i else None
            if name is not None and knobs.get(name) is None:
                knobs[name] = ast.unparse(node.args[i + 1]) if len(node.args) > i + 1 else None
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in _ENV_CALLS and node.args:
            name = _const_str(node.args[0])
            if name is not None:
                default = ast.unparse(node.args[1]) if len(node.args) > 1 else None
                if knobs.get(name) is None:
                    knobs[name] = default
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in _ENV_MAPS:
            name = _const_str(node.slice)
            if name is not None:
                knobs.setdefault(name, None)
    if not knobs:
        raise DataFormatError(f"{path}: reads no environment variable (os.environ.get / os.getenv); a screen "
                              "configures a script only through its env knobs")
    return knobs


def _same_value(default: str | None, value: str) -> bool:
    """Whether env ``value`` equals the knob's literal ``default`` (numerically where both are numbers)."""
    if default is None:
        return False
    try:
        lit = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return False
    try:
        return float(lit) == float(value)
    except (TypeError, ValueError):
        return str(lit) == value


def check_expressible(name: str, env: Mapping[str, str] | None, knobs: Mapping[str, str | None],
                      script: str | Path) -> None:
    """ConfigError unless every knob of ``env`` is one the script reads (``env`` None: no env form at all)."""
    if env is None:
        raise ConfigError(f"--train-script {script}: intervention {name!r} declares no env settings "
                          "(Intervention.env in screen/registry.py), so it cannot be expressed on a script; "
                          "pass it as --override KNOB=VALUE with the script's own knob")
    missing = sorted(k for k in env if k not in knobs)
    if missing:
        raise ConfigError(f"--train-script {script}: intervention {name!r} needs knob(s) {missing}, which the "
                          f"script does not read (it reads {len(knobs)} env vars, e.g. "
                          f"{sorted(knobs)[:8]}); refused")


def script_arms(train_script: str | Path, *, interventions: Sequence[str] = (), overrides: Sequence[str] = (),
                base_env: Mapping[str, str] | None = None) -> tuple[ScriptConfig, list[tuple[str, dict]]]:
    """(control ScriptConfig, [(treatment name, env it adds), ...]) for a screen on ``train_script``."""
    from scripts.causal.screen import registry as reg

    script = Path(train_script).resolve()
    knobs = script_knobs(script)
    if SEED_KNOB not in knobs:
        raise ConfigError(f"--train-script {script}: the script reads no SEED env var, so control and treatment "
                          "runs cannot share a seed (pairing needs it)")
    base = {k.upper(): str(v) for k, v in dict(base_env or {}).items()}
    # runtime settings (threads, NCCL, compile caches) are read by libraries, not by the script: let them through
    check_expressible("--base-override", {k: v for k, v in base.items() if not k.startswith(RUNTIME_PREFIXES)},
                      knobs, script)
    treatments: list[tuple[str, dict]] = []
    for name in interventions:
        iv = reg.get_intervention(name)
        check_expressible(name, iv.env, knobs, script)
        treatments.append((name, {k: str(v) for k, v in dict(iv.env).items()}))
    for spec in overrides:
        env = {k.upper(): str(v) for k, v in parse_key_values(spec, "--override").items()}
        check_expressible(f"override {spec}", env, knobs, script)
        name = "override:" + ",".join(f"{k}={v}" for k, v in sorted(env.items()))
        treatments.append((name, env))
    for name, env in treatments:
        same = [k for k, v in env.items() if _same_value(base.get(k, knobs.get(k)), v)]
        if name != "aa" and len(same) == len(env):
            raise ConfigError(f"--train-script {script}: {name} sets {env}, which the script already has "
                              f"(defaults {[(k, knobs[k]) for k in same]}); it would compare the control with itself")
    sha = script_sha256(script)
    iters = base.get("ITERATIONS") or knobs.get("ITERATIONS") or "0"
    try:
        iterations = int(float(ast.literal_eval(iters) if not iters.replace(".", "").isdigit() else iters))
    except (ValueError, SyntaxError, TypeError):
        iterations = 0
    control = ScriptConfig(str(script), sha, tuple(sorted(base.items())), iterations)
    return control, treatments


def arm_config(control: ScriptConfig, env: Mapping[str, str]) -> ScriptConfig:
    """The treatment arm: the control's env with ``env`` on top."""
    return dataclasses.replace(control, env=tuple(sorted({**dict(control.env), **dict(env)}.items())))


def _literal(text: str | None):
    try:
        return ast.literal_eval(text) if text is not None else None
    except (ValueError, SyntaxError):
        return text


def config_view(cfg: ScriptConfig):
    """The arm's settings as attributes (lower-case knob names: the script's defaults, then the arm's env), so
    registry feature lookups (``registry.feature_value``) read a script arm like a Hyperparameters config."""
    from types import SimpleNamespace

    values = {k.lower(): _literal(v) for k, v in script_knobs(cfg.train_script).items()}
    for k, v in cfg.env:
        lit = _literal(v)
        values[k.lower()] = lit if lit is not None else v
    return SimpleNamespace(**{k: v for k, v in values.items() if k.isidentifier()})
