"""Every notebook under tutorials/ runs top to bottom without error.

The tests set `KERASMTL_TUTORIAL_SMOKE=1`: a notebook reads it to train for a
few steps on small data (the numbers it prints are then not meaningful), so the
default suite stays fast. Run a notebook by hand (or `make tutorials`) for the
real figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
# Over a minute even in smoke mode on 2 quiet cores (vision: three models traced,
# trained and exported; tagging: ~90 s, two taggers and their CRFs traced), which
# the ~15-minute default suite cannot afford; `make test-large` runs them.
LARGE = {"tagging", "vision"}
NOTEBOOKS = [
    pytest.param(p, id=p.stem, marks=[pytest.mark.large] if p.stem in LARGE else [])
    for p in sorted(TUTORIALS.glob("*.ipynb"))
]


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_tutorial_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERASMTL_TUTORIAL_SMOKE", "1")
    monkeypatch.setenv("KERASMTL_TUTORIAL_OUTPUT", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        # The notebook runs where it lives, so relative paths match a user's.
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors


# Committed with the outputs of a full run, so a reader sees the plots and
# tables without running anything. vision is not: its full run takes about
# 15 minutes on 2 cores.
EXECUTED = {"multilabel", "tagging"}
# What must not be in a committed output: temporary paths, TensorFlow's C++
# log lines (timestamps, pids), Keras progress bars and per-step timings.
VOLATILE = re.compile(r"/tmp/|^[IWE]\d{4} |absl::InitializeLog|\d+ms/step|\d+s/step|━",
                      re.M)


@pytest.mark.parametrize("name", sorted(EXECUTED))
def test_tutorial_is_committed_executed_with_small_stable_outputs(name):
    path = TUTORIALS / f"{name}.ipynb"
    notebook = json.loads(path.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert all(c["outputs"] for c in code[1:]), "every cell after the imports shows a result"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for o in outputs
    )
    assert not VOLATILE.search(text), VOLATILE.search(text)
    assert "smoke mode" not in text  # smoke-mode numbers mean nothing
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert path.stat().st_size < 300_000  # small images: reviewable diffs
