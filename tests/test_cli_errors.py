"""The command line under user errors (issue 16, defect 10: list, schema, describe).

User errors print one line (``relaxit: error: ...``) and exit 2, as argparse does; unknown
names get a did-you-mean; an unwritable output is checked before any work.
"""

from __future__ import annotations

import pytest

import relaxit


def _cli(capsys, *argv):
    from relaxit.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_unknown_family_is_an_error_with_did_you_mean(capsys):
    """Defect 10: `relaxit list --family gaussian` printed an empty table with exit 0."""
    rc, out, err = _cli(capsys, "list", "--family", "gaussian")
    assert rc == 2 and not out and err.count("\n") == 1 and "unknown family 'gaussian'" in err
    rc, _, err = _cli(capsys, "list", "--family", "categorial")
    assert rc == 2 and "did you mean 'categorical'?" in err
    rc, out, _ = _cli(capsys, "list", "--family", "subset")
    assert rc == 0 and "gumbel_topk" in out


def test_cli_unwritable_schema_output_is_checked_before_any_work(capsys, tmp_path, monkeypatch):
    """Defect 10: `relaxit schema -o /unwritable/x` printed a traceback."""
    def no_work():
        raise AssertionError("the schema was built before checking the output")

    monkeypatch.setattr(relaxit, "schema", no_work)
    for target in (tmp_path / "no_such_dir" / "x.json", tmp_path):
        rc, out, err = _cli(capsys, "schema", "-o", str(target))
        assert rc == 2 and not out and err.count("\n") == 1 and err.startswith("relaxit: error: cannot write")
    assert not (tmp_path / "no_such_dir").exists()


def test_cli_unknown_names_get_did_you_mean(capsys):
    rc, _, err = _cli(capsys, "describe", "gumbel_sofmax")
    assert rc == 2 and "Did you mean 'gumbel_softmax'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        _cli(capsys, "descrbe", "gumbel_softmax")
    assert exit_.value.code == 2 and "did you mean 'describe'?" in capsys.readouterr().err
