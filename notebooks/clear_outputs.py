"""The notebooks are committed without outputs or execution counts; this drops them:

    python -m notebooks.clear_outputs notebooks/*.ipynb
"""
import sys

import nbformat


def clear_outputs(paths):
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
                cell.metadata.pop("execution", None)
        nbformat.write(notebook, path)
        print("cleared {}".format(path))


def main(argv=None):
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    clear_outputs(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
