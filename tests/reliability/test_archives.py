"""Hostile archives and downloads: only what tests/data/test_download.py does not cover already.

Covered there (not repeated): `../` and nested `../` members, absolute paths, symlinks/hardlinks
pointing outside, FIFOs and device files (safe_extract level), bad md5, 404/500/reset/stall,
Range resume, an interrupted extraction, an archive without train/val.

Here: the same refusal end to end through `imagenette-lab download` (exit 1, one line, nothing
written outside the target), the symlink-chain / PATH_MAX filter bypass that older Pythons' "data"
filter lets through (CVE-2025-4517 family), setuid bits, a download that is not a tar archive, and a
truncated archive.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from imagenette_lab import cli
from imagenette_lab.data import download as dl
from imagenette_lab.errors import UserError
from tests.data.test_download import Server, dataset_tgz, make_tgz, md5, tree


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes | None = b"x",
            mode: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if mode is not None:
        info.mode = mode
    return info, (data if kind == tarfile.REGTYPE else None)


def _one_line_error(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO:", "WARNING:"))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"imagenette-lab {command}: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def server():
    with Server() as s:
        yield s


@pytest.mark.parametrize("kind", ["dotdot", "symlink-out", "hardlink-out"])
def test_cli_download_of_hostile_archive_writes_nothing_outside(kind: str, server: Server, tmp_path: Path,
                                                               capsys) -> None:
    top = "imagenette2-160"
    members = [_member(f"{top}/train/n01440764/a.JPEG"), _member(f"{top}/val/n01440764/b.JPEG")]
    members.append({
        "dotdot": _member(f"{top}/../../../pwned"),
        "symlink-out": _member(f"{top}/train/up", tarfile.SYMTYPE, "../../../../pwned"),
        "hardlink-out": _member(f"{top}/train/hard", tarfile.LNKTYPE, "../../../pwned"),
    }[kind])
    server.body = make_tgz(members)
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    (tmp_path / "pwned").write_text("original")  # what a link would target / a member would replace
    before = tree(tmp_path)
    code = cli.main(["download", "--root", str(root), "--url", server.url, "--md5", md5(server.body),
                     "--retries", "0", "--timeout", "2"])
    assert code == 1
    line = _one_line_error(capsys.readouterr().err, "download")
    assert "refusing unsafe archive member" in line
    assert (tmp_path / "pwned").read_text() == "original"
    # Only the verified archive itself may remain (so a rerun need not download again); no folder.
    assert tree(tmp_path) - before <= {"a/b/root/imagenette2-160.tgz"}
    assert not (root / top).exists()


def _path_max_chain_archive(dest_len: int, max_path: int) -> bytes:
    """CPython's test_realpath_limit_attack (CVE-2025-4517): symlinks the realpath() check cannot
    expand because the expanded path exceeds PATH_MAX; then a hardlink through them to `../../flag`
    that gets overwritten, and a new file written outside the destination."""
    steps = "abcdefghijklmnop"
    comp = "d" * ((max_path - dest_len) // (len(steps) + 1))
    members = []
    path = ""
    for s in steps:
        members.append(_member(os.path.join(path, comp), tarfile.DIRTYPE, data=None, mode=0o777))
        members.append(_member(os.path.join(path, s), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(_member(linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    members.append(_member("escape", tarfile.SYMTYPE, os.path.join(linkpath, "..", "..")))
    members.append(_member("flaglink", tarfile.LNKTYPE, os.path.join("escape", "flag")))
    members.append(_member("flaglink", data=b"overwritten"))
    members.append(_member("escape/newfile", data=b"new"))
    return make_tgz(members, mode="w")


@pytest.mark.skipif(not hasattr(os, "pathconf"), reason="needs PATH_MAX")
def test_symlink_chain_past_path_max_cannot_escape(tmp_path: Path) -> None:
    base = tmp_path / "base"
    root = base / "root"
    root.mkdir(parents=True)
    (base / "flag").write_text("original")
    # safe_extract unpacks into root/.extract-XXXXXXXX (mkdtemp: 8 random characters).
    dest_len = len(str(root)) + len("/.extract-") + 8 + 1
    archive = tmp_path / "chain.tar"
    archive.write_bytes(_path_max_chain_archive(dest_len, os.pathconf(str(root), "PC_PATH_MAX")))
    with pytest.raises(UserError, match="refusing unsafe archive member"):
        dl.safe_extract(archive, root)
    assert (base / "flag").read_text() == "original"
    assert sorted(p.name for p in base.iterdir()) == ["flag", "root"]
    assert list(root.iterdir()) == []


def test_empty_named_symlink_chain_is_refused(tmp_path: Path) -> None:
    """Links have no place in an image dataset: even an innocent-looking in-tree one is refused
    (chains of them defeat per-member checks, e.g. CPython gh-149486, gh-151558)."""
    root = tmp_path / "root"
    archive = tmp_path / "links.tgz"
    archive.write_bytes(make_tgz([_member("imagenette2-160/train/x/a.JPEG"),
                                  _member("imagenette2-160/train/alias", tarfile.SYMTYPE, "x")]))
    with pytest.raises(UserError, match="refusing unsafe archive member 'imagenette2-160/train/alias'"):
        dl.safe_extract(archive, root)
    assert list(root.iterdir()) == []


def test_setuid_and_world_writable_bits_are_dropped(tmp_path: Path) -> None:
    archive = tmp_path / "modes.tgz"
    archive.write_bytes(make_tgz([
        _member("imagenette2-160/train/n01440764/a.JPEG", mode=0o6777),
        _member("imagenette2-160/val/n01440764/b.JPEG", mode=0o644),
    ]))
    out = dl.safe_extract(archive, tmp_path / "root", require=("train", "val"))
    mode = (out / "train" / "n01440764" / "a.JPEG").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)


@pytest.mark.parametrize("kind", ["non-archive", "truncated"])
def test_cli_download_of_a_bad_archive_is_one_line(kind: str, server: Server, tmp_path: Path, capsys) -> None:
    # An error page served with 200, or the server's copy itself cut short; the md5 matches both,
    # so extraction is what fails.
    server.body, expected = {
        "non-archive": (b"<html>mirror moved</html>" * 40, "not a readable tar archive"),
        "truncated": (dataset_tgz()[:-700], "is truncated or corrupt"),
    }[kind]
    code = cli.main(["download", "--root", str(tmp_path / "root"), "--url", server.url,
                     "--md5", md5(server.body), "--retries", "0"])
    assert code == 1
    assert expected in _one_line_error(capsys.readouterr().err, "download")
    assert not (tmp_path / "root" / "imagenette2-160").exists()
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".extract-")]

