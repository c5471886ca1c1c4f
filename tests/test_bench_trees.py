"""The benchmarks' tree generator: the same seed writes the same tree, of exactly N files, with
the files the agent must cope with (200 KB logs, binaries, extensions it skips).
"""

import re
from collections import defaultdict
from pathlib import Path

import pytest

from bench.trees import BINARY, EXCLUDED, LONG_TEXT, TEXT, TreeStats, generate

TEXT_EXTENSIONS = {".md", ".txt"}
TASK_LINE = re.compile(r"^(?:TODO: |- \[[ x]\] )(?P<title>.+)$", re.MULTILINE)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TreeStats]:
    root = tmp_path_factory.mktemp("thousand")
    return root, generate(root, 1000)


def test_the_same_seed_writes_the_same_paths_and_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", 300, seed=7)
    second = generate(tmp_path / "b", 300, seed=7)
    other = generate(tmp_path / "c", 300, seed=8)

    assert first == second
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert tree(tmp_path / "a") != tree(tmp_path / "c")
    assert first != other


@pytest.mark.parametrize("files", [0, 1, 137])
def test_n_counts_every_file_written(tmp_path: Path, files: int) -> None:
    stats = generate(tmp_path / "tree", files)

    written = tree(tmp_path / "tree")
    assert len(written) == stats.count == files
    assert stats.total_bytes == sum(len(data) for data in written.values())
    assert stats.text_bytes == sum(
        len(data) for path, data in written.items() if Path(path).suffix in TEXT_EXTENSIONS
    )


def test_a_thousand_files_hold_long_logs_binaries_and_skipped_extensions(
    thousand: tuple[Path, TreeStats],
) -> None:
    root, stats = thousand
    files = [p for p in root.rglob("*") if p.is_file()]
    extensions = {p.suffix for p in files}

    assert any(p.stat().st_size > 150_000 for p in files if p.suffix in TEXT_EXTENSIONS)
    assert {".md", ".txt", ".png", ".pdf", ".docx", ".json", ".log"} <= extensions
    assert all(stats.files[kind] > 0 for kind in (TEXT, LONG_TEXT, BINARY, EXCLUDED))
    assert {len(p.relative_to(root).parts) - 1 for p in files} == {1, 2, 3, 4}


def test_task_titles_repeat_within_a_project_and_are_mostly_distinct(
    thousand: tuple[Path, TreeStats],
) -> None:
    root, _ = thousand
    files_by_title: dict[str, set[Path]] = defaultdict(set)
    lines = 0
    for path in root.rglob("*"):
        if path.suffix in TEXT_EXTENSIONS:
            for match in TASK_LINE.finditer(path.read_text()):
                files_by_title[match["title"]].add(path)
                lines += 1

    repeated = [paths for paths in files_by_title.values() if len(paths) > 1]
    assert repeated, "some TODO appears in two files"
    assert all(len({p.relative_to(root).parts[0] for p in paths}) == 1 for paths in repeated)
    assert len(files_by_title) > lines / 2


def test_a_folder_with_files_in_it_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("mine")

    with pytest.raises(FileExistsError):
        generate(tmp_path, 10)
