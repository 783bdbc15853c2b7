"""What a run achieved and whether it is healthy: a Markdown report with plots and a JSON of its numbers.

    python report.py snapshots/GTA2Cityscapes_multi --out report
    python report.py runs/seed1 runs/seed2 runs/seed3 --baseline runs/source_only --oracle runs/oracle --out report

Snapshots not scored yet are scored first (with the cache evaluation shares), when the target's
labels are where the run read them. The baseline is a ``--source-only`` run; the oracle for
Cityscapes is ``--source cityscapes --source-only`` (trained on Cityscapes' own labels).
README: Reading a run.
"""
import argparse
import os
import sys

from utils.report import ReportError, command_of, write_report
from utils.report.plots import MatplotlibMissing


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="snapshot directories of training runs")
    parser.add_argument("--baseline", "--source-only", dest="baseline", metavar="DIR",
                        help="a --source-only run: the gap table's baseline")
    parser.add_argument("--oracle", metavar="DIR", help="a run trained on the target's labels (for Cityscapes: "
                                                        "--source cityscapes --source-only)")
    parser.add_argument("--out", default="report", help="where report.md, report.json and the plots go")
    parser.add_argument("--snapshot", choices=("last", "best"), default="last",
                        help="the snapshot of each run the gap table compares (best is chosen on the scored set "
                             "itself, hence optimistic)")
    parser.add_argument("--no-score", action="store_true", help="report only snapshots already scored")
    parser.add_argument("--backend", choices=("auto", "inference", "dygraph"), default="auto",
                        help="how snapshots are scored, as evaluate_cityscapes.py's --backend (auto: Paddle Inference "
                             "on a CPU, the dynamic graph on a GPU)")
    parser.add_argument("--no-plots", action="store_true", help="no PNGs (and no matplotlib needed)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = get_arguments(argv)
    try:
        path = write_report(args.runs, args.out, args.baseline, args.oracle, args.snapshot, not args.no_score,
                            not args.no_plots, command=command_of(argv), backend=args.backend)
    except (ReportError, MatplotlibMissing) as exc:
        return "error: {}".format(exc)
    print("report: {}".format(os.path.abspath(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
