"""Execute every notebook here top to bottom and store it with its outputs.

    python notebooks/execute.py            # against runs/NAME (made first if missing)
    python notebooks/execute.py 04         # only the notebooks whose names start with 04
    CI=1 python notebooks/execute.py       # the quick setting (nothing is stored then)
"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pyro_vae.workflow.experiments import quick_requested

HERE = Path(__file__).resolve().parent


def main(prefixes: list[str]) -> int:
    for path in sorted(HERE.glob("*.ipynb")):
        if prefixes and not any(path.name.startswith(p) for p in prefixes):
            continue
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=None, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
        if not quick_requested():
            nbformat.write(notebook, path)
        print(f"executed {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
