"""The command line: usage errors and bad input end in a short message and exit 2, never a traceback."""

from jaxadapt.cli import main


def test_usage_error_is_a_message_not_a_traceback(capsys):
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "Missing argument" in err and "Traceback" not in err


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("convert", "train", "export", "propagate", "tokenizer", "vocab", "data"):
        assert command in out
