"""Print one of the README's commands, exactly as written there, so that CI runs what a newcomer runs.

    python3 .ci/readme_commands.py main   # the install-and-run command
    python3 .ci/readme_commands.py test   # the test command

A command is the fenced ```bash block right after an HTML comment `<!-- readme-command: NAME -->`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-command: (?P<name>[\w-]+) -->\s*```bash\n(?P<body>.*?)```", re.S)


def readme_commands(readme: Path = README) -> dict[str, str]:
    """Every marked command of the README, by name."""
    return {m["name"]: m["body"].strip() for m in BLOCK.finditer(readme.read_text(encoding="utf-8"))}


def main(argv: list[str]) -> int:
    commands = readme_commands()
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: readme_commands.py {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    print(commands[argv[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
