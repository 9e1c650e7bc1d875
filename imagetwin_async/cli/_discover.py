"""From command-line paths to scan jobs: expand directories and globs, group images.

Pure file-system logic, no click: ``discover(["papers/", "figs/*.png"], images="per-dir")``
returns one ``Job`` per scan to start. Documents are one scan each; images are grouped (by
directory, all together, or one each) and groups are split at the API's 25 images a scan.
Every file is taken once, however many arguments name it: each scan is billed.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import attrs

from .. import _spec

__all__ = ["Discovery", "ImageGrouping", "Job", "PathError", "discover"]

ImageGrouping: TypeAlias = Literal["per-dir", "single", "each"]
_GLOB_CHARS = frozenset("*?[")


class PathError(Exception):
    """A path argument that names nothing to scan (a usage error: nothing was sent)."""


@attrs.frozen
class Job:
    """One scan to start: a document, or a group of up to 25 images.

    ``label`` names it in tables and output (the path as given, or the directory and range
    of an image group); ``source`` is what the SDK's ``scan`` takes.
    """

    label: str
    files: tuple[str, ...]
    kind: Literal["document", "images"]

    @property
    def source(self) -> str | list[str]:
        return self.files[0] if self.kind == "document" else list(self.files)


@attrs.frozen
class Discovery:
    """The jobs found, and the files in named directories that were skipped (wrong type)."""

    jobs: tuple[Job, ...]
    skipped: tuple[str, ...] = ()


def discover(paths: Sequence[str], *, images: ImageGrouping = "per-dir") -> Discovery:
    """Expand ``paths`` (files, directories searched recursively, globs) into scan jobs.

    A file named explicitly is kept whatever its type, so that the SDK's check says why it
    cannot be scanned; inside directories only supported types are taken. Raises
    ``PathError`` for a path that does not exist, a glob that matches nothing, or a run with
    nothing to scan at all.
    """
    files: list[str] = []
    skipped: list[str] = []
    for arg in paths:
        found, ignored = _expand(arg)
        files.extend(found)
        skipped.extend(ignored)
    files = _unique(files)
    documents = [f for f in files if not _is_image(f)]
    image_files = [f for f in files if _is_image(f)]
    jobs = [Job(_display(f), (f,), "document") for f in documents]
    jobs.extend(_image_jobs(image_files, images))
    if not jobs:
        listed = ", ".join(paths)
        raise PathError(
            f"nothing to scan in {listed}: no .pdf, .docx or image files "
            f"({', '.join(sorted(_spec.IMAGE_EXTENSIONS))})"
        )
    return Discovery(tuple(jobs), tuple(skipped))


def _expand(arg: str) -> tuple[list[str], list[str]]:
    path = Path(arg)
    if path.is_file():
        return [arg], []
    if path.is_dir():
        return _walk(path)
    if _GLOB_CHARS & set(arg):
        # Quoted globs (or a shell that does not expand them, as on Windows).
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise PathError(f"no files match {arg}")
        found: list[str] = []
        ignored: list[str] = []
        for match in matches:
            more, skip = _expand(match) if Path(match).is_dir() else ([match], [])
            found.extend(more)
            ignored.extend(skip)
        return found, ignored
    raise PathError(f"no such file or directory: {arg}")


def _walk(directory: Path) -> tuple[list[str], list[str]]:
    found: list[str] = []
    ignored: list[str] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .ipynb_checkpoints
        for name in sorted(names):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            (found if _supported(name) else ignored).append(full)
    return found, ignored


def _supported(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in _spec.DOCUMENT_EXTENSIONS or suffix in _spec.IMAGE_EXTENSIONS


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in _spec.IMAGE_EXTENSIONS


def _unique(files: Iterable[str]) -> list[str]:
    seen: set[Path] = set()
    unique: list[str] = []
    for name in files:
        key = Path(name).resolve()
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return unique


def _display(name: str) -> str:
    return os.path.normpath(name)


def _image_jobs(files: list[str], grouping: ImageGrouping) -> list[Job]:
    if grouping == "each":
        return [Job(_display(f), (f,), "images") for f in files]
    if grouping == "single":
        groups: dict[str, list[str]] = {"images": files} if files else {}
    else:
        groups = {}
        for name in files:
            groups.setdefault(os.path.dirname(_display(name)) or ".", []).append(name)
    jobs: list[Job] = []
    size = _spec.MAX_IMAGES
    for where, members in groups.items():
        chunks = [members[i : i + size] for i in range(0, len(members), size)]
        for number, chunk in enumerate(chunks):
            label = _group_label(where, grouping, len(members), number * size, len(chunk))
            jobs.append(Job(label, tuple(chunk), "images"))
    return jobs


def _group_label(where: str, grouping: ImageGrouping, total: int, start: int, count: int) -> str:
    if grouping == "single":
        span = (
            f"{total}" if total <= _spec.MAX_IMAGES else f"{start + 1}-{start + count} of {total}"
        )
        return f"all images ({span})"
    base = f"{where.rstrip(os.sep)}{os.sep}"
    if total <= _spec.MAX_IMAGES:
        return f"{base} ({total} image{'s' if total != 1 else ''})"
    return f"{base} (images {start + 1}-{start + count} of {total})"
