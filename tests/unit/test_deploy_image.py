"""The Dockerfile and its build context, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What WeasyPrint (disclosure PDFs) loads at run time, as Debian names the packages.
WEASYPRINT_LIBRARIES = ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0")


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            result.append([])
        result[-1].append(instruction)
    return result


def test_multi_stage_with_a_slim_runtime() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    runtime = all_stages[-1]
    assert re.match(r"FROM python:[\d.]+-slim", runtime[0]), runtime[0]
    # The runtime stage takes the built environment, not the sources or a compiler.
    assert any(i.startswith("COPY --from=build ") for i in runtime)
    assert not any(re.match(r"COPY (?!--from)", i) for i in runtime)


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = [i.split(None, 1)[1] for i in stages()[-1] if i.upper().startswith("USER ")]
    assert users, "the runtime stage never switches user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_runtime_has_the_system_libraries_weasyprint_needs() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.lower().startswith("weasyprint") for d in dependencies)
    installs = " ".join(i for i in stages()[-1] if "apt-get install" in i)
    for package in WEASYPRINT_LIBRARIES:
        assert re.search(rf"(^|\s){re.escape(package)}(\s|$)", installs), f"{package} is not installed in the runtime stage"
    assert "--no-install-recommends" in installs
    assert "rm -rf /var/lib/apt/lists" in installs


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

    def included(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; "!" re-includes.
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern[1:] if negated else pattern
            if fnmatch.fnmatch(path, body) or fnmatch.fnmatch(path.split("/")[0], body):
                keep = negated
        return keep

    sources = [
        i.split()[1] for stage in stages() for i in stage if i.startswith("COPY ") and not i.startswith("COPY --from")
    ]
    for source in sources:
        assert included(source.rstrip("/")), f"{source} is copied but excluded by .dockerignore"
    # Every package the project installs is copied.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:
        assert any(fnmatch.fnmatch(s.rstrip("/"), package) for s in sources), f"{package} is not copied into the build"
    for private in (".venv", ".git", "var", "tests", ".env"):
        assert not included(private), f"{private} would be sent to the Docker daemon"
