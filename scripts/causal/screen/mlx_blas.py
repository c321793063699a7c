"""Make mlx[cpu] on Linux use OpenBLAS instead of the reference BLAS its wheel bundles.

The Linux ``mlx[cpu]`` wheel links ``libmlx.so`` against a netlib reference BLAS (``mlx_cpu.libs/libblas-*.so``),
which runs fp32 matmuls at a few GFLOP/s. Loading an optimised BLAS into the global symbol scope *before*
``mlx.core`` is first imported makes the dynamic linker resolve libmlx's ``cblas_sgemm`` & co. to it instead.
Measured here: ``ctypes.CDLL(libopenblas.so.0, RTLD_GLOBAL)`` works as well as ``LD_PRELOAD`` (see
bench/RESULTS.md), so no re-exec is needed. Debian/Ubuntu: ``apt-get install libopenblas0-pthread``.

Call :func:`ensure_fast_blas` before anything imports ``mlx``; it is idempotent and never raises. The standalone
``train_gpt_mlx.py`` leaves this to its caller: ``screen/trainer.py``'s ``mlx_twin()`` and the benches call it.
Set ``PG_MLX_BLAS=reference`` to keep the bundled BLAS (for benchmarks), or ``PG_MLX_BLAS=/path/lib.so``
to load a specific library.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

HINT = (
    "mlx[cpu] is using its bundled reference BLAS (about 10x slower matmuls); "
    "install OpenBLAS to fix it: apt-get install libopenblas0-pthread"
)

# Most specific first: the pthread OpenBLAS itself, then whatever the Debian alternatives point libblas at.
CANDIDATES: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/libblas.so.3",
)


@dataclass(frozen=True)
class BlasStatus:
    """What :func:`ensure_fast_blas` found and did.

    ``applicable``: Linux with an mlx wheel that bundles a reference BLAS. ``loaded``: the library now in the
    global scope (None if nothing was loaded). ``hint``: one line for the user when mlx stays slow, else None.
    """

    applicable: bool
    loaded: str | None
    mlx_already_imported: bool
    hint: str | None

    @property
    def fast(self) -> bool:
        return (not self.applicable) or (self.loaded is not None and not self.mlx_already_imported)

    @property
    def tag(self) -> str | None:
        """The BLAS an mlx[cpu] run uses, for logs and run records; None where the question does not apply."""
        return (self.loaded or "bundled-reference") if self.applicable else None


_STATUS: BlasStatus | None = None


def bundled_reference_blas(locations: list[str] | None = None) -> Path | None:
    """The reference BLAS shipped inside the installed mlx wheel (``mlx_cpu.libs/libblas-*.so*``), if any.

    ``locations``: the mlx package folders to look beside (default: those of the importable ``mlx``)."""
    if locations is None:
        spec = importlib.util.find_spec("mlx")
        if spec is None or not spec.submodule_search_locations:
            return None
        locations = list(spec.submodule_search_locations)
    # mlx is a namespace package: any folder named "mlx" on sys.path (e.g. the cwd) is also a location.
    for location in locations:
        libs = Path(location).parent / "mlx_cpu.libs"
        found = sorted(libs.glob("libblas*.so*")) if libs.is_dir() else []
        if found:
            return found[0]
    return None


def find_openblas(candidates: tuple[str, ...] = CANDIDATES) -> Path | None:
    """First existing optimised BLAS among ``candidates`` (a libblas.so.3 that is itself the reference
    netlib build is skipped: Debian's ``libblas3`` resolves to ``blas/libblas.so.3``)."""
    for cand in candidates:
        path = Path(cand)
        if not path.exists():
            continue
        real = path.resolve()
        if real.parent.name == "blas" and "openblas" not in real.name:  # Debian's reference libblas3
            continue
        return path
    return None


def ensure_fast_blas(*, platform: str | None = None, env: dict | None = None) -> BlasStatus:
    """Load OpenBLAS with RTLD_GLOBAL before mlx is imported (Linux + mlx[cpu] only). Idempotent, never raises.

    Returns a :class:`BlasStatus`; print ``status.hint`` (once) when it is not None.
    """
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    already = "mlx.core" in sys.modules
    bundled = bundled_reference_blas() if platform.startswith("linux") else None
    if bundled is None:
        _STATUS = BlasStatus(applicable=False, loaded=None, mlx_already_imported=already, hint=None)
        return _STATUS
    choice = env.get("PG_MLX_BLAS", "")
    if choice == "reference":
        _STATUS = BlasStatus(applicable=True, loaded=None, mlx_already_imported=already, hint=None)
        return _STATUS
    lib = Path(choice) if choice else find_openblas()
    loaded = None
    hint: str | None = HINT
    if lib is not None:
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            loaded, hint = str(lib), None
        except OSError as exc:
            hint = f"could not load {lib} ({exc}); {HINT}"
    if loaded is not None and already:
        hint = (
            f"{lib} was loaded after mlx.core was imported, so mlx keeps its reference BLAS; call "
            "scripts.causal.screen.mlx_blas.ensure_fast_blas() before the first `import mlx`"
        )
    _STATUS = BlasStatus(applicable=True, loaded=loaded, mlx_already_imported=already, hint=hint)
    return _STATUS


def _reset_for_tests() -> None:
    global _STATUS
    _STATUS = None
