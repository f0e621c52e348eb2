"""Sharded, manifest-committed object store (docs/data-contracts.md).

Everything is addressed by an fsspec URI (a local path, ``s3://bucket/prefix``, ``memory://...``).
A dataset root holds one folder per stage; work is split into shards of subjects, and a shard is
written in two steps:

1. data files under a key unique to the attempt, so two attempts never overwrite each other::

       {root}/{stage}/data/{shard_id}/{attempt_id}/{name}

2. a small manifest (files, sizes, sha256, row counts, subject ids, config hash), written last::

       {root}/{stage}/manifests/{shard_id}.json

The manifest is the commit point: readers only follow manifests and verify sizes and hashes; a
shard without a manifest does not exist; an attempt folder no manifest references is garbage
(:meth:`StageStore.collect_garbage`). Failed attempts leave a record under
``{root}/{stage}/failures/{shard_id}/{attempt_id}.json``; a later commit of the shard recovers it
(:func:`is_recovered`). :meth:`StageStore.verify_shard` checks a committed shard's files against
their manifest without raising.

Listing the committed shards lists only ``manifests/`` (one object per shard), never the data
tree, so it stays cheap at 100K subjects. Committing a shard that already has a manifest is
allowed and overwrites the commit point: the newest commit wins, and the attempt it replaced
becomes garbage.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Integral
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFESTS, DATA, FAILURES = "manifests", "data", "failures"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
"""Bytes read at a time when a file is hashed in full."""
_ATTEMPT_TIME = re.compile(r"\d{8}T\d{6}Z")
"""The UTC start time that begins an attempt id."""
_REDO = "delete the manifest (StageStore.delete_manifest) and re-run the stage to re-create the shard"


class StorageError(Exception):
    """A storage operation was misused or failed; the message names the value and what to do."""


class ShardNotFoundError(StorageError):
    """The shard has no manifest, so it does not exist."""


class ShardCorruptError(StorageError):
    """A committed shard cannot be trusted: bad manifest, missing file, size/hash/parquet error.

    ``problem`` says what is wrong and where; ``stage``, ``shard_id``, ``file`` (None for the
    manifest) and ``root`` (the dataset root's URI) let callers name the command that repairs it.
    """

    def __init__(self, problem: str, stage: str, shard_id: str, file: str | None = None,
                 root: str | None = None) -> None:
        super().__init__(f"{problem}; {_REDO}")
        self.problem, self.stage, self.shard_id, self.file, self.root = problem, stage, shard_id, file, root

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problem, self.stage, self.shard_id, self.file, self.root)


class FileNotInManifestError(StorageError, KeyError):
    """A file name is not listed in a manifest (a ``KeyError`` as well, for mapping-style use)."""

    def __str__(self) -> str:
        return str(self.args[0])


def shard_id_for(index: int) -> str:
    """Shard id of shard number ``index``: ``shard_id_for(42) == "shard-000042"``."""
    if isinstance(index, bool) or not isinstance(index, Integral) or index < 0:
        raise StorageError(f"shard index must be a non-negative integer, got {index!r}")
    return f"shard-{int(index):06d}"


def config_hash(obj: Mapping[str, Any]) -> str:
    """First 16 hex chars of the sha256 of canonical JSON (sorted keys, compact separators)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"config_hash needs a mapping (e.g. dataclasses.asdict(cfg)), got {type(obj).__name__}")
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config_hash needs finite JSON-serialisable values, convert them first: {exc}") from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a plain file name (no '/', '\\', not '.' or '..'), else raise."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise StorageError(f"{what} must be a plain file name (no '/', '\\', '..'), got {name!r}")
    return name


_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "oss"}


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    return set(fs.protocol) if isinstance(fs.protocol, (tuple, list)) else {fs.protocol}


