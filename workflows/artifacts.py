"""Prefect artifacts of the flows: per-shard tables, run totals and image contact sheets.

The text is built by pure functions (tested without a Prefect server); ``publish_*`` send it to
the Prefect API as artifacts of the current flow run. Artifact keys are lower-case with dashes,
so that the UI groups the runs of one flow under the same key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from rodin_core.storage import StorageError, Store, is_disk_full, pipe_atomic

MAX_ERROR_CHARS = 300
"""Longest error text shown per shard in a table; the full record stays in the store."""
MAX_EMBEDDED_PNG_BYTES = 512 * 1024
"""Contact sheets larger than this are linked, not embedded, to keep the artifact small."""


@dataclass(frozen=True)
class ShardRow:
    """One line of a stage's shard table."""

    shard_id: str
    status: str
    """What the run did: the stage's verb (``rendered``, ``fitted``), ``skipped`` (already committed) or ``failed``."""
    subjects: int
    views: int
    """Views rendered or stored for the whole shard (subjects x views per subject)."""
    seconds: float
    attempt_id: str
    """Attempt that committed the shard, or the last failed attempt."""
    error: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)
    """Stage-specific columns (e.g. held-out PSNR), shown after ``seconds``."""


def short_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The first line of ``text``, cut to ``limit`` characters, safe inside a markdown table cell."""
    line = (text.strip().splitlines() or [""])[0].replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def shard_table(rows: Sequence[ShardRow]) -> list[dict[str, object]]:
    """Rows of the table artifact, sorted by shard id."""
    return [
        {"shard": r.shard_id, "status": r.status, "subjects": r.subjects, "views": r.views,
         "seconds": round(r.seconds, 2), **r.extra, "attempt": r.attempt_id, "error": short_error(r.error)}
        for r in sorted(rows, key=lambda r: r.shard_id)
    ]


def totals_markdown(title: str, rows: Sequence[ShardRow], wall_seconds: float, store_uri: str,
                    done: str = "rendered") -> str:
    """Markdown summary: shards by status, subjects and views ``done`` in this run, views/s, failures.

    ``done`` is the status of the shards this run produced (``rendered``, ``fitted``).
    """
    rendered = [r for r in rows if r.status == done]
    failed = [r for r in rows if r.status == "failed"]
    skipped = [r for r in rows if r.status == "skipped"]
    views = sum(r.views for r in rendered)
    rate = views / wall_seconds if wall_seconds > 0 else 0.0
    lines = [
        f"# {title}", "",
        f"Store: `{store_uri}`", "",
        f"| shards | {done} | skipped | failed | subjects {done} | views {done} | wall s | views/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        (f"| {len(rows)} | {len(rendered)} | {len(skipped)} | {len(failed)} | {sum(r.subjects for r in rendered)} "
         f"| {views} | {wall_seconds:.1f} | {rate:.2f} |"),
    ]
    if failed:
        lines += ["", "## Failed shards", "",
                  "Re-run the flow to retry them: committed shards are skipped.", "",
                  "| shard | last attempt | error |", "|---|---|---|"]
        lines += [f"| {r.shard_id} | {r.attempt_id} | {short_error(r.error)} |" for r in failed]
    return "\n".join(lines)


def image_markdown(title: str, png: bytes, uri: str, caption: str = "") -> str:
    """Markdown showing a PNG inline as a base64 data URI, with a link to where it is stored.

    PNGs over :data:`MAX_EMBEDDED_PNG_BYTES` are only linked.
    """
    lines = [f"# {title}", ""]
    if caption:
        lines += [caption, ""]
    if len(png) <= MAX_EMBEDDED_PNG_BYTES:
        lines += [f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})", ""]
    else:
        lines += [f"(image of {len(png)} bytes: too large to embed)", ""]
    lines.append(f"Stored at `{uri}`")
    return "\n".join(lines)


def publish_shard_report(key: str, title: str, rows: Sequence[ShardRow], wall_seconds: float,
                         store_uri: str, done: str = "rendered") -> Mapping[str, UUID]:
    """Publish the shard table and the totals of one stage run; returns the artifact ids."""
    table_id = create_table_artifact(table=shard_table(rows), key=f"{key}-shards",
                                     description=f"{title}: one row per shard")
    summary_id = create_markdown_artifact(markdown=totals_markdown(title, rows, wall_seconds, store_uri, done),
                                          key=f"{key}-summary", description=f"{title}: totals")
    return {"table": table_id, "summary": summary_id}


def publish_image(key: str, title: str, png: bytes, uri: str, caption: str = "") -> UUID:
    """Publish a PNG (a contact sheet) as a markdown artifact; returns its id."""
    return create_markdown_artifact(markdown=image_markdown(title, png, uri, caption), key=key,
                                    description=title)


def write_report(store: Store, relative_path: str, data: bytes) -> str:
    """Write a report file (a PNG, a markdown page) at ``relative_path`` under the dataset root; returns its URI.

    Written whole or not at all; StorageError naming the file when it cannot be written (e.g. a full disk).
    """
    path, uri = f"{store.root}/{relative_path}", f"{store.uri}/{relative_path}"
    try:
        if "file" in (store.fs.protocol if isinstance(store.fs.protocol, (tuple, list)) else (store.fs.protocol,)):
            store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        pipe_atomic(store.fs, path, data)
    except OSError as exc:
        advice = "free space on that disk" if is_disk_full(exc) else "check that it is writable"
        raise StorageError(f"cannot write the report {uri} ({exc.strerror or exc}): {advice}, then run the same "
                           "command again (committed shards are reused)") from exc
    return uri
