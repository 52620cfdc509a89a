"""The README and docs/ stay true: links resolve, commands exist, Python snippets run."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET_TIMEOUT = 600


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# --------------------------------------------------------------------------- markdown


def fenced_blocks(text: str):
    """(language, first line number, code) of every fenced code block."""
    blocks, lines = [], text.split("\n")
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        fence, language, start, body = match.group(2), match.group(3).lower(), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((language, start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


def prose(text: str) -> str:
    """The text outside fenced blocks, each block replaced by blank lines (line numbers kept)."""
    out, inside, fence = [], False, ""
    for line in text.split("\n"):
        match = re.match(r"^\s*(`{3,}|~{3,})", line)
        if match and (not inside or line.strip().startswith(fence)):
            inside, fence = not inside, match.group(1)
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def inline_code(text: str):
    """Contents of inline code spans (`...`, ``...``) in prose."""
    return [m.group(2).strip() for m in re.finditer(r"(`+)(.+?)\1", text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page.read_text()).split("\n"):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path):
    """(line number, target) of every markdown link, image and HTML src/href that is not a URL."""
    text = prose(page.read_text())
    text = re.sub(r"(`+).+?\1", lambda m: " " * len(m.group(0)), text)  # no links inside inline code
    patterns = [
        r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)",  # [text](target "title"), ![alt](src)
        r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)",  # [label]: target
        r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']",  # <img src=...>
    ]
    for pattern in patterns:
        for match in re.finditer(pattern, text, re.MULTILINE):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            yield text.count("\n", 0, match.start()) + 1, target


# --------------------------------------------------------------------------- links


def test_pages_exist():
    names = {page.name for page in PAGES}
    expected = {"README.md", "index.md", "data.md", "models.md", "training.md", "evaluation.md",
                "explanations.md", "export-and-serving.md", "web.md", "performance.md", "development.md"}
    assert expected <= names, sorted(expected - names)


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    broken = []
    for line, target in relative_links(page):
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{_name(page)}:{line}: {target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment.lower() not in anchors(resolved):
            broken.append(f"{_name(page)}:{line}: {target} (no heading #{fragment} in {resolved.name})")
    assert not broken, "\n".join(broken)


# --------------------------------------------------------------------------- commands


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


@pytest.fixture(scope="module")
def parser():
    from defax_keras.cli import build_parser

    return build_parser()


COMMAND_START = re.compile(
    r"(?:^|[\s(;&|`])(?:\$\s+)?(?:(?:\S*/)?defax(?=\s|$)|python3?\s+(scripts/\w+\.py))(.*)$"
)


def shown_commands(page: Path):
    """(line, words) of every `defax ...` / `python scripts/X.py ...` the page shows.

    Lines of shell code blocks (with backslash continuations joined) and inline
    code spans in prose count; a trailing comment, pipe or redirection ends a command.
    """
    text = page.read_text()
    candidates = []
    for language, start, code in fenced_blocks(text):
        if language in ("python", "py", "text", "json", "yaml"):
            continue
        joined = code.replace("\\\n", " ")
        line = start
        for raw in joined.split("\n"):
            candidates.append((line, raw))
            line += 1  # approximate after joined continuation lines
    for number, line in enumerate(prose(text).split("\n"), 1):
        for span in inline_code(line):
            if re.match(r"^(\$\s+)?(defax|python3?\s+scripts/)\s", span + " "):
                candidates.append((number, span))
    for line, raw in candidates:
        raw = raw.strip()
        match = COMMAND_START.search(raw)
        if not match or raw.startswith("#"):
            continue
        script, rest = match.group(1), match.group(2)
        rest = re.split(r"\s#|\s\|\s|\s>|\s&&\s|;", rest)[0]
        words = rest.split()
        if script:
            words = [Path(script).stem, *words]
        if words and words[0].startswith("_"):
            continue
        yield line, words


def check_command(parser, words: list[str]) -> list[str]:
    """What is wrong with `defax WORDS` (empty when it names real commands and options)."""
    problems, current, path = [], parser, ["defax"]
    root_options = _long_options(parser)
    positional = list(words)
    # leading global options: defax -v train ...
    while positional and positional[0].startswith("-"):
        option = positional.pop(0).split("=")[0]
        if option.startswith("--") and option not in root_options:
            problems.append(f"unknown option {option} of defax")
    # walk sub-commands: `defax data check ...`
    while True:
        children = _subparsers(current)
        if not children:
            break
        if not positional or positional[0] in ("...", "COMMAND"):
            break  # `defax data` on its own: a group, named as such
        word = positional.pop(0)
        if word not in children:
            problems.append(f"`{' '.join(path)} {word}`: no such command (choices: {', '.join(children)})")
            return problems
        current, path = children[word], [*path, word]
    known = _long_options(current) | root_options
    for word in positional:
        option = re.sub(r"[=\[\]].*$", "", word.lstrip("["))
        if option.startswith("--") and len(option) > 2 and option not in known:
            problems.append(f"`{' '.join(path)}` has no option {option}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_commands_shown_exist(page, parser):
    problems = []
    for line, words in shown_commands(page):
        for problem in check_command(parser, words):
            problems.append(f"{_name(page)}:{line}: {problem}")
    assert not problems, "\n".join(problems)


def test_command_check_sees_commands(parser):
    """The extraction finds the commands of the README's table and catches invented ones."""
    readme = list(shown_commands(ROOT / "README.md"))
    named = {words[0] for _, words in readme if words}
    assert {"data", "train", "evaluate", "explain", "export", "predict", "serve", "compare"} <= named
    assert check_command(parser, ["data", "check", "PATH", "--quick"]) == []
    assert check_command(parser, ["train", "--model", "defax", "--data", "PATH"]) == []
    assert check_command(parser, ["trian"]) and check_command(parser, ["data", "chek"])
    assert check_command(parser, ["train", "--epoch", "3"])
    assert check_command(parser, ["serve", "-m", "M", "--prot", "1"])


