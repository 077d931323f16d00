"""README's "Try it" block, the Makefile, CI and scripts/dev.sh name the same commands, so none can go stale alone."""

import re
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def bash_blocks(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [
        [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]
        for block in blocks
    ]


def test_try_it_block_names_the_makefile_targets_and_ci_runs_the_same_script():
    readme = (REPO / "README.md").read_text()
    (try_it,) = bash_blocks(readme, "Try it")
    assert try_it == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        recipe = re.search(rf"^{target}:.*\n\t(.+)$", makefile, re.M)
        assert recipe and recipe.group(1).strip() == f"@bash scripts/dev.sh {target}", target
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci == ['exec bash "$(dirname "$0")/../scripts/dev.sh" test']


def test_dev_script_runs_the_readme_test_command_and_the_demo_prints_test_metrics():
    readme = (REPO / "README.md").read_text()
    (tests_block,) = bash_blocks(readme, "Tests")
    assert tests_block[-1] == "python -m pytest -q"
    script = (REPO / "scripts" / "dev.sh").read_text()
    assert 'test) exec "$python" -m pytest -q ;;' in script
    assert 'demo) exec "$bin/lyra-train" --output-dir runs/demo --overwrite-output-dir ;;' in script
    train_block = bash_blocks(readme, "Train")[0]
    assert train_block[0] == "lyra-train"  # the demo is the README's first training command
