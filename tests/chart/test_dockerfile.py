"""deploy/Dockerfile, checked without a container engine: hadolint, then what the image
promises (pinned inputs, no compilers, a numeric non-root user, a read-only root
filesystem, two commands) read from the file itself.

Building it needs docker: `docker build -f deploy/Dockerfile -t kubellm:0.1.0 .` (README).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.chart import tools

ROOT = tools.ROOT
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

Instruction = tuple[str, str]  # (INSTRUCTION, its arguments on one line)


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    parsed: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        parsed.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return parsed


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


PARSED = instructions(DOCKERFILE.read_text())
BUILD, FINAL = stages(PARSED)


def copy_sources(stage: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for word, rest in stage:
        if word == "COPY":
            args = shlex.split(rest)
            if not any(a.startswith("--from") for a in args):
                sources.extend(a for a in args[:-1] if not a.startswith("--"))
    return sources


def test_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [hadolint, "--no-color", DOCKERFILE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_the_slim_python_311_base() -> None:
    (argument,) = [rest for word, rest in PARSED if word == "ARG"]
    assert argument == "PYTHON_IMAGE=python:3.11-slim"
    assert BUILD[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert FINAL[0] == ("FROM", "${PYTHON_IMAGE}")


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    ]
    sources = copy_sources(BUILD) + copy_sources(FINAL)
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert any(fnmatch.fnmatch(source, pattern) for pattern in allowed), (
            f"COPY {source}: excluded from the build context by .dockerignore"
        )
    # The package sources the image installs are all there is to the two commands.
    for script in SCRIPTS.values():
        package = script.split(".")[0]
        assert any(source.endswith(package) for source in sources), package


def test_dependencies_come_hash_pinned_from_the_lock_as_wheels() -> None:
    runs = " ".join(rest for word, rest in BUILD if word == "RUN")
    assert "--require-hashes" in runs
    assert "--only-binary=:all:" in runs
    assert "-r /tmp/requirements.lock" in runs
    assert "requirements.lock" in copy_sources(BUILD)
    # The project itself goes in without dependencies: only the lock decides versions.
    assert re.search(r"install --no-deps /tmp/wheels/kubellm-\*\.whl", runs)


def test_the_final_stage_installs_nothing_and_runs_as_a_numeric_user() -> None:
    words = [word for word, _ in FINAL]
    # No RUN at all: no package manager, no compiler, nothing fetched in the final image.
    assert "RUN" not in words
    copies = [rest for word, rest in FINAL if word == "COPY"]
    assert copies == ["--from=build /opt/kubellm /opt/kubellm"]
    (user,) = [rest for word, rest in FINAL if word == "USER"]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), f"USER {user}: not numeric"
    assert words.index("USER") > words.index("COPY")


def test_the_chart_runs_the_image_as_its_user() -> None:
    (user,) = [rest for word, rest in FINAL if word == "USER"]
    uid, gid = map(int, user.split(":"))
    values = yaml.safe_load((ROOT / "helm" / "kubellm" / "values.yaml").read_text())
    context = values["podSecurityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)


def test_read_only_root_filesystem() -> None:
    environment = " ".join(rest for word, rest in FINAL if word == "ENV")
    # No .pyc writes at run time, and $HOME is the one writable mount (/tmp).
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "HOME=/tmp" in environment


def test_one_image_two_commands() -> None:
    assert set(SCRIPTS) == {"kubellm-gateway", "kubellm-operator"}
    environment = " ".join(rest for word, rest in FINAL if word == "ENV")
    assert "PATH=/opt/kubellm/bin:$PATH" in environment
    (command,) = [rest for word, rest in FINAL if word == "CMD"]
    assert command == '["kubellm-gateway"]'
    assert "ENTRYPOINT" not in [word for word, _ in FINAL], "an ENTRYPOINT would hide the operator"
    deployments = (ROOT / "helm" / "kubellm" / "templates").rglob("deployment.yaml")
    commands = {
        match
        for path in deployments
        for match in re.findall(r"command: \[(\S+)\]", path.read_text())
    }
    assert commands == set(SCRIPTS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'FROM a AS b\nRUN x \\\n  && y\n# note\nCMD ["z"]\n',
            [("FROM", "a AS b"), ("RUN", "x && y"), ("CMD", '["z"]')],
        ),
        ("from a\ncopy --chown=1:1 a b c\n", [("FROM", "a"), ("COPY", "--chown=1:1 a b c")]),
    ],
)
def test_the_parser_itself(text: str, expected: list[Instruction]) -> None:
    assert instructions(text) == expected
