"""Sweep files: YAML or JSON, checked against a JSON schema whose hyperparameter names and value
types are generated from `Config` (a new field is a new key, with no edit here), with corpus
paths kept under the file's folder. `sweeps` turns what is read into a spec."""

from __future__ import annotations

import difflib
import json
import os

from charrnn import Config
from charrnn.config import FIELDS, flag
from charrnn.options import Field, fields

from .errors import BadInput

SCHEDULERS = ("asha", "none")


def _value(f: Field) -> dict:
    """The JSON schema of one hyperparameter's value, from its Config field. Numbers may be
    strings: YAML 1.1 reads 1e-3 (no dot) as one; `_typed` parses them."""
    if f.choices:
        return {"enum": [*f.choices, *([None] if f.optional else [])]}
    kinds = {str: ["string"], bool: ["boolean", "string"]}.get(f.base, ["number", "string"])
    return {"type": kinds + (["null"] if f.optional else [])}


def schema(cls: type = Config) -> dict:
    """The schema of a sweep file, its hyperparameter names and value types read from cls's
    fields (each name spelled with _ or -)."""
    fs = [(spelling, f) for f in fields(cls) for spelling in {f.name, flag(f.name)}]

    def each(make) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: make(f) for name, f in fs},
        }

    pair = {"type": "array", "items": {"type": ["number", "string"]}, "minItems": 2, "maxItems": 2}
    distribution = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
        "properties": {"uniform": pair, "log_uniform": pair, "choice": {"type": "array"}},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "corpus": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ]
            },
            "fixed": each(_value),
            "grid": each(lambda f: {"type": "array", "items": _value(f), "minItems": 1}),
            "random": {
                "type": "object",
                "additionalProperties": False,
                "required": ["samples", "space"],
                "properties": {
                    "samples": {"type": "integer", "minimum": 1},
                    "seed": {"type": "integer", "minimum": 0},
                    "space": dict(each(lambda f: distribution), minProperties=1),
                },
            },
            "early_stop": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scheduler"],
                "properties": {
                    "scheduler": {"enum": list(SCHEDULERS)},
                    "rungs": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 1,
                    },
                    "grace_period": {"type": "integer", "minimum": 1},
                    "reduction_factor": {"type": "number", "exclusiveMinimum": 1},
                },
            },
            "checkpoint_every": {"type": "integer", "minimum": 1},
        },
    }


SCHEMA = schema()


MAX_FILE_BYTES = 1 << 20
"""A sweep or tune file is a page of YAML: a megabyte is far above any real one."""


def read_file(path: str, corpus_given: bool = False) -> dict:
    """A sweep file, YAML (.yaml/.yml) or JSON, checked against SCHEMA. Its corpus paths are
    relative to the file and must stay under the file's folder (unless corpus_given: the
    command line names the corpus instead)."""
    spec = parse(path)
    check_schema(spec, f"sweep file {path}")
    return localize_corpus(spec, path, corpus_given)


def parse(path: str) -> dict:
    """The mapping a sweep (or tune) file holds, unchecked: a regular file of at most
    MAX_FILE_BYTES (a FIFO would hang the command, /dev/zero never end), UTF-8, YAML or JSON."""
    from charrnn.archive import ArchiveError, open_regular

    try:
        f, size = open_regular(path)
        with f:
            if size > MAX_FILE_BYTES:
                raise BadInput(f"sweep file {path} is {size:,} bytes, above {MAX_FILE_BYTES:,}")
            raw = f.read(MAX_FILE_BYTES + 1).decode("utf-8")
    except OSError as e:
        raise BadInput(f"cannot read sweep file {path}: {e.strerror or e}") from None
    except ArchiveError as e:
        raise BadInput(f"cannot read sweep file {path}: it {e}") from None
    except UnicodeDecodeError:
        raise BadInput(f"sweep file {path} is not UTF-8 text") from None
    try:
        if path.lower().endswith((".yaml", ".yml")):
            import yaml

            spec = yaml.safe_load(raw)
        else:
            spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInput(f"sweep file {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except Exception as e:  # yaml.YAMLError and its subclasses
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(f"sweep file {path} is not valid YAML: {first}") from None
    if not isinstance(spec, dict):
        raise BadInput(
            f"sweep file {path}: expected a mapping at the top, got {type(spec).__name__}"
        )
    return spec


def localize_corpus(spec: dict, path: str, corpus_given: bool) -> dict:
    """The file's corpus paths resolved against its folder and confined to it, or dropped when
    the command line names the corpus."""
    if corpus_given:
        spec.pop("corpus", None)
    elif "corpus" in spec:
        paths = [spec["corpus"]] if isinstance(spec["corpus"], str) else spec["corpus"]
        spec["corpus"] = [_confined(c, path) for c in paths]
    return spec


def _confined(corpus: str, sweep_file: str) -> str:
    """A corpus path of a sweep file, resolved (symlinks too) relative to the file's folder;
    BadInput if it leads out of that folder (a shared sweep file must not upload /etc/passwd) or
    names a hidden file (nor the .env beside it)."""
    if corpus.startswith("builtin:"):
        return corpus
    here = os.path.realpath(os.path.dirname(os.path.abspath(sweep_file)))
    real = os.path.realpath(os.path.join(here, corpus))
    if os.path.commonpath([here, real]) != here:
        raise BadInput(
            f"sweep file {sweep_file}: corpus {corpus!r} is outside the file's folder "
            f"{here}; name it on the command line with --corpus instead"
        )
    if _hidden(corpus) or _hidden(os.path.relpath(real, here)):
        raise BadInput(
            f"sweep file {sweep_file}: corpus {corpus!r} is a hidden file (or in a hidden "
            f"folder), often a secret such as .env; name it on the command line with --corpus "
            f"if you mean it"
        )
    return real


def _hidden(path: str) -> bool:
    """A component starting with '.' (other than '.' and '..'), as written or resolved: a
    symlink `shown.txt -> .env` is hidden too."""
    return any(c.startswith(".") and c not in (".", "..") for c in path.split(os.sep))


def check_schema(spec: dict, where: str) -> None:
    """BadInput for the first thing wrong: an unknown hyperparameter with a hint, else the
    schema's best match."""
    import jsonschema

    for part in (
        spec.get("fixed"),
        spec.get("grid"),
        (spec.get("random") or {}).get("space") if isinstance(spec.get("random"), dict) else None,
    ):
        if isinstance(part, dict):
            for k in part:
                param_name(str(k), where)
    err = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(SCHEMA).iter_errors(spec)
    )
    if err is not None:
        at = ".".join(str(p) for p in err.absolute_path) or "the top level"
        raise BadInput(f"{where}: at {at}: {err.message}")


def param_name(raw: str, where: str = "") -> str:
    """A hyperparameter name as charrnn spells it (dashes accepted), or BadInput with a hint."""
    name = raw.strip().replace("-", "_")
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise BadInput(
            f"{where + ': ' if where else ''}unknown hyperparameter {raw.strip()!r}{hint}"
        )
    return name