SCRIPT = re.compile(r"(?:^|\s)python3?\s+((?:docs|bench|scripts)/[\w/]+\.py)")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_scripts_shown_exist(page):
    missing = []
    for _language, start, code in fenced_blocks(page.read_text()):
        for match in SCRIPT.finditer(code):
            if not (ROOT / match.group(1)).is_file():
                missing.append(f"{_name(page)}:{start}: {match.group(1)}")
    for span in inline_code(prose(page.read_text())):
        for match in SCRIPT.finditer(span):
            if not (ROOT / match.group(1)).is_file():
                missing.append(f"{_name(page)}: {match.group(1)}")
    assert not missing, "\n".join(missing)


# --------------------------------------------------------------------------- Python snippets


def python_snippets():
    for page in PAGES:
        for language, start, code in fenced_blocks(page.read_text()):
            if language in ("python", "py", "python3"):
                yield pytest.param(page, code, id=f"{_name(page)}:{start}")


SNIPPETS = list(python_snippets())


def test_snippets_are_few():
    """Each snippet costs a process and a TensorFlow import in CI: keep them few."""
    assert 1 <= len(SNIPPETS) <= 10, len(SNIPPETS)


@pytest.mark.parametrize("page,code", SNIPPETS)
def test_python_snippet_runs(page, code, demo_root, tmp_path):
    # demo_root: the demo set generated once in this session's cache (DEFAX_CACHE),
    # which every snippet process inherits, so "demo" costs nothing after the first.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    assert env["DEFAX_CACHE"]
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT,
    )
    assert result.returncode == 0, f"{_name(page)}\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"


def test_make_targets_shown_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    missing = []
    for page in PAGES:
        for _language, start, code in fenced_blocks(page.read_text()):
            for match in re.finditer(r"^\s*make\s+([\w-]+)", code, re.MULTILINE):
                if match.group(1) not in targets:
                    missing.append(f"{_name(page)}:{start}: make {match.group(1)}")
    assert not missing, "\n".join(missing)


def test_shell_quoting_of_examples():
    """Every shell line with a `defax` command parses as shell words (no unbalanced quotes)."""
    for page in PAGES:
        for language, _start, code in fenced_blocks(page.read_text()):
            if language in ("bash", "sh", "shell", "console"):
                for line in code.replace("\\\n", " ").split("\n"):
                    if "defax " in line or "scripts/" in line:
                        shlex.split(line, comments=True)
