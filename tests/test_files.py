"""Atomic writes: a crash mid-write leaves the old file or folder, and no temporary beside it."""

import pytest

from fedrp.files import atomic_path, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_path(path, mode=0o640) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("folder", [False, True])
def test_without_replace_the_first_writer_wins(tmp_path, folder):
    path = tmp_path / "cache"
    with pytest.raises(FileExistsError), atomic_path(path, folder=folder, replace=False) as tmp:
        (tmp / "part").write_text("ours") if folder else tmp.write_text("ours")
        (path.mkdir() or (path / "part").write_text("theirs")) if folder else path.write_text("theirs")
    assert ((path / "part") if folder else path).read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_a_folder_takes_its_place_whole(tmp_path):
    path = tmp_path / "export"
    with pytest.raises(RuntimeError), atomic_path(path, folder=True) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_path(path, folder=True) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in path.iterdir()) == ["a", "b"] and list(tmp_path.iterdir()) == [path]
