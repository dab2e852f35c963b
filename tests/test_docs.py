"""The docs keep up with the code: every hook documented and tested, every variable listed."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from restyle._plugin import hookspecs as _hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name, fn in vars(_hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, "restyle_spec")
)


def test_there_are_hooks() -> None:
    assert HOOKS == ["register_encoders", "register_experts", "register_marketplaces",
                     "register_synthesizers"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    params = ", ".join(inspect.signature(getattr(_hookspecs, hook)).parameters)
    assert f"### `{hook}({params})`" in guide


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    tests = (ROOT / "tests" / "test_plugins.py").read_text()
    assert re.search(rf"^def test_hook_{hook}\b", tests, re.M), f"no test_hook_{hook}"


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    names = set(re.findall(r"\"((?:RESTYLE|EBAY|GEMINI|GOOGLE|OPENAI|HF|XDG)_[A-Z_]+)\"", source))
    names = {n for n in names if not re.fullmatch(r"EBAY_[A-Z]{2}", n)}  # site ids, not variables
    assert len(names) > 15
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in reference)
    assert not missing, f"undocumented environment variables: {missing}"


def test_every_engine_option_is_in_the_configuration_reference() -> None:
    from restyle import Engine

    reference = (ROOT / "docs" / "configuration.md").read_text()
    options = list(inspect.signature(Engine).parameters)
    missing = [o for o in options if f"| `{o}` |" not in reference]
    assert not missing, f"undocumented Engine options: {missing}"


def test_doc_links_point_at_existing_pages() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_the_plugin_guide_says_what_a_plugin_may_rely_on() -> None:
    from restyle import Context, Photo
    from restyle.synthesizers.consensus import ATTRIBUTES

    guide = (ROOT / "docs" / "plugins.md").read_text()
    section = guide.split("## What your plugin may rely on", 1)[1].split("\n## ", 1)[0]
    context_members = [n for n in vars(Context) if not n.startswith("_")]
    context_members += [f.name for f in dataclasses.fields(Context)
                         if not f.name.startswith("_")]
    for member in context_members:
        assert f"`{member}" in section, f"Context.{member} is not in the plugin guide"
    photo_members = [n for n in (*Photo.__slots__, *vars(Photo))
                     if not n.startswith("_") and n not in {
                         "info", "encoded", "embedding", "known_embedding",
                         # what Encoder.photo_vector uses to compute a photo's vector once
                         "keep_vector", "vector_to_compute", "vector_failed"}]
    for member in photo_members:
        assert f"`{member}" in section, f"Photo.{member} is not in the plugin guide"
    for facet in ("brand", "category", *ATTRIBUTES):
        assert f"`{facet}`" in section, f"facet {facet} is not in the plugin guide"
    for topic in ("thread-safe", "deadline", "busy", "relaxation step", "PluginContractError"):
        assert topic in section


def _shape(text: str) -> list[str]:
    """The lines of a report with every figure (and every "-" standing for one)
    masked, and runs of spaces made one: its labels, columns and rows."""
    masked = []
    for line in text.strip().splitlines():
        words = re.sub(r"\d+(\.\d+)?%?", "N", line).split()
        masked.append(" ".join("N" if word == "-" else word for word in words))
    return masked


def test_the_pricing_guide_prints_what_its_backtest_command_prints(
    tiny_model_spec: str, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from restyle.cli import main

    guide = (ROOT / "docs" / "pricing.md").read_text()
    section = guide.split("<!-- backtest-sample", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section)
    printed = re.search(r"```text\n(.+?)```", section, re.S)
    assert command and printed
    assert command.group(1) == "RESTYLE_MODEL=local-dir:TINY restyle backtest --catalog CATALOG"
    assert "tiny test model" in section  # the guide says which model made its figures
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    argv = [str(catalog_copy) if word == "CATALOG" else word
            for word in command.group(1).split()[2:]]
    assert main([*argv, "--no-plugins"]) == 0
    out = capsys.readouterr().out.replace(str(catalog_copy), "CATALOG")
    assert _shape(out) == _shape(printed.group(1))
    assert _shape("  priced  12 (100%)  0-2  -") == ["priced N (N) N-N N"]


# -- docs/getting-started.md, run ---------------------------------------------------------

GETTING_STARTED = ROOT / "docs" / "getting-started.md"
# Written on the line before a code block the docs test must not run, with why.
SKIP_MARK = re.compile(r"<!-- docs test: skip \((needs network|needs cloud accounts)\) -->")


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    language: str
    code: str
    line: int
    skip: str | None


def code_blocks(page: Path) -> list[CodeBlock]:
    """The fenced code blocks of ``page`` that name a language, with their skip marks."""
    lines = page.read_text().splitlines()
    blocks = []
    start = None
    for number, line in enumerate(lines):
        if start is None and re.fullmatch(r"```\w+", line):
            start = number
        elif start is not None and line == "```":
            before = next((text for text in reversed(lines[:start]) if text.strip()), "")
            mark = SKIP_MARK.fullmatch(before.strip())
            blocks.append(CodeBlock(lines[start][3:], "\n".join(lines[start + 1 : number]),
                                    start + 1, mark.group(1) if mark else None))
            start = None
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    """Each command of a shell block as words, comments dropped, continuations joined."""
    joined = code.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def run_restyle(words: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run one documented ``restyle`` command in this process, with ``<`` and ``>``."""
    from restyle.cli import main

    assert words[0] == "restyle", (
        f"the docs test runs restyle commands only: {' '.join(words)!r}; mark its block "
        "'<!-- docs test: skip (needs network) -->' if it cannot run here")
    argv: list[str] = []
    stdin = stdout = None
    rest = iter(words[1:])
    for word in rest:
        if word == "<":
            stdin = next(rest)
        elif word == ">":
            stdout = next(rest)
        else:
            argv.append(word)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(stdin).read_bytes())))
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"{' '.join(words)} exited {code}: {err}"
    if "--json" in argv:  # one JSON document, or JSON Lines
        try:
            json.loads(out)
        except ValueError:
            assert all(json.loads(line) for line in out.splitlines())
    if stdout is not None:
        Path(stdout).write_text(out)
    return argv


