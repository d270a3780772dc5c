"""`authsvc serve` sets up Prometheus multiprocess mode only when it is needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authsvc.cli import MULTIPROC_ENV, metrics_directory


def test_one_worker_needs_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_directory(1):
        assert MULTIPROC_ENV not in os.environ


def test_several_workers_get_a_fresh_directory_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    with metrics_directory(3):
        path = Path(os.environ[MULTIPROC_ENV])
        assert path.is_dir() and path.parent == tmp_path
        assert list(path.iterdir()) == []
        (path / "counter_1234.db").write_bytes(b"x")
    assert not path.exists()
    assert MULTIPROC_ENV not in os.environ


def test_an_operators_directory_is_kept_but_emptied_of_old_samples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_99.db").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("keep")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with metrics_directory(2):
        assert os.environ[MULTIPROC_ENV] == str(tmp_path)
        assert not (tmp_path / "counter_99.db").exists()
    assert (tmp_path / "notes.txt").exists()
