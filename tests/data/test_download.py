"""Offline tests for the dataset download: a local HTTP server plays every failure mode."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagenette_lab import cli
from imagenette_lab.data import download as dl
from imagenette_lab.errors import UserError

FAST = {"backoff": 0.01, "timeout": 0.5}
WNID = "n01440764"


def make_tgz(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def dataset_tgz(top: str = "imagenette2-160") -> bytes:
    members = []
    for split in ("train", "val"):
        for i in range(3):
            info = tarfile.TarInfo(f"{top}/{split}/{WNID}/img{i}.JPEG")
            # Incompressible-ish bytes so the archive is long enough to split for resume tests.
            members.append((info, hashlib.sha512(f"{split}{i}".encode()).digest() * 64))
    return make_tgz(members)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Server:
    """Serves `body` at any path; `script` lists per-request behaviours, then "ok" forever."""

    def __init__(self) -> None:
        self.body = b""
        self.script: list[str] = []
        self.requests: list[dict[str, str | None]] = []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                mode = server.script.pop(0) if server.script else "ok"
                getattr(self, f"_{mode}")()

            def _ok(self, honour_range: bool = True) -> None:
                body, start = server.body, 0
                rng = self.headers.get("Range")
                if rng and honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def _norange(self) -> None:
                self._ok(honour_range=False)

            def _error(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _e500(self) -> None:
                self._error(500)

            def _e404(self) -> None:
                self._error(404)

            def _reset(self) -> None:
                # SO_LINGER 0 makes close() send a TCP RST: a real "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _truncate(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body[: len(server.body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def _stall(self) -> None:
                server.stop.wait(5)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/imagenette2-160.tgz"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        s.body = dataset_tgz()
        yield s


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --- download_imagenette / download_url -------------------------------------------------------


def test_happy_path_is_idempotent(server: Server, tmp_path: Path) -> None:
    out = dl.download_imagenette(tmp_path, url=server.url, md5=md5(server.body), **FAST)
    assert out == tmp_path / "imagenette2-160"
    assert (out / "train" / WNID / "img0.JPEG").read_bytes() == hashlib.sha512(b"train0").digest() * 64
    assert len(list((out / "val" / WNID).iterdir())) == 3
    # Archive and temp folders are gone; only the dataset remains.
    assert [p.name for p in tmp_path.iterdir()] == ["imagenette2-160"]
    assert dl.download_imagenette(tmp_path, url=server.url, md5=md5(server.body), **FAST) == out
    assert len(server.requests) == 1


def test_resume_uses_range(server: Server, tmp_path: Path) -> None:
    k = len(server.body) // 3
    (tmp_path / "x.tgz.part").write_bytes(server.body[:k])
    dest = dl.download_url(server.url, tmp_path / "x.tgz", md5=md5(server.body), **FAST)
    assert server.requests[0]["range"] == f"bytes={k}-"
    assert md5(dest.read_bytes()) == md5(server.body)
    assert not (tmp_path / "x.tgz.part").exists()


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    (tmp_path / "x.tgz.part").write_bytes(b"garbage-prefix")
    server.script = ["norange"]
    dest = dl.download_url(server.url, tmp_path / "x.tgz", md5=md5(server.body), **FAST)
    assert server.requests[0]["range"] == "bytes=14-"
    assert dest.read_bytes() == server.body


def test_truncated_transfer_is_resumed(server: Server, tmp_path: Path) -> None:
    server.script = ["truncate"]
    dest = dl.download_url(server.url, tmp_path / "x.tgz", md5=md5(server.body), retries=1, **FAST)
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(server.body) // 2}-"]
    assert dest.read_bytes() == server.body


def test_bad_md5_deletes_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="checksum mismatch for x.tgz: expected 0+, got .*deleted"):
        dl.download_url(server.url, tmp_path / "x.tgz", md5="0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_5xx_twice_then_success(server: Server, tmp_path: Path) -> None:
    server.script = ["e500", "e500"]
    dest = dl.download_url(server.url, tmp_path / "x.tgz", md5=md5(server.body), retries=2, **FAST)
    assert dest.read_bytes() == server.body
    assert len(server.requests) == 3


def test_always_500_gives_up_after_retries(server: Server, tmp_path: Path) -> None:
    server.script = ["e500"] * 10
    with pytest.raises(UserError, match=r"download of http://127.*failed after 3 attempts: HTTP 500"):
        dl.download_url(server.url, tmp_path / "x.tgz", retries=2, **FAST)
    assert len(server.requests) == 3


def test_404_fails_without_retry(server: Server, tmp_path: Path) -> None:
    server.script = ["e404"]
    with pytest.raises(UserError, match=r"HTTP 404 .*not retried"):
        dl.download_url(server.url, tmp_path / "x.tgz", retries=3, **FAST)
    assert len(server.requests) == 1


def test_connection_reset_is_retried(server: Server, tmp_path: Path) -> None:
    server.script = ["reset"]
    dest = dl.download_url(server.url, tmp_path / "x.tgz", md5=md5(server.body), retries=1, **FAST)
    assert dest.read_bytes() == server.body
    assert len(server.requests) == 2


def test_stalled_server_times_out(server: Server, tmp_path: Path) -> None:
    server.script = ["stall"] * 2
    with pytest.raises(UserError, match="failed after 2 attempts: .*timed out"):
        dl.download_url(server.url, tmp_path / "x.tgz", retries=1, backoff=0.01, timeout=0.2)
    assert len(server.requests) == 2


def test_connection_refused_names_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.tgz"
    with pytest.raises(UserError, match=f"download of {url} failed after 2 attempts: .*refused"):
        dl.download_url(url, tmp_path / "a.tgz", retries=1, **FAST)


# --- safe_extract -------------------------------------------------------------------------------


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


HOSTILE: dict[str, tuple[tarfile.TarInfo, bytes | None] | None] = {
    "dotdot": _file("../evil"),
    "nested-dotdot": _file("imagenette2-160/../../evil"),
    "absolute": None,  # built per test under tmp_path, so a regression cannot write to /tmp
    "symlink-abs": _link("imagenette2-160/passwd", "/etc/passwd", tarfile.SYMTYPE),
    "symlink-up": _link("imagenette2-160/up", "../../x", tarfile.SYMTYPE),
    "hardlink-out": _link("imagenette2-160/hard", "../../outside", tarfile.LNKTYPE),
    "fifo": _special("imagenette2-160/fifo", tarfile.FIFOTYPE),
    "chardev": _special("imagenette2-160/dev", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    archive = tmp_path / "a" / "evil.tgz"
    member = HOSTILE[kind] or _file(str(tmp_path / "evil-abs"))
    archive.write_bytes(make_tgz([_file("imagenette2-160/train/ok.JPEG"), member]))
    before = tree(tmp_path)
    with pytest.raises(UserError, match="refusing unsafe archive member"):
        dl.safe_extract(archive, root)
    assert tree(tmp_path) == before  # nothing inside or outside root, no temp folder left


def test_interrupted_extraction_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "ok.tgz"
    archive.write_bytes(dataset_tgz())
    seen = []

    def filter_then_die(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        seen.append(member.name)
        if len(seen) == 4:  # a few files are already on disk when the "Ctrl-C" lands
            raise KeyboardInterrupt
        return tarfile.data_filter(member, dest)

    monkeypatch.setattr(dl, "_strict_data_filter", filter_then_die)
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        dl.safe_extract(archive, root)
    assert len(seen) == 4
    assert list(root.iterdir()) == []


def test_archive_without_train_val_is_not_installed(tmp_path: Path) -> None:
    archive = tmp_path / "x.tgz"
    archive.write_bytes(make_tgz([_file("imagenette2-160/readme.txt")]))
    with pytest.raises(UserError, match="no train, val folder"):
        dl.safe_extract(archive, tmp_path / "root", require=("train", "val"))
    assert list((tmp_path / "root").iterdir()) == []


# --- ensure_dataset -----------------------------------------------------------------------------


def test_ensure_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dl.ensure_dataset(tmp_path) == tmp_path
    with pytest.raises(UserError, match="dataset root .*mydata does not exist"):
        dl.ensure_dataset(tmp_path / "mydata")
    calls = []
    monkeypatch.setattr(dl, "download_imagenette", lambda root, size: calls.append((root, size)) or root)
    dl.ensure_dataset(tmp_path / "d" / "imagenette2-320")
    assert calls == [(tmp_path / "d", "320px")]

    def offline(root, size):
        raise UserError("download of x failed after 5 attempts: no route")

    monkeypatch.setattr(dl, "download_imagenette", offline)
    with pytest.raises(UserError, match=r"failed after 5 attempts: no route \(or pass --root DIR"):
        dl.ensure_dataset(tmp_path / "imagenette2-160")
    assert set(dl.FOLDER_SIZES) == {"imagenette2", "imagenette2-160", "imagenette2-320"}
    from imagenette_lab.commands.download import SIZES

    assert set(SIZES) == set(dl.ARCHIVES)  # the CLI's static choices match torchvision's table


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_download(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["download", "--root", str(tmp_path), "--url", server.url, "--timeout", "0.5"]
    assert cli.main([*args, "--md5", md5(server.body)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "imagenette2-160")
    assert cli.main(["download", "--root", str(tmp_path / "other"), "--url", server.url,
                     "--md5", "f" * 32]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("imagenette-lab download: error: checksum mismatch for imagenette2-160.tgz")
    assert not any(line.startswith("Traceback") for line in err)


def test_cli_rejects_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["download", "--size", "64px"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
