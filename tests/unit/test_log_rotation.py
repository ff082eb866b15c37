"""The size-capped logs of `avadios up`'s processes: bounded disk use, no line split between two files."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from avadios.log_rotation import RotatingLog


def _files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


def test_a_log_past_its_cap_rotates_and_keeps_only_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "inference-0.log"
    log = RotatingLog(path, max_bytes=1000, keep=2)
    for n in range(505):
        log.write(f"line {n:04d} {'x' * 40}\n".encode())
    log.close()
    assert [p.name for p in _files(path)] == ["inference-0.log", "inference-0.log.1", "inference-0.log.2"]
    newest = path.read_text().splitlines()
    assert newest[-1].startswith("line 0504")
    older = path.with_name("inference-0.log.1").read_text().splitlines()
    # the files continue each other: nothing lost between the newest two
    assert int(older[-1].split()[1]) + 1 == int(newest[0].split()[1])
    assert all(p.stat().st_size <= 1000 + 50 for p in _files(path))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), max_size=40), st.integers(min_value=10, max_value=400))
def test_no_line_is_split_between_files_and_nothing_kept_is_lost(chunks: list[bytes], cap: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "svc.log"
        log = RotatingLog(path, max_bytes=cap, keep=1000)  # keep everything: the files must join up exactly
        for chunk in chunks:
            log.write(chunk)
        log.close()
        files = sorted(_files(path), key=lambda p: -int(p.suffix[1:]) if p.suffix != ".log" else 0)
        joined = b"".join(p.read_bytes() for p in files)
        assert joined == b"".join(chunks)
        for p in files[:-1]:  # every rotated file ends at a line end
            assert p.read_bytes().endswith(b"\n")


def test_keep_zero_keeps_only_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "nats.log"
    log = RotatingLog(path, max_bytes=100, keep=0)
    for _ in range(20):
        log.write(b"y" * 30 + b"\n")
    log.close()
    assert [p.name for p in _files(path)] == ["nats.log"]
    assert path.stat().st_size <= 100 + 31
