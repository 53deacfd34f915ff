"""The base class of every error caused by bad user input (files, keys, values).

The CLI prints these as one clear line and exits 2; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: the message names the file / key / value and what was expected."""
