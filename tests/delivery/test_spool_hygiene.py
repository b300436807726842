"""Spool files hold prompts: directories 0700, files 0600; a directory another user owns or may
write to is refused (the exporter then runs without a spool), the temp-directory fallback is checked
the same way, and a segment planted by another user is never replayed."""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from otel_pg_exporter import PostgresSpanExporter
from otel_pg_exporter.delivery.spool import (
    QUARANTINE,
    Spool,
    UnsafeSpoolDirectory,
    default_spool_root,
    destination_key,
    private_directory,
)
from tests.helpers.faults import TcpProxy, wait_for
from tests.helpers.support import Capture, count_spans

ROOT = os.geteuid() == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _spans(run_id: str, n: int) -> list:
    capture = Capture()
    for _ in range(n):
        with capture.tracer.start_as_current_span("hygiene", attributes={"run.id": run_id}):
            pass
    return capture.take()


def _other_user() -> int:
    return pwd.getpwnam("nobody").pw_uid


def test_directories_are_0700_and_segments_0600(db_dsn: str, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        root = tmp_path / "spool"
        proxy = TcpProxy(db_dsn)
        exporter = PostgresSpanExporter(proxy.dsn, spool_dir=str(root), timeout_s=1)
        try:
            proxy.cut()
            assert exporter.export_with_outcome(_spans(uuid.uuid4().hex, 3)).outcome.value == "spooled"
            destination = root / destination_key(proxy.dsn)
            assert _mode(root) == 0o700 and _mode(destination) == 0o700
            assert _mode(destination / QUARANTINE) == 0o700
            segments = list(destination.glob("*.spool"))
            assert segments and all(_mode(s) == 0o600 for s in segments)
        finally:
            proxy.restore()
            exporter.shutdown()
            proxy.close()
    finally:
        os.umask(old)


def test_an_existing_directory_of_ours_is_narrowed(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert private_directory(loose) == loose and _mode(loose) == 0o700


def test_a_directory_others_may_write_is_refused(db_dsn: str, tmp_path: Path, caplog) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeSpoolDirectory, match="writable by other users"):
        Spool(shared, db_dsn, 1 << 20)
    exporter = PostgresSpanExporter(db_dsn, spool_dir=str(shared))
    try:
        assert exporter.spool is None and exporter.stats()["spool_unavailable"] == 1
        assert "not usable" in caplog.text
        run_id = uuid.uuid4().hex
        assert exporter.export(_spans(run_id, 2)).name == "SUCCESS"  # the database still gets them
        assert count_spans(db_dsn, run_id) == 2
    finally:
        exporter.shutdown()


@pytest.mark.skipif(not ROOT, reason="changing a directory's owner needs root (CI runs as root)")
def test_a_directory_another_user_owns_is_refused(db_dsn: str, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, _other_user(), -1)
    with pytest.raises(UnsafeSpoolDirectory, match="owned by another user"):
        Spool(theirs, db_dsn, 1 << 20)
    exporter = PostgresSpanExporter(db_dsn, spool_dir=str(theirs))
    try:
        assert exporter.spool is None and exporter.stats()["spool_unavailable"] == 1
    finally:
        exporter.shutdown()


@pytest.mark.skipif(not ROOT, reason="planting as another user needs root (CI runs as root)")
def test_the_temp_fallback_is_refused_when_planted_and_a_planted_segment_never_replayed(
    db_dsn: str, tmp_path: Path, monkeypatch
) -> None:
    # no usable state directory: the per-user temp directory is the fallback
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fallback = default_spool_root()
    assert fallback == tmp_path / f"otel-pg-exporter-{os.getuid()}" / "spool"
    assert _mode(fallback.parent) == 0o700
    fallback.parent.rmdir()
    planted = fallback.parent
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    os.chown(planted, _other_user(), -1)  # made by another local user before us
    monkeypatch.delenv("OTEL_EXPORTER_POSTGRES_SPOOL_DIR", raising=False)
    exporter = PostgresSpanExporter(db_dsn)
    try:
        assert exporter.spool is None and exporter.stats()["spool_unavailable"] == 1
    finally:
        exporter.shutdown()
    # a segment planted in our own spool (by a user who could write there once) is not replayed
    root = tmp_path / "ours"
    source = Spool(root, db_dsn, 1 << 20)
    forged = uuid.uuid4().hex
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off")
    try:
        source.append(exporter.encode(_spans(forged, 2)))
    finally:
        exporter.shutdown()
    source.close()
    (segment,) = source.directory.glob("*.spool")
    os.chown(segment, _other_user(), -1)
    replayer = PostgresSpanExporter(db_dsn, spool_dir=str(root), shutdown_timeout_s=2)
    try:
        assert not wait_for(lambda: count_spans(db_dsn, forged) > 0, 3)
    finally:
        replayer.shutdown()
    assert count_spans(db_dsn, forged) == 0 and segment.exists()
