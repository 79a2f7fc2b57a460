"""A study journal cut by a crash mid-write is repaired on resume; damage inside is refused."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from prunebench.search.cli import main


def _trials(journal: Path, study: str) -> list[tuple]:
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    return [(t.number, t.state.name, t.params, t.values)
            for t in optuna.load_study(study_name=study, storage=storage).trials]


@pytest.fixture(scope="module")
def first_run(search_args: Callable[..., list[str]],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search of 2 trials (its folder is copied by each test)."""
    out = tmp_path_factory.mktemp("journal") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(search_args(out, "--trials", "2")) == 0
    return out


def _copy(first_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(first_run, run)
    return run


@pytest.mark.slow
def test_resume_repairs_a_journal_cut_mid_write_and_keeps_every_trial(
        first_run: Path, tmp_path: Path, search_args: Callable[..., list[str]],
        capsys: pytest.CaptureFixture[str], only_line: Callable[[str], str]) -> None:
    run = _copy(first_run, tmp_path)
    journal = run / "study.journal"
    before = _trials(journal, "run")
    assert [t[1] for t in before] == ["COMPLETE", "COMPLETE"]
    good = journal.read_bytes()
    last = good.splitlines()[-1]
    damaged = good + last[: len(last) // 2]  # a crash halfway through appending a line
    journal.write_bytes(damaged)

    assert main(search_args(run, "--trials", "1", "--resume")) == 0
    out, err = capsys.readouterr()
    line = only_line(err)
    assert line.startswith(f"prunebench: warning: study journal {journal} ended in a partial "
                           f"line ({len(last) // 2} bytes, a write cut short by a crash); "
                           "dropped it and kept the original as study.journal.bak-")
    backups = list(run.glob("study.journal.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    after = _trials(journal, "run")  # readable for good: appended after a whole line
    assert after[:2] == before and [t[1] for t in after[2:]] == ["COMPLETE"]
    assert json.loads(out)["counts"]["total"] == 3
    # and again: the repaired journal needs no repair, and the next append is fine too
    assert main(search_args(run, "--trials", "1", "--resume")) == 0
    assert capsys.readouterr().err == "" and len(_trials(journal, "run")) == 4


@pytest.mark.slow
def test_damage_before_readable_lines_is_refused_and_the_journal_left_alone(
        first_run: Path, tmp_path: Path, search_args: Callable[..., list[str]],
        capsys: pytest.CaptureFixture[str], only_line: Callable[[str], str]) -> None:
    run = _copy(first_run, tmp_path)
    journal = run / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:3] + [b"{stray text\n"] + lines[3:])
    journal.write_bytes(damaged)

    assert main(search_args(run, "--trials", "1", "--resume")) == 2
    line = only_line(capsys.readouterr().err)
    assert line == (f"prunebench: error: study journal {journal} is unreadable at line 4 of "
                    f"{len(lines) + 1}, before readable lines (not a write cut short at its "
                    "end, so prunebench will not cut it); delete that line if it is stray "
                    "text, restore the journal from a copy, or start afresh with another --out")
    assert journal.read_bytes() == damaged and not list(run.glob("study.journal.bak-*"))


@pytest.mark.parametrize("tail, what", [
    (b'garbage\n\x00\x00\n', "2 unreadable lines (11 bytes"),  # a block of zeros after a crash
    (b'{"op_code": 5, "worker', "a partial line (22 bytes"),
])
def test_unreadable_end_is_dropped_with_one_warning(
        tmp_path: Path, tail: bytes, what: str, capsys: pytest.CaptureFixture[str],
        only_line: Callable[[str], str]) -> None:
    import optuna

    from prunebench.search.storage import open_storage

    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    good = journal.read_bytes()
    capsys.readouterr()  # Optuna's own log lines
    journal.write_bytes(good + tail)
    storage = open_storage(f"journal:{journal}")
    assert what in only_line(capsys.readouterr().err)
    assert journal.read_bytes() == good
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def test_a_whole_last_line_without_its_line_break_is_kept(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          only_line: Callable[[str], str]
                                                          ) -> None:
    import optuna

    from prunebench.search.storage import open_storage

    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{journal}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    good = journal.read_bytes()
    capsys.readouterr()  # Optuna's own log lines
    journal.write_bytes(good[:-1])  # the crash came between the last op and its line break
    storage = open_storage(f"journal:{journal}")
    assert "ended without a line break" in only_line(capsys.readouterr().err)
    assert journal.read_bytes() == good
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials
            ] == ["COMPLETE", "COMPLETE"]
