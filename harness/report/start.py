"""One phrase on how a run's stack came up, for the summary and the HTML."""

from __future__ import annotations


def start_line(snap: dict) -> str:
    """How the stack came up (harness.booted), in one phrase for a person."""
    if snap.get("restored"):
        return (f"restored {snap.get('name')} in {snap.get('restore_s')}s "
                f"(first guest command {snap.get('restore_to_guest_cmd_s')}s after the restore began)")
    if snap.get("made"):
        return f"booted, and saved as {snap.get('name')} ({snap.get('size_bytes', 0) / 2**20:.0f} MiB) for the next run"
    if snap.get("mode") == "cold":
        return "booted cold (--cold: no snapshot restored or saved)"
    if snap.get("save_error"):
        return f"booted; the snapshot could not be saved: {snap['save_error']}"
    return ""


def retry_line(retried: dict) -> str:
    """The run made once more after its guest died outside every module
    (harness.runner), in one phrase; '' when it was not."""
    if not retried:
        return ""
    return (f"second attempt: the first ({retried.get('first_outcome')}, kept in {retried.get('first_attempt')}/) "
            f"lost its guest outside every module: {retried.get('reason')}")
