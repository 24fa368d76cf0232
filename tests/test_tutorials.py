"""Every notebook under tutorials/ runs top to bottom without error.

The tests set `KERASMTL_TUTORIAL_SMOKE=1`: a notebook reads it to train for a
few steps on small data (the numbers it prints are then not meaningful), so the
default suite stays fast. Run a notebook by hand (or `make tutorials`) for the
real figures.
"""

from __future__ import annotations

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
