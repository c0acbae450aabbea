"""The README's promises: two set-up commands first, and CI runs the same test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands_run_the_product_and_test() -> None:
    assert readme_commands() == ["./dev.sh demo", "./dev.sh test"]


def test_ci_runs_the_readme_test_command_unchanged() -> None:
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert readme_commands()[1] in ci
