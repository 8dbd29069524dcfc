"""Malformed data files are rejected with file:line, and the stage that reads them writes nothing.

Each case corrupts one line of a copy of the project's data (in a tmp dir) and runs ``valuedrift
prepare-data`` on it. "A statement that does not match its stance slot" means, for the response bank, a
row whose ``stance`` is not one of support/neutral/oppose or that sits in another topic's file (or answers
a test-split question); for the annotations, a misnamed or extra stance key, or one statement filling two
slots.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from valuedrift import cli
from valuedrift.core.errors import DataError
from valuedrift.stages import prepare_data

from .conftest import DATA, ROOT

PARAMS = ROOT / "params.yaml"
QUESTIONS = "v_prism/v_prism.jsonl"
ANNOTATIONS = "v_prism/annotations/abortion.jsonl"
BANK = "response_bank/abortion.jsonl"
GENERAL = "sft/general_instructions.jsonl"


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def rewrite_line(path: Path, lineno: int, fn: Callable[[dict[str, Any]], Any]) -> None:
    """Replace line ``lineno`` (1-based) by fn(parsed object): a dict is re-serialised, a str/bytes written as is."""
    raw = path.read_bytes().split(b"\n")
    new = fn(json.loads(raw[lineno - 1]))
    raw[lineno - 1] = json.dumps(new).encode() if isinstance(new, dict) else (new if isinstance(new, bytes) else new.encode())
    path.write_bytes(b"\n".join(raw))


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda r: {k: v for k, v in r.items() if k != key}


def with_(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda r: {**r, **changes}


def renamed(old: str, new: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda r: {(new if k == old else k): v for k, v in r.items()}


def copy_of_line(data: Path, rel: str, lineno: int) -> Callable[[dict[str, Any]], str]:
    return lambda r: lines(data / rel)[lineno - 1]


# case id -> (corrupt(data dir) -> (file, line or None), fragment the message must contain)
CASES: dict[str, tuple[Callable[[Path], tuple[str, int | None]], str]] = {}


def case(name: str, fragment: str):
    def register(fn: Callable[[Path], tuple[str, int | None]]):
        CASES[name] = (fn, fragment)
        return fn

    return register


@case("bad JSON", "invalid JSON")
def _(d: Path):
    rewrite_line(d / QUESTIONS, 5, lambda r: '{"id": 4, "topic": ')
    return QUESTIONS, 5


@case("not an object", "expected a JSON object")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 2, lambda r: "[1, 2, 3]")
    return ANNOTATIONS, 2


@case("not UTF-8", "not valid UTF-8")
def _(d: Path):
    rewrite_line(d / GENERAL, 3, lambda r: json.dumps(r).replace("a", "\u00e9", 1).encode("latin-1", "replace"))
    return GENERAL, 3


@case("missing field", "missing field 'proposition'")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 3, without("proposition"))
    return ANNOTATIONS, 3


@case("wrong type (id as text)", "field 'id' must be int")
def _(d: Path):
    rewrite_line(d / BANK, 2, lambda r: {**r, "id": str(r["id"])})
    return BANK, 2


@case("wrong type (statement as list)", "field 'support' must be str")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 4, lambda r: {**r, "support": [r["support"]]})
    return ANNOTATIONS, 4


@case("blank text", "must not be empty")
def _(d: Path):
    rewrite_line(d / GENERAL, 7, with_(response="   "))
    return GENERAL, 7


@case("empty file", "file is empty")
def _(d: Path):
    (d / GENERAL).write_text("\n\n")
    return GENERAL, None


@case("duplicate question id", "duplicate id")
def _(d: Path):
    rewrite_line(d / QUESTIONS, 7, copy_of_line(d, QUESTIONS, 6))
    return QUESTIONS, 7


@case("duplicate general-instruction id", "duplicate id")
def _(d: Path):
    rewrite_line(d / GENERAL, 9, copy_of_line(d, GENERAL, 8))
    return GENERAL, 9


@case("duplicate bank answer", "duplicate answer")
def _(d: Path):
    rewrite_line(d / BANK, 5, copy_of_line(d, BANK, 4))
    return BANK, 5


@case("unknown topic", "unknown topic 'Astrology'")
def _(d: Path):
    rewrite_line(d / QUESTIONS, 10, with_(topic="Astrology"))
    return QUESTIONS, 10


@case("unknown split", "must be dev or test")
def _(d: Path):
    rewrite_line(d / QUESTIONS, 11, with_(split="train"))
    return QUESTIONS, 11


@case("bank stance not one of the three", "must be one of support, neutral, oppose")
def _(d: Path):
    rewrite_line(d / BANK, 6, with_(stance="agree"))
    return BANK, 6


@case("bank row in another topic's file", "not 'abortion'")
def _(d: Path):
    rewrite_line(d / BANK, 3, with_(id=50))  # 50 is a climate question
    return BANK, 3


@case("bank answer to a held-out (test-split) question", "dev-split answers only")
def _(d: Path):
    rel = "response_bank/religion.jsonl"
    rewrite_line(d / rel, 1, with_(id=290))  # religion 275-299 is the test split
    return rel, 1


@case("misnamed stance key in an annotation", "missing field 'oppose'")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 8, renamed("oppose", "opose"))
    return ANNOTATIONS, 8


@case("extra stance key in an annotation", "unknown field(s) ['strongly_support']")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 9, lambda r: {**r, "strongly_support": r["support"] + " Absolutely."})
    return ANNOTATIONS, 9


@case("one statement in two stance slots", "must differ")
def _(d: Path):
    rewrite_line(d / ANNOTATIONS, 12, lambda r: {**r, "oppose": r["support"]})
    return ANNOTATIONS, 12


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data_pristine") / "data"
    shutil.copytree(DATA, d)
    return d


@pytest.fixture()
def data_copy(pristine, tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    return d


def test_the_shipped_data_passes(data_copy, tmp_path):
    prepare_data.main(["--params", str(PARAMS), "--data", str(data_copy), "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in (tmp_path / "out" / "sft").iterdir())


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_data_is_rejected_with_file_line_and_nothing_is_written(name, data_copy, tmp_path, capsys):
    corrupt, fragment = CASES[name]
    rel, line = corrupt(data_copy)
    where = f"{data_copy / rel}:{line}:" if line is not None else f"{data_copy / rel}:"
    out = tmp_path / "out"

    with pytest.raises(DataError) as e:
        prepare_data.main(["--params", str(PARAMS), "--data", str(data_copy), "--out", str(out)])
    assert str(e.value).startswith(where), f"{name}: {e.value}"
    assert fragment in str(e.value), f"{name}: {e.value}"
    assert not out.exists(), "prepare-data left output behind"

    assert cli.main(["prepare-data", "--params", str(PARAMS), "--data", str(data_copy), "--out", str(out)]) == 2
    assert where in capsys.readouterr().err
    assert not out.exists()


def test_bad_data_in_an_existing_output_folder_leaves_the_old_outputs_untouched(data_copy, tmp_path):
    out = tmp_path / "out"
    prepare_data.main(["--params", str(PARAMS), "--data", str(data_copy), "--out", str(out)])
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    rewrite_line(data_copy / BANK, 6, with_(stance="agree"))
    with pytest.raises(DataError):
        prepare_data.main(["--params", str(PARAMS), "--data", str(data_copy), "--out", str(out)])
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
