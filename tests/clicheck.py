"""What every bad-input test asserts about a failed ``edgetl`` command (README, "Exit codes").

Exit code in the documented set, exactly one ``Error:`` line naming the fix, no
traceback, nothing on stdout. Tests of what a command must not leave behind
(no run folder, no ``.tflite``) check that themselves, next to the call.
"""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result
from edgetl.cli.main import main

EDGETL_EXIT_CODES = {
    1,
    2,
    3,
    4,
}  # 1 parity gate failed; 2 option or config value; 3 data, run folder, model, missing extra or I/O; 4 parity inconclusive under --inconclusive fail (README)


def run(*args: Any) -> Result:
    """``edgetl ARGS`` in-process, with stderr kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args])


def fails(result: Result, code: int) -> str:
    """The one error line of a failed command (without ``Error: ``), after checking the contract."""
    assert code in EDGETL_EXIT_CODES
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.stdout == "", result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0][len("Error: ") :]
