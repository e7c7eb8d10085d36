"""Safe, resumable Imagenette download: HTTP Range resume, retries with backoff, md5, safe untar.

Retry policy: 5xx, 408, 429, timeouts, refused/reset connections and short reads are retried with
exponential backoff (`backoff * 2**n` seconds); other HTTP errors such as 404 fail at once, since
asking again cannot fix a wrong URL. A partial `.part` file is kept between attempts and runs, so
the next request resumes it with a `Range` header.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets import Imagenette
from tqdm import tqdm

from imagenette_lab import __version__
from imagenette_lab.errors import UsageError, UserError

log = logging.getLogger(__name__)

# size -> (url, md5), straight from torchvision so the two never disagree.
ARCHIVES: dict[str, tuple[str, str]] = dict(Imagenette._ARCHIVES)
CHUNK = 1 << 20
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_SLEEP = 60.0


def _archive_name(url: str) -> str:
    return Path(urlparse(url).path).name


def _folder_name(url: str) -> str:
    name = _archive_name(url)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# Extracted folder name -> size, e.g. "imagenette2-160" -> "160px".
FOLDER_SIZES: dict[str, str] = {_folder_name(url): size for size, (url, _) in ARCHIVES.items()}


class _Retryable(Exception):
    """A transient failure worth another attempt."""


def _no_connection(reason: object) -> bool:
    """True for failures to reach the host at all (DNS, refused, no route), not mid-transfer ones."""
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/200` -> (100, 200); unknown parts are None."""
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """One HTTP request that appends to (or restarts) `part`; raises on any failure."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(
        url, headers={"User-Agent": f"imagenette-lab/{__version__}", "Accept-Encoding": "identity"}
    )
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The .part does not fit the server's file (stale or already too long): start over.
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a resume at byte {offset}; restarting") from None
        raise
    with resp:
        if resp.status == 206:
            start, total = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}; restarting")
        else:
            # A plain 200 means the server ignored Range: the body is the whole file again.
            if offset:
                log.info("server does not support resume; restarting %s from 0", part.name)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        try:
            f = open(part, "r+b" if offset else "wb")
        except OSError as e:
            raise UserError(f"cannot write {part}: {e.strerror}") from None
        with f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=None, leave=False,
        ) as bar:
            f.seek(offset)
            f.truncate()
            while chunk := resp.read(CHUNK):
                try:
                    f.write(chunk)
                except OSError as e:
                    raise UserError(f"cannot write {part}: {e.strerror}") from None
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        raise _Retryable(f"connection closed after {got} of {total} bytes")


def download_url(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest` via `dest.part` (resumed if present), then check `md5`.

    Makes at most `1 + retries` requests; see the module docstring for what is retried.
    An existing `dest` with the right md5 is reused without a request.
    """
    dest = Path(dest)
    if urlparse(url).scheme not in ("http", "https"):
        raise UsageError(f"only http(s) URLs can be downloaded, got {url!r}")
    if dest.exists():
        if md5 is None or file_md5(dest) == md5:
            log.info("%s already downloaded", dest)
            return dest
        log.warning("%s has the wrong checksum; downloading it again", dest)
        dest.unlink()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {dest.parent}: {e.strerror}") from None
    part = dest.with_name(dest.name + ".part")
    last, unreachable = "no attempt made", False
    for attempt in range(retries + 1):
        if attempt:
            delay = min(backoff * 2 ** (attempt - 1), MAX_SLEEP)
            log.warning("download of %s failed (%s); retry %d/%d in %.1fs",
                        url, last, attempt, retries, delay)
            time.sleep(delay)
        try:
            _fetch_once(url, part, timeout)
            break
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code not in RETRY_STATUS:
                raise UserError(f"download of {url} failed: {last} (not retried)") from None
        except urllib.error.URLError as e:
            last = str(e.reason)
            unreachable = _no_connection(e.reason)
        except _Retryable as e:
            last, unreachable = str(e), False
        except (OSError, http.client.HTTPException) as e:  # timeouts, resets, bad responses
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            unreachable = _no_connection(e)
    else:
        kept = part.stat().st_size if part.exists() else 0
        if unreachable:  # nothing to resume: the host was never reached
            hint = "check your connection (and any proxy settings), then run again"
            if kept:
                hint += f"; the {kept / 1e6:.1f} MB downloaded so far are kept and resumed"
        else:
            hint = "run again to resume" if kept else "run again"
        raise UserError(f"download of {url} failed after {retries + 1} attempts: {last}; {hint}")
    if md5 is not None:
        got = file_md5(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise UserError(
                f"checksum mismatch for {dest.name}: expected {md5}, got {got}; "
                "the file was deleted, run again"
            )
    os.replace(part, dest)
    return dest


class _LinkMemberError(tarfile.FilterError):
    def __init__(self, tarinfo: tarfile.TarInfo) -> None:
        self.tarinfo = tarinfo
        super().__init__(f"{tarinfo.name!r} is a link; a dataset archive holds only files and folders")


def _strict_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    # The "data" filter silently strips a leading "/"; a genuine dataset never has one, so refuse.
    if member.name.startswith(("/", os.sep)) or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    # Chains of symlinks/hardlinks defeat the "data" filter's per-member realpath() checks on many
    # Python versions (CVE-2025-4517 and later bypasses); Imagenette has no links: refuse them all.
    if member.issym() or member.islnk():
        raise _LinkMemberError(member)
    return tarfile.data_filter(member, dest)


def safe_extract(
    archive: str | Path,
    root: str | Path,
    *,
    expect_name: str | None = None,
    require: Sequence[str] = (),
) -> Path:
    """Extract `archive` into `root` and return its single top-level folder.

    Unpacks into a temporary folder in `root` (same filesystem) and renames the top-level folder
    into place only when complete, so an interrupted run never leaves a tree that looks finished.
    `expect_name` and the `require`d subfolders are checked before that rename.
    """
    # torchvision's extract_archive applies no tarfile filter, so members like "../x" or links
    # out of the tree would be honoured; we extract ourselves with the "data" filter.
    archive, root = Path(archive), Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    except OSError as e:
        raise UserError(f"cannot create a folder in {root}: {e.strerror}") from None
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                tf.extractall(tmp, filter=_strict_data_filter)
        except tarfile.FilterError as e:
            name = e.tarinfo.name if e.tarinfo is not None else "?"
            raise UserError(f"refusing unsafe archive member {name!r} in {archive}: {e}") from None
        except tarfile.TarError as e:
            reason = str(e).strip().splitlines()[0].rstrip(":") if str(e).strip() else type(e).__name__
            raise UserError(f"{archive} is not a readable tar archive ({reason})") from None
        except (EOFError, zlib.error) as e:  # a cut-off or damaged .gz stream
            raise UserError(f"{archive} is truncated or corrupt ({e}); delete it and run again") from None
        except OSError as e:
            raise UserError(f"extracting {archive} failed: {e}") from None
        entries = list(tmp.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            names = sorted(p.name for p in entries)
            raise UserError(f"{archive} should hold one top-level folder, found {names}")
        top = entries[0]
        if expect_name is not None and top.name != expect_name:
            raise UserError(f"{archive} holds {top.name!r}, expected {expect_name!r}")
        missing = [d for d in require if not (top / d).is_dir()]
        if missing:
            raise UserError(f"{archive} has no {', '.join(missing)} folder in {top.name}/")
        target = root / top.name
        if target.exists():
            raise UserError(f"{target} already exists but is incomplete; remove it and run again")
        os.replace(top, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_complete(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "val").is_dir()


def download_imagenette(
    root: str | Path,
    size: str = "160px",
    *,
    url: str | None = None,
    md5: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 30.0,
) -> Path:
    """Download and extract Imagenette `size` into `root`; return e.g. `root/imagenette2-160`.

    `url` overrides the mirror; `md5` defaults to the official checksum for `size`. Skips
    everything when the folder already has train/ and val/. The archive is deleted after a
    successful extraction to save disk.
    """
    if size not in ARCHIVES:
        raise UsageError(f"unknown size {size!r}; choose from {', '.join(ARCHIVES)}")
    default_url, default_md5 = ARCHIVES[size]
    url = url or default_url
    md5 = md5 or default_md5
    root = Path(root).expanduser()
    folder = root / _folder_name(default_url)
    if is_complete(folder):
        log.info("Imagenette %s already present at %s", size, folder)
        return folder
    archive = root / (_archive_name(url) or _archive_name(default_url))
    log.info("downloading Imagenette %s from %s", size, url)
    download_url(url, archive, md5=md5, retries=retries, backoff=backoff, timeout=timeout)
    log.info("extracting %s", archive)
    out = safe_extract(archive, root, expect_name=folder.name, require=("train", "val"))
    archive.unlink(missing_ok=True)
    return out


def ensure_dataset(path: str | Path) -> Path:
    """Return `path` if it exists; download it if it is named like an Imagenette folder."""
    path = Path(path).expanduser()
    if path.exists():
        return path
    size = FOLDER_SIZES.get(path.name)
    if size is None:
        raise UserError(f"dataset root {path} does not exist")
    log.info("%s is missing; downloading Imagenette %s", path, size)
    try:
        return download_imagenette(path.parent, size)
    except UserError as e:
        # The caller only asked for a dataset: say how to use a copy already on disk.
        raise UserError(f"{e} (or pass --root DIR with a local copy of the dataset)") from None
