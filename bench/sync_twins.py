"""Copy every `# >>> twin: NAME >>>` section of train_gpt.py into train_gpt_mlx.py (run by hand after an edit).

The twin sections are the framework-free code both trainers carry verbatim (each must run alone, so neither can
import the other); tests/causal/test_standalone_trainers.py fails while they differ. Usage::

    python bench/sync_twins.py            # rewrite train_gpt_mlx.py's sections from train_gpt.py
    python bench/sync_twins.py --check    # exit 1 and name the sections that differ
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^# >>> twin: (?P<name>[\w-]+) >>>\n.*?^# <<< twin: (?P=name) <<<\n", re.M | re.S)


def sections(text: str) -> dict[str, str]:
    return {m.group("name"): m.group(0) for m in SECTION.finditer(text)}


def synced(source: str, twin: str) -> str:
    """``twin`` with each section that ``source`` also has replaced by ``source``'s copy."""
    src = sections(source)
    return SECTION.sub(lambda m: src.get(m.group("name"), m.group(0)), twin)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report the sections that differ")
    args = ap.parse_args(argv)
    src, dst = REPO / "train_gpt.py", REPO / "train_gpt_mlx.py"
    old = dst.read_text(encoding="utf-8")
    new = synced(src.read_text(encoding="utf-8"), old)
    differ = [n for n, s in sections(new).items() if sections(old).get(n) != s]
    if args.check:
        print("differ: " + (", ".join(differ) or "none"))
        return 1 if differ else 0
    dst.write_text(new, encoding="utf-8")
    print(f"{dst.name}: synced {', '.join(differ) or 'nothing (already identical)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