def test_getting_started_runs_end_to_end(
    tiny_model_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every shell and Python block of the page, in order, offline, with the tiny
    model and the sample catalog; blocks that need the network or a cloud account
    are marked and skipped, and nothing else is."""
    blocks = code_blocks(GETTING_STARTED)
    assert {block.language for block in blocks} == {"sh", "python"}
    assert all(block.skip == "needs network" for block in blocks if "pip install" in block.code)
    (tmp_path / "examples").mkdir()
    shutil.copytree(ROOT / "examples" / "catalog", tmp_path / "examples" / "catalog")
    shutil.copy(ROOT / "examples" / "photo.jpg", tmp_path / "examples" / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    monkeypatch.setenv("RESTYLE_CATALOG", str(tmp_path / "catalog"))

    commands: list[list[str]] = []
    python_blocks = 0
    session: dict[str, object] = {"__name__": "getting_started"}  # one reader, one session
    for block in blocks:
        if block.skip is not None:
            continue
        if block.language == "sh":
            commands += [run_restyle(words, monkeypatch, capsys)
                         for words in shell_commands(block.code)]
        else:
            code = compile(block.code, f"{GETTING_STARTED.name}:{block.line}", "exec")
            exec(code, session)
            python_blocks += 1

    ran = [" ".join(argv) for argv in commands]
    for core in ("catalog build examples/catalog/listings.jsonl",
                 "analyze examples/photo.jpg", "analyze examples/photo.jpg --json",
                 "analyze examples/catalog/images --json", "analyze - --json"):
        assert core in ran, f"getting-started no longer runs {core!r}"
    assert python_blocks >= 2
    analyses = (tmp_path / "analyses.jsonl").read_text().splitlines()
    assert [json.loads(line)["photo"] for line in analyses] == [
        f"examples/catalog/images/{name}"
        for name in sorted(os.listdir(ROOT / "examples" / "catalog" / "images"))]
