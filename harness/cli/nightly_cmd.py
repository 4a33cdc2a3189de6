"""xenrig nightly run|merge|list: the scenario matrix as a CI job.

`run` runs the matrix (or `--shard I/N` of it) into `--out`, one run folder
per cell and shard-I-of-N.json; unsharded, it also writes the night's
index.html, junit.xml and nightly.json.  `merge` joins shards' folders into
those.  Exit codes: 0 every cell passed (some perhaps on a retry: FLAKY),
1 a product failure, 2 infrastructure failures or missing cells only.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from pathlib import Path

from harness import nightly, paths
from harness.errors import UsageError

from harness.nightly import shard as sharding
from harness.nightly.merge import EXIT_CODES, outcome_of, summary_markdown

def register(sub) -> None:
    p = sub.add_parser("nightly", help="run the scenario matrix (or a shard of it), merge shards into one report",
                       description=__doc__.split("\n\n", 1)[1])
    actions = p.add_subparsers(dest="nightly_action", metavar="ACTION")
    actions.required = True

    default_matrix = paths.repo_root() / "configs" / "nightly.yaml"
    r = actions.add_parser("run", help="run the matrix's cells (all, or one shard) into an output folder")
    r.add_argument("--matrix", type=Path, default=default_matrix, help="matrix file (default: configs/nightly.yaml)")
    r.add_argument("--shard", type=sharding.parse, default=sharding.WHOLE, metavar="I/N",
                   help="run shard I of N (1-based, e.g. $CI_NODE_INDEX/$CI_NODE_TOTAL); default 1/1, the whole matrix")
    r.add_argument("--out", type=Path, default=None, help="output folder (default: runs/nightly)")
    r.add_argument("--host", type=Path, help="host config for every cell (default: the matrix's, else each scenario's)")
    r.add_argument("--retries", type=int, choices=range(0, 4), metavar="N",
                   help="retries of an infrastructure failure (default: the matrix's, 1)")
    r.add_argument("--history", type=Path, nargs="+", default=[], metavar="DIR",
                   help="earlier nights' output folders (or a folder of them) for the trend; unsharded runs only")
    r.add_argument("--cold", action="store_true",
                   help="boot every cell from nothing (xenrig run --cold) instead of restoring the stack's snapshot")
    r.add_argument("--cell-command", metavar="CMD",
                   help="the command that runs one scenario, given 'run SCENARIO --run-dir DIR --set ...' "
                        f"(default: '{Path(sys.executable).name} -m harness'); for wrappers")
    r.set_defaults(handler=handle_run)

    m = actions.add_parser("merge", help="join shards' output folders into one report (index.html, junit.xml, nightly.json)")
    m.add_argument("folders", type=Path, nargs="+", metavar="DIR", help="shards' output folders (or folders of them)")
    m.add_argument("--out", type=Path, help="where the report goes (default: the first DIR)")
    m.add_argument("--history", type=Path, nargs="+", default=[], metavar="DIR",
                   help="earlier nights' output folders (or a folder of them) for the trend")
    m.set_defaults(handler=handle_merge)

    ls = actions.add_parser("list", help="list the matrix's cells, their shard and the --set that makes each")
    ls.add_argument("--matrix", type=Path, default=default_matrix, help="matrix file (default: configs/nightly.yaml)")
    ls.add_argument("--shard", type=sharding.parse, default=sharding.WHOLE, metavar="I/N", help="only this shard's cells")
    ls.set_defaults(handler=handle_list)

def _progress(text: str) -> None:
    print(f"xenrig nightly: {text}", file=sys.stderr, flush=True)

def _counts_line(counts: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no cells"

def handle_run(args) -> int:
    matrix = nightly.load_matrix(args.matrix)
    out = args.out or paths.runs_dir() / "nightly"
    history = nightly.load_history(args.history, out) if args.history else []   # a typo fails now, not at dawn
    if history and args.shard.total != 1:
        raise UsageError("--history goes with an unsharded run, or with 'xenrig nightly merge'")
    command = shlex.split(args.cell_command) if args.cell_command else None
    runner = nightly.SubprocessCellRunner(host=args.host or matrix.spec.host, timeout_s=matrix.spec.cell_timeout_s,
                                          command=command, cold=args.cold)
    _progress(f"matrix {args.matrix} ({matrix.digest}): {len(matrix.cells)} cells, {len(matrix.excluded)} excluded; "
              f"shard {args.shard} runs {len(args.shard.pick(matrix.cells))}")
    summary, night = nightly.run(matrix, args.shard, out, runner, retries=args.retries, history=history,
                                 progress=_progress)
    if night is not None:
        return _report_night(night, out)
    counts = Counter(c["status"] for c in json.loads(summary.read_text())["cells"])
    outcome = outcome_of(counts)
    print(f"xenrig nightly: shard {args.shard}: {outcome}: {_counts_line(dict(counts))}; summary: {summary}; "
          "join the shards with 'xenrig nightly merge'")
    return EXIT_CODES[outcome]

def _report_night(night: dict, out: Path) -> int:
    sys.stdout.write(summary_markdown(night))
    for w in night["warnings"]:
        _progress(f"warning: {w}")
    print(f"xenrig nightly: {night['outcome']}: {_counts_line(night['counts'])}; index: {out / 'index.html'}")
    return EXIT_CODES[night["outcome"]]

def handle_merge(args) -> int:
    out = args.out or args.folders[0]
    history = nightly.load_history(args.history, out) if args.history else []
    return _report_night(nightly.merge_folders(args.folders, out, history), out)

def handle_list(args) -> int:
    matrix = nightly.load_matrix(args.matrix)
    ids = [c.id for c in matrix.cells]
    root = paths.repo_root()
    for cell in args.shard.pick(matrix.cells):
        where = cell.scenario_path.relative_to(root) if cell.scenario_path.is_relative_to(root) else cell.scenario_path
        sets = " ".join(f"--set {shlex.quote(s)}" for s in cell.sets)
        print(f"{cell.id}\tshard {sharding.shard_of(cell.id, ids, args.shard.total)}/{args.shard.total}\t{where} {sets}")
    if args.shard.total == 1:
        for ex in matrix.excluded:
            print(f"{ex['id']}\texcluded\t{ex['reason']}")
    return 0
