"""The base class of every error caused by bad user input (files, keys, values), and of a failed check.

The CLI prints these as one clear line and exits 2 (bad input) or 1 (a check failed); anything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: the message names the file / key / value and what was expected."""


class CheckFailed(Exception):
    """A check the user asked for found a problem (`jaxadapt report --check`): the inputs were fine, the result not."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut at a word, for errors from libraries whose messages run to pages."""
    why = (str(e).strip().splitlines() or [""])[0]
    why = why if len(why) <= limit else why[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {why}"


# Exit statuses of a run that stopped early after saving a checkpoint (re-running the same command resumes it):
PREEMPTED = 75  # SIGTERM or a pod's preemption notice (EX_TEMPFAIL of sysexits.h: "try again later")
INTERRUPTED = 130  # SIGINT (Ctrl-C), as a shell reports a process killed by it


class Stopped(SystemExit):
    """A run stopped by a signal after saving its checkpoint. A SystemExit, so that every command that trains
    (`train`, and `calibrate` / `quickstart` in-process) exits with `code` instead of 0, and a watcher (babysit.sh,
    SLURM's requeue) tells "preempted, resume me" from "finished"."""
