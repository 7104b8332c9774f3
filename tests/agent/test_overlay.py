"""The overlay workspace: changes listed exactly, apply() and discard() do what they say."""

import os

import pytest

import isolate
from isolate.agent import SessionError
from isolate.agent.overlay import Change


@pytest.fixture
def tree(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "keep.txt").write_text("keep\n")
    (ws / "edit.txt").write_text("old\n")
    (ws / "gone.txt").write_text("bye\n")
    (ws / "olddir").mkdir()
    (ws / "olddir" / "inner").write_text("x")
    return ws


def test_changes_apply_discard(tree):
    before = open("/proc/self/mountinfo").read()
    with isolate.Session("agent", workspace=tree, overlay=True) as s:
        r = s.exec("echo new >> edit.txt; echo add > new.txt; rm gone.txt; rm -r olddir; mkdir -p n/m; "
                   "echo deep > n/m/f; ln -s keep.txt link; cat edit.txt; id -u")
        assert r.returncode == 0, r
        assert r.stdout == "old\nnew\n0\n"
        # The host's directory is untouched so far.
        assert sorted(os.listdir(tree)) == ["edit.txt", "gone.txt", "keep.txt", "olddir"]
        assert (tree / "edit.txt").read_text() == "old\n"
        w = str(tree)
        assert s.changes() == [Change("M", f"{w}/edit.txt"), Change("D", f"{w}/gone.txt"), Change("A", f"{w}/link"),
                               Change("A", f"{w}/n"), Change("A", f"{w}/n/m"), Change("A", f"{w}/n/m/f"),
                               Change("A", f"{w}/new.txt"), Change("D", f"{w}/olddir")]
        s.discard()
        assert s.changes() == []
        assert s.exec("ls; cat edit.txt").stdout == "edit.txt\ngone.txt\nkeep.txt\nolddir\nold\n"
        s.exec("echo v2 > edit.txt; rm gone.txt; echo c > c.txt; mkdir d2; echo z > d2/z; rm -r olddir")
        applied = s.apply()
        assert [c.kind for c in applied] == ["A", "A", "A", "M", "D", "D"]
        assert sorted(os.listdir(tree)) == ["c.txt", "d2", "edit.txt", "keep.txt"]
        assert (tree / "edit.txt").read_text() == "v2\n" and (tree / "d2" / "z").read_text() == "z\n"
        assert s.changes() == []
        assert s.exec("ls").stdout == "c.txt\nd2\nedit.txt\nkeep.txt\n"
    assert open("/proc/self/mountinfo").read().count("overlay") == before.count("overlay")


def test_without_overlay_the_workspace_is_a_plain_bind(tree):
    with isolate.Session("agent", workspace=tree) as s:
        s.exec("echo direct > direct.txt")
        assert (tree / "direct.txt").read_text() == "direct\n"
        with pytest.raises(SessionError, match="no overlay"):
            s.changes()
