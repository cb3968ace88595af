"""The documentation cannot rot: its commands run, its references are current.

Convention for shell blocks in ``docs/**/*.md`` and ``plugins/*/README.md``:

- A fenced block marked ```` ```bash test ```` is run by this file. Each of its lines
  (``\\`` continues a line; blank lines and ``#`` comments are skipped) must be a
  ``pctkit ...`` command; it runs in this process through the Typer app, in a scratch
  directory shared by every block of the same page (so ``pctkit recipes copy`` in one
  block feeds ``pctkit validate`` in the next), and must exit with 0.
- A ``pctkit run`` command gets ``tiny_run.TINY_QUICKSTART`` appended: ``--set``
  overrides that shrink the quickstart's data and iterations to seconds. The docs show
  the real command; the test checks that it parses, validates and runs end to end. A
  page may therefore only run recipes built on digit scenes in a tested block.
- A block that needs what a test machine lacks (a dataset, GPUs, the network, a
  ``pip install``) is marked ```` ```bash untested ````. A plain ```` ```bash ```` block is
  an error: every shell block states whether it is tested.
- Program output is shown in ```` ```text ```` blocks, which are not run.

The generated files (``schema/recipe.schema.json``, ``docs/reference/*.md``) must match
what ``scripts/gen_docs.py`` writes from the code now; run it after changing the recipe
schema, a built-in component or the CLI.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from tiny_run import TINY_QUICKSTART, set_options
from typer.testing import CliRunner

from pctkit import registry
from pctkit.cli.main import app

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([*(REPO / "docs").rglob("*.md"), *(REPO / "plugins").glob("*/README.md")])
SHELLS = {"bash", "sh", "shell", "console", "zsh"}


@dataclass
class Block:
    """A fenced code block of a Markdown page."""

    page: Path
    line: int
    info: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, with its info string (``bash test``)."""
    blocks: list[Block] = []
    opening: tuple[int, str, str] | None = None  # line, fence, info
    body: list[str] = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        fence = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if opening is None and fence:
            opening, body = (number, fence.group(1), fence.group(2).strip()), []
        elif (
            opening is not None
            and fence
            and fence.group(1).startswith(opening[1])
            and not fence.group(2).strip()
        ):
            blocks.append(Block(page, opening[0], opening[2], "\n".join(body)))
            opening = None
        elif opening is not None:
            body.append(line)
    return blocks


def commands(block: Block) -> list[list[str]]:
    """The commands of a tested block, as argument lists."""
    joined = re.sub(r"\\\n", " ", block.text)
    lines = [line.strip() for line in joined.splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def test_every_shell_block_says_whether_it_is_tested() -> None:
    unmarked = [
        f"{block.where}: ```{block.info}"
        for page in PAGES
        for block in fenced_blocks(page)
        if block.info.split()[:1] and block.info.split()[0] in SHELLS
        if block.info not in ("bash test", "bash untested")
    ]
    assert not unmarked, "mark each shell block `bash test` or `bash untested`:\n" + "\n".join(unmarked)


def test_every_tested_command_is_a_pctkit_command() -> None:
    tested = [block for page in PAGES for block in fenced_blocks(page) if block.info == "bash test"]
    assert tested, "no block of the docs is marked `bash test`"
    for block in tested:
        for command in commands(block):
            assert command[0] == "pctkit", f"{block.where}: only pctkit commands run in tests, got {command}"


TESTED_PAGES = [page for page in PAGES if any(block.info == "bash test" for block in fenced_blocks(page))]


@pytest.mark.parametrize("page", TESTED_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_commands_of_the_page_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    text = page.read_text(encoding="utf-8")
    if "stair_cnn" in text or "pyramid_sum" in text:
        request.getfixturevalue("example_plugin")
    monkeypatch.chdir(tmp_path)
    registry.reset()
    for block in fenced_blocks(page):
        if block.info != "bash test":
            continue
        for command in commands(block):
            arguments = command[1:]
            if arguments[:1] == ["run"]:
                arguments += set_options(TINY_QUICKSTART)
            result = CliRunner().invoke(app, arguments, env={"COLUMNS": "120"})
            assert result.exit_code == 0, (
                f"{block.where}: `{shlex.join(command)}` exited with {result.exit_code}\n"
                f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
            )


def test_relative_links_lead_somewhere() -> None:
    broken = []
    for page in [*PAGES, REPO / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


# --------------------------------------------------------------------------- generated files


def load_gen_docs() -> ModuleType:
    """``scripts/gen_docs.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_references_and_schema_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    status = load_gen_docs().main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_pctkit_schema_writes_the_published_schema(tmp_path: Path) -> None:
    # The published schema describes pctkit alone, as on a machine without plugins.
    registry.reset(builtin_only=True)
    try:
        result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path / "recipe.schema.json")])
    finally:
        registry.reset()
    assert result.exit_code == 0
    written = (tmp_path / "recipe.schema.json").read_text(encoding="utf-8")
    assert written == (REPO / "schema" / "recipe.schema.json").read_text(encoding="utf-8")


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    gen_docs = load_gen_docs()
    for relative, text in gen_docs.generate().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    assert gen_docs.stale_files(tmp_path) == []
    reference = tmp_path / gen_docs.RECIPE_REFERENCE
    reference.write_text(reference.read_text(encoding="utf-8").replace("| `seed` |", "| `sead` |"))
    assert gen_docs.stale_files(tmp_path) == [gen_docs.RECIPE_REFERENCE]
