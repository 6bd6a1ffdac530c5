"""The shared file checks: a folder that is a file, a file that is a folder, hand-edited lists."""

from __future__ import annotations

import pytest

from data_modules.files import read_lines, require_dir, require_file


def test_a_root_that_is_a_file_is_named_as_not_a_directory(tmp_path):
    """A root pointed at the downloaded archive (``gta5.zip``) instead of the folder it unpacks to."""
    archive = tmp_path / "gta5.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"^GTA5 root not found: .*gta5\.zip is not a directory$"):
        require_dir(archive, "GTA5 root")
    assert require_dir(tmp_path, "GTA5 root") == tmp_path


def test_a_file_that_is_a_folder_is_not_found(tmp_path):
    (tmp_path / "classes.txt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^class list not found: .*classes\.txt$"):
        require_file(tmp_path / "classes.txt", "class list")


def test_hand_edited_lists_lose_blank_lines_and_surrounding_spaces(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text(" a \n\n b\t\n   \nc")
    assert read_lines(listing, "split list", ValueError) == ["a", "b", "c"]
