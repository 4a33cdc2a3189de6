"""The one outcome vocabulary: what a run's results add up to, and the exit
code that says it.  Used by `xenrig run`, repro, the nightly and the plugin.

| exit | outcome  | meaning                                                        | a nightly  |
|------|----------|----------------------------------------------------------------|------------|
| 0    | PASS     | every check passed (or SKIP: nothing applied, nothing failed)  | -          |
| 1    | FAIL     | the subject is proven wrong (stands even if the run errs later)| files a bug|
| 2    | ERROR    | the harness's infrastructure failed: no verdict                | retries    |
| 3    | internal | a bug in xenrig itself (traceback in the run folder)           | retries    |
| 4    | usage    | a usage, configuration, patch or compile error                 | never      |

Precedence: a proven FAIL outranks any ERROR that came with or after it
(the report says both: "FAIL; then the run errored: ...").  One exception:
when the stack is shown to have corrupted data (a damaged canary, a digest
mismatch), nothing the run saw can be trusted, a FAIL included: ERROR.
"""

from __future__ import annotations

PASS, FAIL, ERROR, SKIP = "PASS", "FAIL", "ERROR", "SKIP"

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2, 3, 4
EXIT_CODES = {PASS: EXIT_PASS, SKIP: EXIT_PASS, FAIL: EXIT_FAIL, ERROR: EXIT_ERROR}

# Error kinds (XenrigError.kind) that say the input was wrong, not the
# machine: deterministic, so retrying cannot help.
USAGE_KINDS = frozenset({"config", "usage", "patch", "build"})
CORRUPTION = "corruption"
INTERNAL = "internal"     # harness.errors.InternalError.kind


def overall(outcomes: list[str], corrupted: bool = False) -> str:
    """What a run's check outcomes add up to; no outcome at all is an ERROR,
    never a PASS."""
    found = set(outcomes)
    if not found or corrupted:
        return ERROR
    if FAIL in found:
        return FAIL
    if ERROR in found:
        return ERROR
    if found == {SKIP}:
        return SKIP
    return PASS


def exit_code(outcome: str, error_kind: str | None = None) -> int:
    """The process's exit code for a run that ended with `outcome` and, if it
    errored, an error of `error_kind`; the error's kind only matters when
    nothing proved a FAIL first."""
    if outcome == FAIL:
        return EXIT_FAIL
    if error_kind == INTERNAL:
        return EXIT_INTERNAL
    if outcome == ERROR and error_kind in USAGE_KINDS:
        return EXIT_USAGE
    return EXIT_CODES.get(outcome, EXIT_ERROR)


def headline(outcome: str, error_text: str | None) -> str:
    """The verdict word and, when a FAIL stands over a later error, both."""
    if outcome == FAIL and error_text:
        return f"FAIL; then the run errored: {error_text}"
    return outcome
