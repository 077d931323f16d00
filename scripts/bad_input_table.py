"""Print the rows of BENCHMARKS.md's "Bad inputs tried" table: each case of tests/test_bad_inputs.py run as its test
runs it, with its exit code and the last line it printed on stderr (temporary folders shortened to `…`).

    python scripts/bad_input_table.py                      # every case
    python scripts/bad_input_table.py train-one-class ...  # the named cases
"""

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("TQDM_DISABLE", "1")

import test_bad_inputs as bad_inputs
from accelerate.state import AcceleratorState


def main(names: list[str]) -> None:
    root = Path(tempfile.mkdtemp())
    finished = root / "finished"
    flags = [
        *bad_inputs.TINY,
        "--max-train-samples",
        "200",
        "--max-eval-samples",
        "50",
        "--output-dir",
        str(finished),
        "--quiet",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert bad_inputs.train_command.main(flags) == 0
    for case in bad_inputs.CASES:
        if names and case.name not in names:
            continue
        AcceleratorState._reset_state(reset_partial_state=True)
        folder = root / case.name
        run, work = shutil.copytree(finished, folder / "run"), folder / "work"
        work.mkdir()
        os.chdir(work)
        flags = case.setup(work, run)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = bad_inputs.COMMANDS[case.command](flags)
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code
        while bad_inputs.HELD_LOCKS:
            os.close(bad_inputs.HELD_LOCKS.pop())
        line = [line for line in stderr.getvalue().splitlines() if line.strip()][-1]
        print(f"| `{case.name}` | {code} | {line.replace(str(work) + '/', '…/').replace(str(folder), '…')} |")
    shutil.rmtree(root)


if __name__ == "__main__":
    main(sys.argv[1:])
