"""Unpack a student's zip without trusting anything in it.

Every member is checked before a single byte is written, so an archive with one bad member extracts nothing.
The sizes a zip declares are not trusted either: extraction counts the bytes it actually inflates and gives up
(removing what it wrote) when they exceed the declared size or the budget. Even the list of members is bounded
before it is read: zipfile keeps an object per member it lists.
"""

from __future__ import annotations

import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from grader.sandbox import remove_tree

# A member that inflates more than this many times over is a decompression bomb, not a notebook or a store.
MAX_COMPRESSION_RATIO = 100
# Small members may compress extremely well (a run of zeros, an empty sqlite page) without being a threat.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
# Room per member in the central directory: 46 bytes, its name, extra fields and comment. Without this bound a
# 50 MB zip of 600,000 empty members took 4 s and 300 MB of the grader's memory just to be listed.
DIRECTORY_BYTES_PER_MEMBER = 1024
# Folders a member may be nested in: a submission needs a few, and a tree nested a thousand deep breaks any
# recursive walk of it (shutil.rmtree, os.walk on Python 3.11).
MAX_DEPTH = 32


class UnsafeArchive(Exception):
    """The archive is refused; ``reason`` says why in words fit for the student's feedback."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def extract_zip(archive: Path, destination: Path, max_bytes: int, max_members: int) -> None:
    """Extract ``archive`` into ``destination`` (created if missing), or raise UnsafeArchive and write nothing."""
    try:
        with archive.open("rb") as stream:
            _check_directory_size(stream, max_members)
            with zipfile.ZipFile(stream) as zipped:
                members = zipped.infolist()
                _check_members(members, max_bytes, max_members)
                _extract_checked(zipped, members, destination, max_bytes)
    except zipfile.BadZipFile as error:
        raise UnsafeArchive(f"not a readable zip archive ({error})") from error
    # ValueError: a member name flagged UTF-8 that is not; RuntimeError: what zipfile finds it cannot extract.
    except (zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, ValueError, RuntimeError) as error:
        raise UnsafeArchive(f"corrupt or unsupported zip archive ({error})") from error


def _check_directory_size(stream, max_members: int) -> None:
    # zipfile's own reader of the end record (private, but unchanged since Python 2): it says how many bytes of
    # central directory ZipFile would parse into members.
    end = zipfile._EndRecData(stream)
    if end is None:
        raise UnsafeArchive("not a readable zip archive (no end of central directory record)")
    if end[zipfile._ECD_SIZE] > max_members * DIRECTORY_BYTES_PER_MEMBER:
        raise UnsafeArchive(
            f"archive's list of members is {end[zipfile._ECD_SIZE]} bytes, too long for the {max_members} members "
            "accepted"
        )


def _check_members(members: list[zipfile.ZipInfo], max_bytes: int, max_members: int) -> None:
    if len(members) > max_members:
        raise UnsafeArchive(f"archive has {len(members)} members; at most {max_members} are accepted")
    declared_total = sum(member.file_size for member in members)
    if declared_total > max_bytes:
        raise UnsafeArchive(f"archive unpacks to {declared_total} bytes; at most {max_bytes} are accepted")
    seen: set[str] = set()
    for member in members:
        _check_name(member.filename)
        _check_type(member)
        if member.flag_bits & 0x1:
            raise UnsafeArchive(f"member {member.filename!r} is encrypted")
        normalized = _relative_path(member.filename).as_posix().lower()
        if normalized in seen:
            raise UnsafeArchive(f"member {member.filename!r} appears more than once")
        seen.add(normalized)
        if member.file_size > RATIO_CHECK_MIN_BYTES:
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > MAX_COMPRESSION_RATIO:
                raise UnsafeArchive(f"member {member.filename!r} expands {ratio:.0f}x (a decompression bomb)")


def _check_name(name: str) -> None:
    # Windows tools write backslashes; treat them as separators so "..\\x" cannot slip past the ".." check.
    unified = name.replace("\\", "/")
    if "\x00" in name:
        raise UnsafeArchive(f"member name {name!r} contains a NUL byte")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if ".." in PurePosixPath(unified).parts:
        raise UnsafeArchive(f"member {name!r} points outside the archive (zip slip)")
    depth = len(_relative_path(name).parts)
    if not depth:
        raise UnsafeArchive(f"member name {name!r} is empty")
    if depth > MAX_DEPTH:
        raise UnsafeArchive(f"member {name[:80]!r}... is nested {depth} folders deep; at most {MAX_DEPTH} are accepted")


def _check_type(member: zipfile.ZipInfo) -> None:
    # Unix zips keep st_mode in the high 16 bits; 0 means "no unix mode" (plain file or directory from elsewhere).
    mode = member.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise UnsafeArchive(f"member {member.filename!r} is a symbolic link")
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeArchive(f"member {member.filename!r} is a special file (mode {oct(mode)})")


def _relative_path(name: str) -> PurePosixPath:
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    return PurePosixPath(*parts)


def _extract_checked(
    zipped: zipfile.ZipFile, members: list[zipfile.ZipInfo], destination: Path, max_bytes: int
) -> None:
    # Unpack next to the destination first, so a failure half-way leaves nothing behind in it.
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=destination.parent))
    try:
        written = 0
        for member in members:
            target = staging / _relative_path(member.filename)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written += _copy_member(zipped, member, target, max_bytes - written)
        _move_contents(staging, destination)
    except OSError as error:
        raise UnsafeArchive(f"archive could not be unpacked ({error})") from error
    finally:
        remove_tree(staging)


def _copy_member(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Inflate one member, trusting neither its declared size nor the budget left; return bytes written."""
    limit = min(member.file_size, budget)
    written = 0
    with zipped.open(member) as source, target.open("xb") as sink:
        while chunk := source.read(CHUNK_BYTES):
            written += len(chunk)
            if written > limit:
                raise UnsafeArchive(f"member {member.filename!r} inflates past its declared size or the size budget")
            sink.write(chunk)
    return written


def _move_contents(staging: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    entries = list(staging.iterdir())
    clashes = [entry.name for entry in entries if (destination / entry.name).exists()]
    if clashes:
        raise UnsafeArchive(f"archive would overwrite existing files: {', '.join(sorted(clashes))}")
    for entry in entries:
        entry.rename(destination / entry.name)
