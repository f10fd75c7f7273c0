"""Files and folders written under a temporary name and renamed; a full disk or read-only folder as one line."""

import errno
import os
import socket
import subprocess

import pytest

from nlpssl.atomic import atomic_file, atomic_folder, atomic_write_text, disk_errors, disk_problem, format_bytes, replace_folder
from nlpssl.errors import UserError


def test_atomic_write_text_replaces_the_file_only_when_complete(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # fails after the text went to the partial file, before the rename
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    monkeypatch.undo()
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_two_writers_of_one_file_at_once_each_rename_a_whole_file(tmp_path):
    """Two processes (here: one, re-entered mid-write) write the same file: neither writes into the other's partial file."""
    path = tmp_path / "clean.txt"
    with atomic_file(path, "w", encoding="utf-8") as first:
        first.write("first, ")
        atomic_write_text(path, "second, whole")  # starts and finishes while the first is half way
        first.write("whole")
    assert path.read_text() == "first, whole"  # the last rename wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.txt"]


def test_the_next_write_removes_partial_files_only_of_killed_writers_on_this_host(tmp_path):
    path = tmp_path / "config.yaml"
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    killed.wait()  # its pid is now free: a writer killed mid-write
    host = socket.gethostname()
    left_by_kill = tmp_path / f".config.yaml.{host}-{killed.pid}-0a1b2c3d.tmp"
    still_writing = tmp_path / f".config.yaml.{host}-{os.getpid()}-0a1b2c3d.tmp"
    other_host = tmp_path / f".config.yaml.another-node-{killed.pid}-0a1b2c3d.tmp"
    for partial in (left_by_kill, still_writing, other_host):
        partial.write_text("half")
    atomic_write_text(path, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.yaml", still_writing.name, other_host.name])


def test_atomic_folder_keeps_the_previous_folder_when_the_writer_fails(tmp_path):
    best = tmp_path / "best"
    with atomic_folder(best) as partial:
        (partial / "model.safetensors").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_folder(best) as partial:
            (partial / "model.safetensors").write_text("half of v2")
            raise RuntimeError("killed mid-write")
    assert (best / "model.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # best.tmp removed
    with atomic_folder(best) as partial:
        (partial / "model.safetensors").write_text("v2")
        assert not (best / "model.safetensors").read_text() == "v2"  # nothing visible before the rename
    assert (best / "model.safetensors").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_replace_folder_moves_a_complete_folder_over_an_old_one(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "stale").write_text("old")
    replace_folder(tmp_path / "new", tmp_path / "final")
    assert [p.name for p in (tmp_path / "final").iterdir()] == ["a"] and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


@pytest.mark.parametrize(
    "error, words",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only or not yours"),
        (PermissionError(errno.EACCES, "Permission denied"), "read-only or not yours"),
        (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file write failed"), "no space left"),
    ],
)
def test_disk_failures_become_one_line_naming_the_folder_and_the_space_needed(tmp_path, error, words):
    folder = tmp_path / "checkpoints" / "step_000004.tmp"
    with pytest.raises(UserError) as caught:
        with disk_errors(folder, 3_500_000, "checkpoint step_000004"):
            raise error
    message = str(caught.value)
    assert words in message and str(folder) in message and "about 3.5 MB of free space needed" in message
    assert "\n" not in message and "train.output_dir" in message


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError):
        with disk_errors(tmp_path, 10, "x"):
            raise KeyError("a bug, not the disk")
    assert disk_problem(tmp_path, 10, "x", ValueError("no")) is None
    assert format_bytes(999) == "999 bytes" and format_bytes(1_234_567) == "1.2 MB"
