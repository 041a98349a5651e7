"""Child process of test_fuzz.py: runs many `caffessd` command lines
in-process (one interpreter, so hundreds of runs stay fast) under the
address-space limit its parent set, and prints one JSON result per run.

Usage: python tests/fuzz_worker.py < runs.json   ([{"argv": [...], "out": DIR, "watch": [DIR, ...]}, ...])
"watch" (optional): folders in which, apart from OUT, no file may appear, change or vanish.
"""
import io
import json
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def run_one(argv):
    from caffessd.cli import main

    err, out = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stderr(err), redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what would have been a traceback on the user's screen
            traceback.print_exc(file=err)
            code = "escaped"
    return code, err.getvalue()


def files(folder):
    """{path: (size, mtime)} of every file under `folder` (links not followed)."""
    found = {}
    for path in Path(folder).rglob("*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink():
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


def main():
    for run in json.load(sys.stdin):
        # "watch": folders (inputs, the work area) where nothing may appear, change or vanish.
        watched = [files(folder) for folder in run.get("watch", [])]
        code, err = run_one(run["argv"])
        out = Path(run["out"])
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []
        changed = []
        for folder, before in zip(run.get("watch", []), watched):
            after = files(folder)
            changed += sorted(path for path in set(before) | set(after)
                              if before.get(path) != after.get(path) and not path.startswith(run["out"]))
        print(json.dumps({"argv": run["argv"], "code": code, "stderr": err, "left": left, "changed": changed}),
              flush=True)


if __name__ == "__main__":
    main()
