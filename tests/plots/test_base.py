import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from pyro_vae.plots import base

REPO = Path(__file__).resolve().parents[2]
PLOTS = REPO / "pyro_vae" / "plots"


def test_image_grid_tiles_rows_and_columns():
    images = torch.arange(6).float().repeat_interleave(784).reshape(6, 784)
    grid = base.image_grid(images, 2, 3)
    assert grid.shape == (56, 84)
    assert grid[0, 0] == 0 and grid[0, 28] == 1 and grid[28, 0] == 3 and grid[55, 83] == 5


def test_save_figure_makes_the_folders_and_returns_the_path(tmp_path):
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    path = base.save_figure(fig, tmp_path / "a" / "b" / "f.png")
    assert path == tmp_path / "a" / "b" / "f.png" and path.stat().st_size > 1000
    assert base.save_figure(fig, tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")  # no PNG options passed on


@pytest.mark.slow
def test_the_figure_modules_use_no_pyplot():
    """Importing every figure module, drawing a figure and saving it leaves pyplot unimported
    (no global figure state, no backend switched)."""
    script = (
        "import sys, tempfile, torch\n"
        "import pyro_vae.plots.base, pyro_vae.plots.images, pyro_vae.plots.latent, pyro_vae.plots.latent_3d\n"
        "import pyro_vae.plots.over_training, pyro_vae.plots.study, pyro_vae.workflow.figures\n"
        "fig = pyro_vae.plots.study.plot_amortization_gap({'approximation_gap': 1.0, 'amortization_gap': 2.0})\n"
        "pyro_vae.plots.base.save_figure(fig, __import__('pathlib').Path(tempfile.mkdtemp()) / 'g.png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr


def _package_imports(path: Path) -> set[str]:
    """The ``pyro_vae`` modules a file of ``pyro_vae/plots`` imports, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            package = ["pyro_vae", "plots"][: 3 - node.level]  # level 1: pyro_vae.plots, level 2: pyro_vae
            if node.module:
                found.add(".".join(package + [node.module]))
            else:
                found.update(".".join(package + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module.split(".")[0] == "pyro_vae"}


def test_figure_modules_import_only_models_and_base():
    """The layering: pyro_vae.plots may import pyro_vae.models (and infer), never workflow; the
    figure modules share pyro_vae.plots.base and import no other sibling, so there is no cycle."""
    for path in PLOTS.glob("*.py"):
        for module in _package_imports(path):
            allowed = module.startswith(("pyro_vae.models", "pyro_vae.infer")) or (
                module == "pyro_vae.plots.base" and path.name != "base.py")
            assert allowed, f"{path.name} imports {module}"
        text = path.read_text()
        assert "matplotlib.pyplot" not in text and "matplotlib.use" not in text, path.name


def test_scatter_digits_colours_match_the_colour_bar():
    import numpy as np
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    from pyro_vae.plots.base import digit_colorbar, scatter_digits

    fig = Figure()
    ax = fig.subplots()
    labels = np.array([3, 0, 3, 9])
    scatter_digits(ax, np.arange(4.0), np.arange(4.0), labels, size=2, alpha=0.5)
    bar = digit_colorbar(fig, ax, labels)
    lines = ax.get_lines()
    assert [len(line.get_xdata()) for line in lines] == [1, 2, 1]  # digits 0, 3, 9
    for line, digit in zip(lines, (0, 3, 9)):
        assert to_rgba(line.get_color())[:3] == bar.mappable.to_rgba(digit)[:3]
    assert bar.mappable.to_rgba(3)[:3] != bar.mappable.to_rgba(4)[:3]


def test_points_without_labels_are_grey_and_get_a_note_not_a_digit_colour_bar():
    import numpy as np
    from matplotlib.colors import to_rgba

    from pyro_vae.models.nets import UNLABELLED
    from pyro_vae.plots.base import UNLABELLED_COLOUR, digit_colorbar, scatter_digits

    fig = Figure()
    ax = fig.subplots()
    labels = np.full(5, UNLABELLED)
    scatter_digits(ax, np.arange(5.0), np.arange(5.0), labels, size=2, alpha=0.5)
    (line,) = ax.get_lines()
    assert to_rgba(line.get_color()) == to_rgba(UNLABELLED_COLOUR)
    assert digit_colorbar(fig, ax, labels) is None and len(fig.axes) == 1  # no colour bar axes added
    assert any("no labels" in text.get_text() for text in fig.texts)
