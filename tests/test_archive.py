"""Archive intake refuses hostile zips and, when it refuses, writes nothing."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from grader.archive import UnsafeArchive, extract_zip

MAX_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 50


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def add_symlink(path: Path, name: str, target: str) -> None:
    link = zipfile.ZipInfo(name)
    link.create_system = 3  # unix, so the mode bits below are honoured by unzip tools
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "a") as zipped:
        zipped.writestr(link, target)


def refuse(archive: Path, destination: Path, match: str, **limits) -> None:
    with pytest.raises(UnsafeArchive, match=match):
        extract_zip(archive, destination, limits.get("max_bytes", MAX_BYTES), limits.get("max_members", MAX_MEMBERS))
    assert not destination.exists() or not any(destination.iterdir()), "a refused archive must extract nothing"
    leftovers = [entry.name for entry in destination.parent.iterdir() if entry.name.startswith(".unpacking-")]
    assert not leftovers


def test_extracts_a_normal_submission(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"homework.ipynb": b"{}", "data/notes.txt": b"hello", "empty/": b""})
    destination = tmp_path / "out"
    extract_zip(archive, destination, MAX_BYTES, MAX_MEMBERS)
    assert (destination / "homework.ipynb").read_bytes() == b"{}"
    assert (destination / "data" / "notes.txt").read_bytes() == b"hello"
    assert (destination / "empty").is_dir()


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "..\\escape.txt", "a\\..\\..\\escape.txt"])
def test_refuses_zip_slip(tmp_path, name):
    archive = make_zip(tmp_path / "slip.zip", {"homework.ipynb": b"{}", name: b"owned"})
    refuse(archive, tmp_path / "out", "zip slip")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("name", ["/etc/cron.d/owned", "\\abs.txt", "C:/Windows/owned.txt"])
def test_refuses_absolute_paths(tmp_path, name):
    archive = make_zip(tmp_path / "absolute.zip", {"homework.ipynb": b"{}", name: b"owned"})
    refuse(archive, tmp_path / "out", "absolute path")


def test_refuses_symlinks_and_extracts_nothing(tmp_path):
    archive = make_zip(tmp_path / "link.zip", {"homework.ipynb": b"{}"})
    add_symlink(archive, "passwd", "/etc/passwd")
    refuse(archive, tmp_path / "out", "symbolic link")


def test_refuses_special_files(tmp_path):
    archive = make_zip(tmp_path / "fifo.zip", {})
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr(fifo, b"")
    refuse(archive, tmp_path / "out", "special file")


def test_refuses_too_many_members(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"f{index}.txt": b"x" for index in range(MAX_MEMBERS + 1)})
    refuse(archive, tmp_path / "out", "members")


def test_refuses_oversized_total(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"a.bin": b"x" * 600, "b.bin": b"y" * 600}, zipfile.ZIP_STORED)
    refuse(archive, tmp_path / "out", "unpacks to 1200 bytes", max_bytes=1000)


def test_refuses_compression_bomb(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(8 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000
    refuse(archive, tmp_path / "out", "decompression bomb")


def test_refuses_member_that_lies_about_its_size(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {"homework.ipynb": b"{}", "payload.bin": b"z" * 5000}, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    # The last central directory header is payload.bin's; declare 10 bytes instead of 5000 (offset 24: size).
    header = data.rindex(b"PK\x01\x02")
    data[header + 24 : header + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    refuse(archive, tmp_path / "out", "declared size|not a readable zip")


def test_refuses_duplicate_members(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zipped, pytest.warns(UserWarning, match="Duplicate name"):
        zipped.writestr("homework.ipynb", b"{}")
        zipped.writestr("homework.ipynb", b"{'evil': 1}")
    refuse(archive, tmp_path / "out", "more than once")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_refuses_corrupt_archives(tmp_path, content):
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(content)
    refuse(archive, tmp_path / "out", "not a readable zip")


def test_refuses_truncated_archive(tmp_path):
    archive = make_zip(tmp_path / "cut.zip", {"homework.ipynb": b"{" + b"a" * 5000 + b"}"})
    archive.write_bytes(archive.read_bytes()[:-40])
    refuse(archive, tmp_path / "out", "not a readable zip|corrupt")


def test_refuses_to_overwrite_existing_files(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "grade.json").write_text("trusted")
    archive = make_zip(tmp_path / "clobber.zip", {"grade.json": b"forged"})
    with pytest.raises(UnsafeArchive, match="overwrite"):
        extract_zip(archive, destination, MAX_BYTES, MAX_MEMBERS)
    assert (destination / "grade.json").read_text() == "trusted"
