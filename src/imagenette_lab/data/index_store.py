"""Where dataset caches live, and the persisted probe results that make re-indexing cheap.

Indexing opens every image header (13,000 files for Imagenette); the result only changes when a
file does, so each split's probes are kept in `<cache>/index-<split>.json`, keyed by the file's
path relative to the split folder + size + mtime. A second run only `stat`s the files.

The cache folder is `<root>/.imagenette_lab/` (hidden: never taken for a split or a class) when the
data folder is writable, else `$XDG_CACHE_HOME/imagenette_lab/<name>-<hash of root>/` (read-only
or shared data); `IMAGENETTE_LAB_CACHE_DIR` overrides the base folder for both cases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".imagenette_lab"
ENV_CACHE = "IMAGENETTE_LAB_CACHE_DIR"
INDEX_VERSION = 1


def _writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return True
    except OSError:
        return False


def user_cache_base() -> Path:
    """$IMAGENETTE_LAB_CACHE_DIR, else $XDG_CACHE_HOME/imagenette_lab (~/.cache/imagenette_lab)."""
    env = os.environ.get(ENV_CACHE)
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagenette_lab"
    return base.expanduser()


def cache_dir(root: str | Path) -> Path:
    """The (created) cache folder for the dataset at `root`."""
    root = Path(root).expanduser().resolve()
    tag = f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"
    env = os.environ.get(ENV_CACHE)
    if env:
        d = user_cache_base() / tag
        if not _writable_dir(d):
            from imagenette_lab.errors import UserError

            raise UserError(f"{ENV_CACHE}={env} is not a writable folder")
        return d
    local = root / CACHE_DIRNAME
    if _writable_dir(local):
        return local
    d = user_cache_base() / tag
    if not _writable_dir(d):
        from imagenette_lab.errors import UserError

        raise UserError(f"neither {local} nor {d} is writable; set {ENV_CACHE} to a writable folder")
    return d


class ProbeStore:
    """Probe results of one split folder; `probe(path, fn)` only calls `fn` for new/changed files."""

    def __init__(self, split_dir: Path, file: Path | None):
        self.split_dir, self.file = split_dir, file
        self.entries: dict[str, list] = {}
        self.fresh: dict[str, list] = {}  # what this run saw: stale entries are dropped on save
        self.opened = 0
        if file is not None and file.is_file():
            try:
                data = json.loads(file.read_text())
                if data.get("version") == INDEX_VERSION and data.get("split_dir") == str(split_dir):
                    self.entries = data["entries"]
            except (OSError, ValueError, KeyError, TypeError):
                log.info("ignoring unreadable index cache %s", file)

    @classmethod
    def for_split(cls, root: Path, split: str) -> "ProbeStore":
        split_dir = (root / split).resolve()
        try:
            file = cache_dir(root) / f"index-{split}.json"
        except Exception as e:  # noqa: BLE001 - no cache folder only costs speed
            log.info("index cache disabled: %s", e)
            file = None
        return cls(split_dir, file)

    def probe(self, path: Path, fn: Callable[[Path], tuple], error: type[Exception]) -> tuple:
        """`fn(path)`'s result, from the store when size and mtime match; `error` is re-raised."""
        key = os.path.relpath(path, self.split_dir)
        try:
            st = path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            return fn(path)  # unreadable: let fn produce its usual error
        old = self.entries.get(key)
        if old is not None and old[:2] == stamp:
            self.fresh[key] = old
            if old[2] == "error":
                raise error(old[3])
            return tuple(old[2:])
        self.opened += 1
        try:
            result = fn(path)
        except error as e:
            self.fresh[key] = stamp + ["error", str(e)]
            raise
        self.fresh[key] = stamp + list(result)
        return result

    def save(self) -> None:
        if self.file is None or (self.fresh == self.entries):
            return
        from imagenette_lab.utils import atomic_write_text

        try:
            atomic_write_text(self.file, json.dumps(
                {"version": INDEX_VERSION, "split_dir": str(self.split_dir), "entries": self.fresh}))
        except OSError as e:  # a full disk must not stop indexing: next run probes again
            log.warning("could not save the index cache %s: %s", self.file, e.strerror or e)