def _ensure_dir(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Create folder ``path`` where the filesystem has real folders (object stores have none)."""
    if not _protocols(fs) & _OBJECT_STORES:
        fs.makedirs(path, exist_ok=True)


def pipe_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: on a local disk through a temporary file renamed into place
    (removed when the write fails, e.g. on a full disk); an object store's put is atomic already."""
    if "file" not in _protocols(fs):
        fs.pipe_file(path, data)
        return
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.pipe_file(temp, data)
        fs.mv(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm_file(temp)
        raise


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, is "no space left on device" (ENOSPC)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


SMALL_RECORD_CHARS = 500
"""Length of the error message kept in the small failure record written when the full one does not fit."""


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_attempt_id() -> str:
    """A fresh attempt id: UTC timestamp and a short uuid, e.g. ``20261123T215501Z-3f9a1c2b``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ManifestFile:
    """One data file of a shard, as recorded in its manifest."""

    name: str
    """Plain file name, unique within the shard (e.g. ``views.parquet``)."""
    path: str
    """Path relative to the stage root: ``data/{shard_id}/{attempt_id}/{name}``."""
    size: int
    """Size in bytes."""
    sha256: str
    """Lower-case hex sha256 of the bytes."""
    rows: int | None
    """Row count for tables, None for opaque bytes."""


@dataclass(frozen=True)
class Manifest:
    """The commit point of a shard: what was written, by which attempt, for which subjects."""

    format_version: int
    stage: str
    shard_id: str
    attempt_id: str
    created_at: str
    """ISO 8601 UTC time of the commit."""
    subject_ids: tuple[int, ...]
    config_hash: str
    """:func:`config_hash` of the config that produced the shard."""
    files: tuple[ManifestFile, ...]
    extra: dict = field(default_factory=dict)
    """Free JSON metadata of the stage (e.g. timing, metrics summary)."""

    def to_json(self) -> str:
        """Deterministic JSON text of the manifest."""
        body = {
            "format_version": self.format_version, "stage": self.stage, "shard_id": self.shard_id,
            "attempt_id": self.attempt_id, "created_at": self.created_at,
            "subject_ids": list(self.subject_ids), "config_hash": self.config_hash,
            "files": [vars(f) for f in self.files], "extra": self.extra,
        }
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, stage: str, shard_id: str) -> Manifest:
        """Parse and validate every field; raise :class:`ShardCorruptError` naming the shard."""

        def bad(what: str) -> ShardCorruptError:
            return ShardCorruptError(f"stage {stage!r} shard {shard_id!r}: manifest is invalid: {what}", stage,
                                     shard_id)

        try:
            body = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise bad(f"not valid JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise bad(f"expected a JSON object, got {type(body).__name__}")
        keys = {"format_version", "stage", "shard_id", "attempt_id", "created_at", "subject_ids",
                "config_hash", "files", "extra"}
        if set(body) != keys:
            raise bad(f"missing fields {sorted(keys - set(body))}, unknown fields {sorted(set(body) - keys)}")
        if not _is_int(body["format_version"]) or body["format_version"] != FORMAT_VERSION:
            raise bad(f"format_version {body['format_version']!r}, this code reads {FORMAT_VERSION}")
        if body["stage"] != stage or body["shard_id"] != shard_id:
            raise bad(f"it belongs to stage {body['stage']!r} shard {body['shard_id']!r}")
        for key in ("attempt_id", "created_at", "config_hash"):
            if not isinstance(body[key], str) or not body[key]:
                raise bad(f"{key} must be a non-empty string, got {body[key]!r}")
        try:
            check_name(body["attempt_id"], "attempt_id")
            datetime.fromisoformat(body["created_at"])
        except (StorageError, ValueError) as exc:
            raise bad(str(exc)) from exc
        subjects = body["subject_ids"]
        if not isinstance(subjects, list) or not all(_is_int(s) for s in subjects):
            raise bad(f"subject_ids must be a list of integers, got {subjects!r}")
        if not isinstance(body["extra"], dict):
            raise bad(f"extra must be an object, got {body['extra']!r}")
        if not isinstance(body["files"], list) or not body["files"]:
            raise bad(f"files must be a non-empty list, got {body['files']!r}")
        files = tuple(_parse_file(f, body["shard_id"], body["attempt_id"], bad) for f in body["files"])
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise bad(f"duplicate file names in {names}")
        return cls(FORMAT_VERSION, stage, shard_id, body["attempt_id"], body["created_at"],
                   tuple(subjects), body["config_hash"], files, body["extra"])

    def file(self, name: str) -> ManifestFile:
        """The entry of file ``name``; :class:`FileNotInManifestError` lists the names there are."""
        for f in self.files:
            if f.name == name:
                return f
        raise FileNotInManifestError(
            f"stage {self.stage!r} shard {self.shard_id!r} has no file {name!r}; "
            f"its manifest lists {[f.name for f in self.files]}")


@dataclass(frozen=True)
class ShardCheck:
    """What :meth:`StageStore.verify_shard` found in one committed shard."""

    stage: str
    shard_id: str
    files: int
    """Files its manifest lists (0 when the manifest itself is unreadable)."""
    size: int
    """Bytes read."""
    problems: tuple[ShardCorruptError, ...]
    """One error per damaged file (or the manifest's); empty when every file matches its manifest."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_file(entry: Any, shard_id: str, attempt_id: str, bad: Any) -> ManifestFile:
    if not isinstance(entry, dict) or set(entry) != {"name", "path", "size", "sha256", "rows"}:
        raise bad(f"file entry must have name, path, size, sha256, rows; got {entry!r}")
    name = entry["name"]
    try:
        check_name(name, "file name")
    except StorageError as exc:
        raise bad(str(exc)) from exc
    if entry["path"] != f"{DATA}/{shard_id}/{attempt_id}/{name}":
        raise bad(f"file {name!r} has path {entry['path']!r}, expected {DATA}/{shard_id}/{attempt_id}/{name}")
    if not _is_int(entry["size"]) or entry["size"] < 0:
        raise bad(f"file {name!r} has size {entry['size']!r}, expected a non-negative integer")
    if not isinstance(entry["sha256"], str) or not _SHA256_RE.fullmatch(entry["sha256"]):
        raise bad(f"file {name!r} has sha256 {entry['sha256']!r}, expected 64 lower-case hex digits")
    rows = entry["rows"]
    if rows is not None and (not _is_int(rows) or rows < 0):
        raise bad(f"file {name!r} has rows {rows!r}, expected null or a non-negative integer")
    return ManifestFile(name, entry["path"], entry["size"], entry["sha256"], rows)


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative local path made absolute against this process's working directory.

    Work handed to other processes (Ray Train workers run in directories of their own) must name a
    local dataset root absolutely; URIs with another protocol (``s3://``, ``memory://``) are unchanged.
    """
    protocol, sep, path = uri.partition("://")
    if not sep:
        return os.path.abspath(uri)
    if protocol == "file":
        return f"file://{os.path.abspath(path)}"
    return uri


def open_store(uri: str, storage_options: dict | None = None) -> Store:
    """Open the dataset root ``uri`` (any fsspec URI); ``storage_options`` go to the filesystem."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"dataset root must be a non-empty URI string, got {uri!r}")
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return Store(uri.rstrip("/") or uri, fs, root)


class Store:
    """A dataset root: one folder per stage (renders, triplanes, checkpoints, samples, reports)."""

    def __init__(self, uri: str, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.uri = uri
        self.fs = fs
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def stage(self, name: str) -> StageStore:
        """The folder of stage ``name``."""
        return StageStore(self, check_name(name, "stage name"))


class StageStore:
    """One stage's shards: writers, verified readers, failure records and garbage collection."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.fs = store.fs
        self.name = name
        self.uri = f"{store.uri}/{name}"
        self.root = f"{store.root}/{name}"

    def __repr__(self) -> str:
        return f"StageStore({self.uri!r})"

    def _manifest_path(self, shard_id: str) -> str:
        return f"{self.root}/{MANIFESTS}/{check_name(shard_id, 'shard id')}.json"

    def _children(self, path: str) -> dict[str, str]:
        """Base name -> full path of the entries right under ``path`` (empty when it is missing)."""
        self.fs.invalidate_cache(path)
        try:
            listed = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return {}
        names = (p.rstrip("/") for p in listed)
        return {p.rsplit("/", 1)[-1]: p for p in names if p != path.rstrip("/")}

    def committed_shards(self) -> list[str]:
        """Sorted ids of the shards that have a manifest (lists ``manifests/`` only)."""
        names = self._children(f"{self.root}/{MANIFESTS}")
        return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))

    def is_committed(self, shard_id: str) -> bool:
        """Whether shard ``shard_id`` has a manifest."""
        path = self._manifest_path(shard_id)
        self.fs.invalidate_cache(f"{self.root}/{MANIFESTS}")
        return bool(self.fs.exists(path))

    def begin(self, shard_id: str) -> ShardWriter:
        """Start a new attempt at shard ``shard_id``; nothing is visible until it commits."""
        return ShardWriter(self, check_name(shard_id, "shard id"), new_attempt_id())

    def read_manifest(self, shard_id: str) -> Manifest:
        """The validated manifest of a committed shard."""
        path = self._manifest_path(shard_id)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ShardNotFoundError(
                f"stage {self.name!r} has no committed shard {shard_id!r} (no manifest at {self.uri}/"
                f"{MANIFESTS}/{shard_id}.json); run the stage for it, or pick one of committed_shards()"
            ) from None
        try:
            return Manifest.from_json(raw.decode("utf-8"), stage=self.name, shard_id=shard_id)
        except UnicodeDecodeError as exc:
            raise self._corrupt(shard_id, f"manifest is not UTF-8 ({exc})") from exc
        except ShardCorruptError as exc:
            exc.root = self.store.uri
            raise

    def _corrupt(self, shard_id: str, problem: str, entry: ManifestFile | None = None) -> ShardCorruptError:
        """A :class:`ShardCorruptError` of shard ``shard_id`` (of data file ``entry`` when given)."""
        where = f"stage {self.name!r} shard {shard_id!r}"
        where += f": data file {self.uri}/{entry.path}" if entry is not None else ""
        return ShardCorruptError(f"{where} {problem}" if entry is not None else f"{where}: {problem}", self.name,
                                 shard_id, entry.name if entry is not None else None, self.store.uri)

    @staticmethod
    def _mismatch(entry: ManifestFile, size: int, digest: str) -> str | None:
        """What differs between a file's size and sha256 and its manifest entry, or None."""
        if size != entry.size:
            return f"has {size} bytes, the manifest says {entry.size}"
        if digest != entry.sha256:
            return f"has sha256 {digest}, the manifest says {entry.sha256}"
        return None

    def _read_verified(self, manifest: Manifest, entry: ManifestFile) -> bytes:
        try:
            data = self.fs.cat_file(f"{self.root}/{entry.path}")
        except FileNotFoundError:
            raise self._corrupt(manifest.shard_id, "listed in the manifest is missing", entry) from None
        problem = self._mismatch(entry, len(data), hashlib.sha256(data).hexdigest())
        if problem is not None:
            raise self._corrupt(manifest.shard_id, problem, entry)
        return data

    def verify_shard(self, shard_id: str) -> ShardCheck:
        """Check every file of a committed shard against its manifest (size, sha256), streaming each file.

        Never raises for a damaged shard: the :class:`ShardCheck` lists its problems.
        """
        try:
            manifest = self.read_manifest(shard_id)
        except ShardCorruptError as exc:
            return ShardCheck(self.name, shard_id, 0, 0, (exc,))
        problems, size = [], 0
        for entry in manifest.files:
            digest, length = hashlib.sha256(), 0
            try:
                with self.fs.open(f"{self.root}/{entry.path}", "rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        length += len(chunk)
            except FileNotFoundError:
                problems.append(self._corrupt(shard_id, "listed in the manifest is missing", entry))
                continue
            size += length
            problem = self._mismatch(entry, length, digest.hexdigest())
            if problem is not None:
                problems.append(self._corrupt(shard_id, problem, entry))
        return ShardCheck(self.name, shard_id, len(manifest.files), size, tuple(problems))

    def read_bytes(self, shard_id: str, name: str) -> bytes:
        """The bytes of file ``name`` of a committed shard, after checking size and sha256."""
        manifest = self.read_manifest(shard_id)
        return self._read_verified(manifest, manifest.file(name))

    def read_table(self, shard_id: str, name: str, columns: list[str] | None = None) -> pa.Table:
        """Parquet file ``name`` of a committed shard, verified, with its row count checked."""
        manifest = self.read_manifest(shard_id)
        entry = manifest.file(name)
        data = self._read_verified(manifest, entry)
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            available = parquet.schema_arrow.names
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._corrupt(shard_id, f"is not readable parquet ({exc})", entry) from exc
        missing = [c for c in columns or [] if c not in available]
        if missing:
            where = f"stage {self.name!r} shard {shard_id!r}: data file {self.uri}/{entry.path}"
            raise StorageError(f"{where} has no columns {missing}; it has {available}")
        try:
            table = parquet.read(columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._corrupt(shard_id, f"is not readable parquet ({exc})", entry) from exc
        if entry.rows is not None and table.num_rows != entry.rows:
            raise self._corrupt(shard_id, f"has {table.num_rows} rows, the manifest says {entry.rows}", entry)
        return table

    def iter_tables(self, name: str, shard_ids: Iterable[str] | None = None,
                    columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """Stream ``(shard_id, table)`` shard by shard (all committed shards when ``shard_ids`` is None)."""
        for shard_id in self.committed_shards() if shard_ids is None else shard_ids:
            yield shard_id, self.read_table(shard_id, name, columns)

    def delete_manifest(self, shard_id: str) -> None:
        """Un-commit a shard: its data stays, as garbage, until :meth:`collect_garbage`."""
        path = self._manifest_path(shard_id)
        if not self.is_committed(shard_id):
            raise ShardNotFoundError(f"stage {self.name!r} has no committed shard {shard_id!r} to delete")
        self.fs.rm_file(path)
        self.fs.invalidate_cache(f"{self.root}/{MANIFESTS}")
        log.info("un-committed %s shard %s", self.name, shard_id)

    def record_failure(self, shard_id: str, attempt_id: str, error: BaseException | str,
                       details: dict | None = None) -> str:
        """Write a failure record for one attempt and return its URI.

        The record is written whole or not at all. When it does not fit (a full disk), a small record
        without traceback and details is written instead; when neither fits, the failure is logged and
        ``""`` returned, so that the error being recorded is the one that reaches the caller.
        """
        check_name(shard_id, "shard id")
        check_name(attempt_id, "attempt id")
        tb = None
        if isinstance(error, BaseException):
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        record = {
            "stage": self.name, "shard_id": shard_id, "attempt_id": attempt_id, "time": _utc_now(),
            "error_type": type(error).__name__ if isinstance(error, BaseException) else None,
            "error": str(error), "traceback": tb, "details": details or {},
        }
        rel = f"{FAILURES}/{shard_id}/{attempt_id}.json"
        small = {**{k: record[k] for k in ("stage", "shard_id", "attempt_id", "time", "error_type")},
                 "error": record["error"][:SMALL_RECORD_CHARS], "traceback": None, "details": {"truncated": True}}
        for content in (record, small):
            try:
                _ensure_dir(self.fs, f"{self.root}/{FAILURES}/{shard_id}")
                pipe_atomic(self.fs, f"{self.root}/{rel}", json.dumps(content, indent=2, default=str).encode("utf-8"))
            except OSError as exc:
                write_error = exc
                continue
            log.warning("recorded failure of %s shard %s attempt %s: %s", self.name, shard_id, attempt_id, error)
            return f"{self.uri}/{rel}"
        log.error("could not record the failure of %s shard %s attempt %s at %s/%s (%s): %s", self.name, shard_id,
                  attempt_id, self.uri, rel, write_error, error)
        return ""

    def failures(self, shard_id: str | None = None) -> list[dict]:
        """Failure records (each with its ``uri``), of one shard or all, oldest first."""
        base = f"{self.root}/{FAILURES}"
        if shard_id is None:
            self.fs.invalidate_cache(base)
            try:
                paths = self.fs.find(base)
            except FileNotFoundError:
                paths = []
        else:
            paths = list(self._children(f"{base}/{check_name(shard_id, 'shard id')}").values())
        records = []
        for path in (p for p in paths if p.endswith(".json")):
            rel = path[path.rindex(f"/{FAILURES}/") + 1:]
            try:
                record = json.loads(self.fs.cat_file(path))
            except (ValueError, FileNotFoundError) as exc:
                record = {"error": f"unreadable failure record: {exc}"}
            records.append({**record, "uri": f"{self.uri}/{rel}"})
        return sorted(records, key=lambda r: (str(r.get("time")), r["uri"]))

    def unrecovered_failures(self, shard_id: str | None = None) -> list[dict]:
        """Failure records (as :meth:`failures`) that no later commit of their shard recovered."""
        committed = set(self.committed_shards())
        manifests: dict[str, Manifest | None] = {}
        open_records = []
        for record in self.failures(shard_id):
            shard = str(record.get("shard_id"))
            if shard not in manifests:
                try:
                    manifests[shard] = self.read_manifest(shard) if shard in committed else None
                except StorageError:
                    manifests[shard] = None
            if not is_recovered(record, manifests[shard]):
                open_records.append(record)
        return open_records

    def find_garbage(self, min_age_s: float = 0.0) -> list[Garbage]:
        """What no manifest references (walks ``data/`` and ``manifests/``: a maintenance op), sorted by URI.

        Attempt folders of no manifest (failed attempts, replaced commits), files of a committed
        attempt that its manifest does not list, stray files under ``data/`` and left-over temporary
        manifests. Anything written less than ``min_age_s`` seconds ago is left out: an attempt
        still being written has no manifest either. Shards whose manifest is unreadable are left alone.
        """
        listed: dict[str, set[str]] = {}
        skipped: set[str] = set()
        for shard_id in self.committed_shards():
            try:
                for entry in self.read_manifest(shard_id).files:
                    listed.setdefault(entry.path.rsplit("/", 1)[0], set()).add(entry.name)
            except ShardCorruptError as exc:
                log.warning("not collecting garbage of shard %s: %s", shard_id, exc)
                skipped.add(shard_id)
        found: list[tuple[str, bool]] = []
        for shard_id, is_folder in self._entries(DATA).items():
            if not is_folder:
                found.append((f"{DATA}/{shard_id}", False))
            elif shard_id not in skipped:
                for attempt_id, attempt_is_folder in self._entries(f"{DATA}/{shard_id}").items():
                    rel = f"{DATA}/{shard_id}/{attempt_id}"
                    if rel not in listed:
                        found.append((rel, attempt_is_folder))
                    elif attempt_is_folder:
                        found += [(f"{rel}/{name}", False) for name in self._entries(rel) if name not in listed[rel]]
        found += [(f"{MANIFESTS}/{name}", False) for name, is_folder in self._entries(MANIFESTS).items()
                  if not is_folder and not name.endswith(".json")]
        garbage = [Garbage(f"{self.uri}/{rel}", rel, is_folder, self._size(rel, is_folder),
                           self._newest_write(rel) if min_age_s > 0 else None) for rel, is_folder in found]
        return sorted((g for g in garbage if g.older_than(min_age_s)), key=lambda g: g.uri)

    def _entries(self, rel: str) -> dict[str, bool]:
        """Name -> whether it is a folder, of the entries right under ``{stage root}/{rel}`` (empty when missing)."""
        path = f"{self.root}/{rel}"
        self.fs.invalidate_cache(path)
        try:
            listed = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        entries = {}
        for info in listed:
            name = info["name"].rstrip("/")
            if name != path.rstrip("/") and name.rsplit("/", 1)[-1]:
                entries[name.rsplit("/", 1)[-1]] = info.get("type") == "directory"
        return entries

    def _newest_write(self, rel: str) -> float | None:
        """POSIX time of the newest write under ``rel`` (a file or folder), None when it cannot be told."""
        path = f"{self.root}/{rel}"
        try:
            files = [path] if self.fs.isfile(path) else list(self.fs.find(path))
            times = [self.fs.modified(f).timestamp() for f in files]
        except (FileNotFoundError, NotImplementedError, OSError):
            return None
        if times:
            return max(times)
        match = _ATTEMPT_TIME.match(rel.rsplit("/", 1)[-1])  # an empty attempt folder: when it began
        return datetime.strptime(match.group(0), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp() if match else None

    def _size(self, rel: str, is_folder: bool) -> int:
        try:
            return int(self.fs.du(f"{self.root}/{rel}", total=True) if is_folder else self.fs.size(f"{self.root}/{rel}"))
        except (FileNotFoundError, OSError):
            return 0

    def garbage_attempts(self) -> list[str]:
        """URIs of the attempt folders no manifest references (see :meth:`find_garbage`)."""
        return [g.uri for g in self.find_garbage() if g.folder and g.path.count("/") == 2]

    def remove_garbage(self, garbage: Sequence[Garbage]) -> None:
        """Delete what :meth:`find_garbage` found."""
        for item in garbage:
            path = f"{self.root}/{item.path}"
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=item.folder)
            if item.folder and _protocols(self.fs) & _OBJECT_STORES:  # stores with real folders keep a marker
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{path}/")
        self.fs.invalidate_cache(f"{self.root}/{DATA}")
        self.fs.invalidate_cache(f"{self.root}/{MANIFESTS}")
        log.info("deleted %d unreferenced attempt folders and files of stage %s", len(garbage), self.name)

    def collect_garbage(self, min_age_s: float = 0.0) -> list[str]:
        """Delete what :meth:`find_garbage` finds and return its URIs."""
        garbage = self.find_garbage(min_age_s)
        self.remove_garbage(garbage)
        return [g.uri for g in garbage]


@dataclass(frozen=True)
class Garbage:
    """An attempt folder or file of a stage that no manifest references."""

    uri: str
    path: str
    """Relative to the stage root, e.g. ``data/shard-000001/20261123T215501Z-3f9a1c2b``."""
    folder: bool
    size: int
    """Bytes."""
    written: float | None = None
    """POSIX time of its newest write (None when unknown or not asked for)."""

    def older_than(self, seconds: float) -> bool:
        """Whether its newest write is at least ``seconds`` old (unknown times count as new)."""
        if seconds <= 0:
            return True
        return self.written is not None and datetime.now(UTC).timestamp() - self.written >= seconds


def is_recovered(record: Mapping[str, Any], manifest: Manifest | None) -> bool:
    """Whether the failure ``record`` of a shard was followed by a commit of it (``manifest``, the shard's own)."""
    if manifest is None or manifest.attempt_id == record.get("attempt_id"):
        return False
    try:
        failed = datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return False
    return datetime.fromisoformat(manifest.created_at) >= failed


class _HashingSink(io.RawIOBase):
    """Write-only file wrapper that hashes and counts bytes on their way to ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


class ShardWriter:
    """One attempt at a shard: data files under an attempt-unique key, then the manifest."""

    def __init__(self, stage: StageStore, shard_id: str, attempt_id: str) -> None:
        self.stage = stage
        self.shard_id = shard_id
        self.attempt_id = attempt_id
        self._files: dict[str, ManifestFile] = {}
        self._committed = False
        self._rel_dir = f"{DATA}/{shard_id}/{attempt_id}"

    def __repr__(self) -> str:
        return f"ShardWriter({self.stage.uri!r}, {self.shard_id!r}, {self.attempt_id!r})"

    @property
    def files(self) -> tuple[ManifestFile, ...]:
        """Files written so far by this attempt."""
        return tuple(self._files.values())

    def _open(self, name: str) -> tuple[str, Any]:
        if self._committed:
            raise StorageError(f"{self!r} is already committed; begin() a new attempt to write {name!r}")
        if check_name(name, "file name") in self._files:
            raise StorageError(f"{self!r} already wrote {name!r}; every file name is written once per attempt")
        fs = self.stage.fs
        _ensure_dir(fs, f"{self.stage.root}/{self._rel_dir}")
        rel = f"{self._rel_dir}/{name}"
        return rel, fs.open(f"{self.stage.root}/{rel}", "wb")

    def _add(self, name: str, rel: str, sink: _HashingSink, rows: int | None) -> ManifestFile:
        entry = ManifestFile(name, rel, sink.size, sink.sha256.hexdigest(), rows)
        self._files[name] = entry
        return entry

    def write_bytes(self, name: str, data: bytes, rows: int | None = None) -> ManifestFile:
        """Write ``data`` as file ``name`` of this attempt (``rows`` when it holds a table)."""
        if rows is not None and (not _is_int(rows) or rows < 0):
            raise StorageError(f"rows must be None or a non-negative integer, got {rows!r}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StorageError(f"write_bytes needs bytes for {name!r}, got {type(data).__name__}; encode it first")
        rel, handle = self._open(name)
        with handle:
            sink = _HashingSink(handle)
            sink.write(data)
        return self._add(name, rel, sink, rows)

    def write_table(self, name: str, table: pa.Table) -> ManifestFile:
        """Write ``table`` as zstd parquet file ``name`` of this attempt."""
        if not isinstance(table, pa.Table):
            raise StorageError(f"write_table needs a pyarrow.Table, got {type(table).__name__}")
        rel, handle = self._open(name)
        with handle:
            sink = _HashingSink(handle)
            pq.write_table(table, pa.PythonFile(sink, mode="w"), compression="zstd")
        return self._add(name, rel, sink, table.num_rows)

    def commit(self, subject_ids: Sequence[int], config_hash: str, extra: dict | None = None) -> Manifest:
        """Write the manifest (last, atomically) and return it; the newest commit of a shard wins."""
        if self._committed:
            raise StorageError(f"{self!r} is already committed")
        if not self._files:
            raise StorageError(f"{self!r} wrote no files; write_bytes/write_table before commit")
        ids = [] if isinstance(subject_ids, (str, bytes)) else list(subject_ids)
        bad_ids = [s for s in ids if isinstance(s, bool) or not isinstance(s, Integral)]
        if bad_ids or isinstance(subject_ids, (str, bytes)):
            raise StorageError(f"subject_ids must be a sequence of integers, got {subject_ids!r:.200}")
        if not isinstance(config_hash, str) or not config_hash:
            raise StorageError(f"config_hash must be a non-empty string (from config_hash()), got {config_hash!r}")
        extra = dict(extra or {})
        try:
            json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"extra must be finite JSON-serialisable data: {exc}") from exc
        manifest = Manifest(FORMAT_VERSION, self.stage.name, self.shard_id, self.attempt_id, _utc_now(),
                            tuple(int(s) for s in ids), config_hash, self.files, extra)
        self._write_manifest(manifest.to_json().encode("utf-8"))
        self._committed = True
        log.info("committed %s shard %s attempt %s (%d files, %d subjects)", self.stage.name,
                 self.shard_id, self.attempt_id, len(self._files), len(manifest.subject_ids))
        return manifest

    def _write_manifest(self, data: bytes) -> None:
        fs, final = self.stage.fs, self.stage._manifest_path(self.shard_id)
        _ensure_dir(fs, final.rsplit("/", 1)[0])
        if "file" in _protocols(fs):
            temp = f"{final}.{self.attempt_id}.tmp"
            try:
                fs.pipe_file(temp, data)
                fs.mv(temp, final)
            except BaseException:  # e.g. a full disk: no half-written manifest is left beside the commit point
                with contextlib.suppress(OSError):
                    fs.rm_file(temp)
                raise
        else:
            fs.pipe_file(final, data)
        fs.invalidate_cache(final.rsplit("/", 1)[0])
