"""The report's BibTeX covers every registered method that cites a paper, and only those."""

from __future__ import annotations

import re

from prunebench.harness.pruning import METHODS
from prunebench.search.citations import BIBTEX, NO_PAPER, bibtex_for


def _title(entry: str) -> str:
    raw = re.search(r"title\s*=\s*\{(.*?)\},\n", entry, re.S).group(1)
    return " ".join(raw.replace("{", "").replace("}", "").split()).lower()


def test_every_method_with_a_paper_has_its_bibtex() -> None:
    registered = set(METHODS.list())
    assert set(BIBTEX) <= registered and NO_PAPER <= registered
    for name in sorted(registered - NO_PAPER):
        assert name in BIBTEX, f"{name} cites a paper but has no BibTeX in search/citations.py"
        citation = " ".join(METHODS.get(name).info.citation.split()).lower()
        # the registry's citations abbreviate long titles: their first words must agree
        assert " ".join(_title(BIBTEX[name]).split()[:4]) in citation, name


def test_bibtex_for_dedupes_and_names_the_unknown() -> None:
    entries, unknown = bibtex_for(["antidote", "antidote_fast", "dense", "l1", "my_method"])
    assert len(entries) == 2 and entries[0].startswith("@inproceedings{yu2020antidote")
    assert unknown == ["my_method"]
