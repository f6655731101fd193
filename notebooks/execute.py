#!/usr/bin/env python3
"""Run the notebook headless, the way Jupyter's "Run All" does, and export it to HTML.

    python3 notebooks/execute.py notebooks/audio_mnist.ipynb --out DIR [--cells N] [--allow-errors]

Writes DIR/<name>.ipynb (executed, with outputs) and DIR/<name>.html (nbconvert's HTML export).
The kernel starts in the notebook's folder, as in Jupyter, so `evcxr.toml` and the relative
`:dep` path apply. Settings reach the notebook through the environment (AUDIO_MNIST_DATA, ...).
`--cells N` runs only the first N code cells (the bad-input checks stop early anyway).
Exit status: 0 when every executed cell succeeded, 1 when one failed (the files are written
either way), 2 on usage errors.
"""
import argparse
import copy
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--cells", type=int, default=None, help="execute only the first N code cells")
    ap.add_argument("--allow-errors", action="store_true", help="go on after a failing cell")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell (the first builds Candle)")
    args = ap.parse_args()
    if not args.notebook.is_file():
        print(f"no notebook at {args.notebook}", file=sys.stderr)
        return 2
    nb = nbformat.read(args.notebook, as_version=4)
    if args.cells is not None:
        kept, seen = [], 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                if seen == args.cells:
                    break
                seen += 1
            kept.append(cell)
        nb.cells = kept
    client = NotebookClient(
        copy.deepcopy(nb),
        timeout=args.timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "rust"),
        allow_errors=args.allow_errors,
        resources={"metadata": {"path": str(args.notebook.parent.resolve())}},
    )
    started = time.time()
    status = 0
    try:
        executed = client.execute()
    except CellExecutionError as e:
        executed = client.nb
        status = 1
        print(f"a cell failed: {str(e).splitlines()[0] if str(e) else e}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.notebook.stem
    nbformat.write(executed, args.out / f"{stem}.ipynb")
    html, _ = HTMLExporter().from_notebook_node(executed)
    (args.out / f"{stem}.html").write_text(html, encoding="utf-8")
    print(f"executed in {time.time() - started:.0f} s -> {args.out / stem}.ipynb, .html")
    return status


if __name__ == "__main__":
    sys.exit(main())
