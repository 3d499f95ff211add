import os
import stat

import pytest

from lstmkit.fileio import atomic_write


def test_atomic_write_replaces_only_when_done(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            assert target.read_text() == "first"  # the old file stays until the block ends
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary file left behind


def test_atomic_write_binary_and_ordinary_permissions(tmp_path):
    target = tmp_path / "w.bin"
    with atomic_write(target, "wb") as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
