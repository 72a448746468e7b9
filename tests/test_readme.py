"""The README's examples stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_engine_example_runs_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    section = README.read_text().split("## The workflow engine from Python", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    first, second = result.stdout.splitlines()
    assert first == "338350"
    assert re.fullmatch(r"square: 100 items, \d+/s, p99 \d+\.\d\d ms", second)


def test_the_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")
