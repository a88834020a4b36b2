"""A Dockerfile as stages of instructions, and .dockerignore as Docker applies it.

No Docker engine exists on the project's machines, so the image tests read the
Dockerfile the way BuildKit does (line continuations, comments, ARGs before the
first FROM, exec-form JSON) and decide which files reach the build context with
Docker's own .dockerignore rules (moby/patternmatcher: patterns in order, the last
match wins, ``!`` re-includes, a match on a folder covers what is inside it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    args: str  # the rest of the instruction, continuations joined
    line: int

    def flags(self) -> dict[str, str]:
        """``--from=builder --chown=1:1 src dst`` -> {"from": "builder", "chown": "1:1"}."""
        found = {}
        for word in shlex.split(self.args):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            found[name] = value
        return found

    def operands(self) -> list[str]:
        """The words after the flags (shell form), or the JSON array (exec form)."""
        if self.args.lstrip().startswith("["):
            parsed: list[str] = json.loads(self.args)
            return parsed
        words = shlex.split(self.args)
        return [word for i, word in enumerate(words) if not _is_leading_flag(words, i)]


def _is_leading_flag(words: list[str], index: int) -> bool:
    return all(word.startswith("--") for word in words[: index + 1])


@dataclass
class Stage:
    image: str  # ARGs declared before the first FROM substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV KEY=VALUE pairs in this stage (later ones win)."""
        return self._pairs("ENV")

    def labels(self) -> dict[str, str]:
        return self._pairs("LABEL")

    def build_args(self) -> dict[str, str]:
        """ARG NAME=DEFAULT declarations in this stage."""
        return self._pairs("ARG")

    def _pairs(self, keyword: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all(keyword):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their first line number: continuations joined, comments dropped."""
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        # A comment or blank line inside a continued instruction is skipped, as BuildKit does.
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        result.append((start, " ".join(pending)))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = instruction.operands()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(_substitute(words[0], global_args), name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {number}: only ARG may precede FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


# --- .dockerignore ------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus ``**`` (any number of folders), as Docker reads it."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : zero or more folders
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    exclusion: bool  # False for a "!pattern" that takes files back in

    def may_take_back_inside(self, folder: str) -> bool:
        """Whether this "!pattern" could re-include a file under ``folder``."""
        prefix = re.split(r"[*?\[]", self.pattern, maxsplit=1)[0]
        return prefix.startswith(folder + "/") or (folder + "/").startswith(prefix)


def parse_dockerignore(path: Path) -> list[IgnoreRule]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = not line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        rules.append(IgnoreRule(pattern, _pattern_regex(pattern), exclusion))
    return rules


def is_ignored(relative_path: str, rules: list[IgnoreRule]) -> bool:
    """Whether Docker leaves ``relative_path`` (posix, from the context root) out."""
    parts = PurePosixPath(relative_path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in candidates):
            ignored = rule.exclusion
    return ignored


def build_context(root: Path, rules: list[IgnoreRule]) -> list[str]:
    """Every file of ``root`` that reaches the build context, as relative posix paths.

    Like Docker, it does not walk an ignored folder that no "!pattern" reaches into
    (.git, .venv), so the answer comes at once.
    """
    exceptions = [rule for rule in rules if not rule.exclusion]
    files = []
    for folder, subfolders, names in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        subfolders[:] = sorted(
            sub
            for sub in subfolders
            if not is_ignored(prefix + sub, rules)
            or any(rule.may_take_back_inside(prefix + sub) for rule in exceptions)
        )
        files += [prefix + name for name in names if not is_ignored(prefix + name, rules)]
    return sorted(files)
