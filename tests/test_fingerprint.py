"""fingerprint.py: whole-file digests, cached by (path, size, mtime, ctime, inode) in a JSON file."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffret_pyserini import fingerprint
from diffret_pyserini.fingerprint import cache_file, file_digest, path_digest

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
PAST_NS = 1_700_000_000 * 10**9  # an mtime well outside the "racy" window, so digests get cached


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("DIFFRET_CACHE_DIR", str(d))
    return d


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    """Paths that were actually read and hashed, in call order."""
    calls: list[Path] = []
    real = fingerprint._hash_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(fingerprint, "_hash_file", counting)
    return calls


def expected(data: bytes) -> str:
    return hashlib.sha256(str(len(data)).encode() + data).hexdigest()


def make(path: Path, data: bytes, mtime_ns: int = PAST_NS) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def flip_middle_byte(path: Path) -> None:
    with open(path, "r+b") as f:  # in place: same size, same inode
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))


def test_one_byte_in_the_middle_changes_the_digest(tmp_path, cache_dir, hashes):
    data = os.urandom(3 * MIB)  # a middle byte far from either end
    f = make(tmp_path / "model.safetensors", data)
    before = file_digest(f)
    assert before == expected(data)  # sha256(size + bytes)
    flip_middle_byte(f)
    after = file_digest(f)
    assert after != before and after == expected(f.read_bytes())
    # a rewrite that puts the old mtime back is still seen (ctime moves)
    os.utime(f, ns=(PAST_NS, PAST_NS))
    assert file_digest(f) == after
    flip_middle_byte(f)
    os.utime(f, ns=(PAST_NS, PAST_NS))
    assert file_digest(f) == before
    assert len(hashes) == 4  # every call read the file: each one followed a change of the file's stamp
    assert file_digest(f) == before and len(hashes) == 4


def test_file_over_the_old_sampling_limit_is_hashed_whole(tmp_path, cache_dir):
    # The old code hashed files over 64 MiB by size + first and last MiB only. A sparse file costs no disk.
    f = tmp_path / "big.bin"
    with open(f, "wb") as handle:
        handle.truncate(65 * MIB)
    os.utime(f, ns=(PAST_NS, PAST_NS))
    before = file_digest(f)
    with open(f, "r+b") as handle:
        handle.seek(32 * MIB)
        handle.write(b"\x01")
    assert file_digest(f) != before


def test_unchanged_file_is_not_read_again_and_touch_forces_a_rehash(tmp_path, cache_dir, hashes):
    f = make(tmp_path / "w.bin", b"weights" * 1000)
    digest = file_digest(f)
    assert file_digest(f) == digest and file_digest(str(f)) == digest
    assert hashes == [f.resolve()]
    entry = json.loads(cache_file().read_text())["files"][str(f.resolve())]
    assert entry["sha256"] == digest and entry["size"] == f.stat().st_size and entry["inode"] == f.stat().st_ino
    os.utime(f, ns=(PAST_NS + 10**9, PAST_NS + 10**9))  # touched: same bytes, new mtime
    assert file_digest(f) == digest and len(hashes) == 2
    assert file_digest(f) == digest and len(hashes) == 2
    link = tmp_path / "link.bin"  # the cache is keyed by the resolved path: a symlink shares the entry
    link.symlink_to(f)
    assert file_digest(link) == digest and len(hashes) == 2


def test_recently_modified_file_is_not_cached(tmp_path, cache_dir, hashes):
    f = tmp_path / "fresh.bin"
    f.write_bytes(b"x" * 100)  # mtime now: a same-size write within this clock tick would be invisible
    assert file_digest(f) == file_digest(f) == expected(b"x" * 100)
    assert len(hashes) == 2 and not cache_file().exists()


def test_unwritable_or_corrupt_cache_still_gives_the_right_digest(tmp_path, monkeypatch, hashes):
    data = os.urandom(MIB + 5)
    f = make(tmp_path / "w.bin", data)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DIFFRET_CACHE_DIR", str(blocker / "cache"))
    assert file_digest(f) == file_digest(f) == expected(data)
    assert len(hashes) == 2  # nothing cached, nothing raised
    assert path_digest(tmp_path) == path_digest(tmp_path)

    good = tmp_path / "cache"
    good.mkdir()
    (good / "file-digests.json").write_text('{"version": 1, "files": {tor')
    monkeypatch.setenv("DIFFRET_CACHE_DIR", str(good))
    assert file_digest(f) == expected(data)  # a torn cache file is ignored, then rewritten whole
    assert json.loads((good / "file-digests.json").read_text())["files"][str(f.resolve())]["sha256"] == expected(data)
    assert not list(good.glob("*.tmp-*"))


def test_folder_digest_and_merge(tmp_path, cache_dir, hashes):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    files = [make(model / "config.json", b"{}"), make(model / "sub" / "w.bin", os.urandom(2 * MIB))]
    first = path_digest(model)
    assert path_digest(model) == first and len(hashes) == 2
    other = file_digest(make(tmp_path / "other.bin", b"other"))  # a later write keeps the earlier entries
    cached = json.loads(cache_file().read_text())["files"]
    assert {str(p.resolve()) for p in files} | {str((tmp_path / "other.bin").resolve())} <= set(cached)
    assert cached[str((tmp_path / "other.bin").resolve())]["sha256"] == other
    flip_middle_byte(files[1])
    assert path_digest(model) != first


WRITER = "import sys; from diffret_pyserini.fingerprint import file_digest; [file_digest(p) for p in sys.argv[1:]]"


def test_processes_writing_the_cache_at_once(tmp_path, cache_dir):
    # Fresh interpreters, not fork: forking a test process that already runs a JVM (Pyserini) can deadlock.
    paths = [str(make(tmp_path / f"f{i}.bin", os.urandom(1000 + i))) for i in range(40)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, *paths[i::4]], env=env) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    truth = {p: expected(Path(p).read_bytes()) for p in paths}
    cached = json.loads(cache_file().read_text())["files"]  # whole JSON, whoever wrote last
    assert cached and all(cached[p]["sha256"] == truth[p] for p in cached)
    assert not list(cache_dir.glob("*.tmp-*"))
    assert all(file_digest(p) == truth[p] for p in paths)
