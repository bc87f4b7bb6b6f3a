"""Every notebook runs top to bottom (quick setting: $CI is set for the kernel) without an error."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.mnist


def test_the_walkthroughs_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_2d_latent", "02_3d_latent", "03_correlated_prior",
                                           "04_amortized_vs_meanfield", "05_labels", "06_scores_and_codes",
                                           "07_likelihoods"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_notebook_executes(path: Path, data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("PYRO_VAE_DATA", str(data_dir))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the quick runs' folders
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("quick setting" in o.get("text", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1
