"""``prunebench methods``: the listing, and each method's options from its schema."""

from __future__ import annotations

import json

import pytest

from prunebench.harness.pruning import METHODS, get_method
from prunebench.search.cli import main


def test_methods_json_lists_every_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["methods"]}
    assert set(rows) == set(METHODS.list())
    for name, row in rows.items():
        assert row["options"] == get_method(name).options.describe()
    kd = next(o for o in rows["l1"]["options"] if o["name"] == "kd")
    assert kd == {"name": "kd", "type": "bool", "default": False,
                  "range": "1/0, true/false, yes/no, on/off",
                  "help": "distil from the dense network while fine-tuning"}
    assert rows["dense"]["options"] == []


def test_methods_options_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--options"]) == 0
    out = capsys.readouterr().out
    assert "l1 (static):" in out and "dense (dense):" in out and "(no options)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("round_to ")
                and ">= 1" in ln)
    assert line.split()[:3] == ["round_to", "int", "1"]
    assert main(["methods"]) == 0
    assert "kd_temperature" not in capsys.readouterr().out  # the plain listing stays short
