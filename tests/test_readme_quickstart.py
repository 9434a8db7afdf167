"""The README's front door: the quick start a new user follows, and the commands table."""

from __future__ import annotations

import re

from app.cli import main as cli
from tests.deploy_helpers import ROOT

README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    """From `heading` to the next heading of its level or above (code blocks skipped)."""
    level = len(heading.split()[0])
    lines = README.splitlines()
    start = lines.index(heading)
    fenced = False
    for end in range(start + 1, len(lines)):
        fenced ^= lines[end].startswith("```")
        marks = lines[end].split(" ", 1)[0]
        if not fenced and marks and set(marks) == {"#"} and len(marks) <= level:
            break
    else:
        end = len(lines)
    return "\n".join(lines[start:end])


def test_the_quick_start_sets_a_key_and_reads_the_message_back_with_it() -> None:
    quick = section("## Quick start")
    (key,) = set(re.findall(r"API_KEYS=(\S+) make run", quick))
    read = [line for line in quick.splitlines() if "/api/v1/messages/" in line]
    assert read and all(f"Authorization: Bearer {key}" in line for line in read)
    # The id read back is one the quick start posted.
    posted = re.findall(r'id_sms="(\d+)"', quick)
    assert re.search(r"/api/v1/messages/(\d+)", read[0]).group(1) in posted  # type: ignore[union-attr]


def test_the_quick_start_links_to_the_walkthrough_which_warns_about_its_env() -> None:
    assert "](#try-it-on-one-machine)" in section("## Quick start")
    walkthrough = section("### Try it on one machine")
    assert "cat > .env" in walkthrough
    assert "stays behind" in walkthrough and "make clean" in walkthrough


def test_every_command_in_the_table_exists() -> None:
    table = section("## Commands")
    named = set(re.findall(r"^\| `targetsms-receiver ([a-z][a-z-]*)", table, flags=re.MULTILINE))
    assert named <= set(cli.commands), named - set(cli.commands)
    assert "| `targetsms-receiver --version` |" in table
