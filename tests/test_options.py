"""The hyperparameter options of `charrnn train`, `orchestrator submit` and `orchestrator sweep`,
and the value types of sweep files, all come from Config's fields: walked here field by field,
and for a Config with fields it does not have yet. Pure (no Redis): Click's test runner."""

from __future__ import annotations

import dataclasses
import typing

import click
import pytest
from click.testing import CliRunner

from charrnn.cli import cli as charrnn_cli
from charrnn.config import Config, hp
from charrnn.errors import ConfigError
from charrnn.options import FieldType, coerce, config_options, fields, given
from orchestrator import sweeps
from orchestrator.cli import cli as orchestrator_cli


def commands():
    """(command, whether comma grids are accepted, flag renames) for the three commands."""
    return [
        (charrnn_cli.commands["train"], False, {}),
        (orchestrator_cli.commands["submit"], False, {}),
        (orchestrator_cli.commands["sweep"], True, {"seed": "--model-seed"}),
    ]


def base_type(kind):
    return next((a for a in typing.get_args(kind) if a is not type(None)), kind)


@pytest.mark.parametrize("command, grid, renamed", commands())
def test_every_config_field_is_an_option_of_every_command(command, grid, renamed):
    params = {p.name: p for p in command.params}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        p = params[f.name]
        assert isinstance(p, click.Option) and isinstance(p.type, FieldType), f.name
        assert p.type.field.base is base_type(hints[f.name]), f.name
        assert p.type.field.choices == f.metadata["choices"], f.name
        assert p.type.grid is grid and p.default is None, f.name
        assert renamed.get(f.name, "--" + f.name.replace("_", "-")) in p.opts, (f.name, p.opts)
        assert set(f.metadata["aliases"]) <= set(p.opts), f.name


def test_every_config_field_is_in_the_sweep_file_schema():
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        for part in ("fixed", "grid", "random"):
            props = sweeps.SCHEMA["properties"][part]
            props = props["properties"]["space"] if part == "random" else props
            assert (
                f.name in props["properties"] and f.name.replace("_", "-") in props["properties"]
            ), (part, f.name)
        value = sweeps.SCHEMA["properties"]["fixed"]["properties"][f.name]
        if f.metadata["choices"]:
            assert set(f.metadata["choices"]) <= set(value["enum"])
        else:
            assert ("number" in value["type"]) == (base_type(hints[f.name]) in (int, float))


@pytest.mark.parametrize("command", ["submit", "sweep"])
def test_help_shows_type_and_default(command):
    out = CliRunner().invoke(orchestrator_cli, [command, "--help"]).output
    assert "--hidden-size INTEGER" in out and "default: 128" in out
    assert "[float64|float32]" in out and "VALUE" not in out and "charrnn's" not in out


@dataclasses.dataclass(frozen=True)
class Wider(Config):
    """Fields another branch is adding, of every kind: the generator needs no edit for them."""

    cell: str = hp("rnn", "the recurrent cell", choices=("rnn", "lstm", "gru"))
    batch_size: int | None = hp(None, "windows per step", low=1, high=4096)
    beta1: float = hp(0.9, "Adam's first moment decay", low=0, high=1, low_open=True)
    warmup: float | None = hp(None, "warm-up fraction", low=0, high=1)
    nesterov: bool = hp(False, "Nesterov momentum")


def probe(cls, grid=False):
    @click.command()
    @config_options(cls, grid=grid)
    def cmd(**kw):
        click.echo(repr(given(kw, cls)))

    return cmd


def test_new_fields_of_every_kind_become_options_and_sweep_keys():
    cmd = probe(Wider)
    names = {p.name for p in cmd.params}
    assert {f.name for f in dataclasses.fields(Wider)} == names
    r = CliRunner().invoke(
        cmd,
        [
            "--cell",
            "lstm",
            "--batch-size",
            "32",
            "--beta1",
            "0.8",
            "--warmup",
            "0.1",
            "--lr",
            "0.05",
            "--nesterov",
            "yes",
        ],
    )
    assert r.exit_code == 0, r.output
    assert eval(r.output) == {
        "learning_rate": 0.05,
        "cell": "lstm",
        "batch_size": 32,
        "beta1": 0.8,
        "warmup": 0.1,
        "nesterov": True,
    }
    assert CliRunner().invoke(cmd, []).output.strip() == "{}"  # nothing given: None
    bad = CliRunner().invoke(cmd, ["--cell", "tcn"])
    assert bad.exit_code == 2 and "rnn, lstm, gru" in bad.output
    assert CliRunner().invoke(cmd, ["--batch-size", "1.5"]).exit_code == 2
    out = CliRunner().invoke(cmd, ["--help"]).output
    assert "--cell [rnn|lstm|gru]" in out and "default: rnn" in out
    assert "--batch-size INTEGER" in out and "--warmup FLOAT" in out
    grid = CliRunner().invoke(probe(Wider, grid=True), ["--cell", "rnn,lstm", "--beta1", "0.9"])
    assert eval(grid.output) == {"cell": ["rnn", "lstm"], "beta1": 0.9}
    schema = sweeps.schema(Wider)
    assert schema["properties"]["fixed"]["properties"]["cell"] == {"enum": ["rnn", "lstm", "gru"]}
    assert "null" in schema["properties"]["fixed"]["properties"]["batch-size"]["type"]
    assert "beta1" in schema["properties"]["grid"]["properties"]
    assert "boolean" in schema["properties"]["fixed"]["properties"]["nesterov"]["type"]


def test_one_converter_from_text_or_json_to_the_field_type():
    by = {f.name: f for f in fields()}
    assert coerce(by["hidden_size"], "64") == 64 and coerce(by["hidden_size"], 64.0) == 64
    assert coerce(by["learning_rate"], "1e-3") == 0.001 and coerce(by["iterations"], None) is None
    for f, v in (
        ("hidden_size", "1.5"),
        ("hidden_size", 1.5),
        ("hidden_size", True),
        ("learning_rate", "fast"),
        ("dtype", "float16"),
        ("dtype", 3),
    ):
        with pytest.raises(ConfigError, match="--" + f.replace("_", "-")):
            coerce(by[f], v)


def test_submit_refuses_a_comma_list_and_says_where_grids_go():
    r = CliRunner().invoke(orchestrator_cli, ["submit", "--corpus", "x", "--hidden-size", "8,16"])
    assert r.exit_code == 2 and "orchestrator sweep" in r.output
