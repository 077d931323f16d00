#!/usr/bin/env bash
# Set up an environment for lyra-hf and run the demo or the tests: `make demo`, `make test` (and CI) call this.
#
#   bash scripts/dev.sh demo   # lyra-train on the built-in synthetic landscape; ends with the test Spearman
#   bash scripts/dev.sh test   # the test extra, then the README's test command
#
# The environment is the active virtual environment, else .venv in the repository (created when missing). torch is
# installed first, pinned: a torch already installed that the project accepts is kept; on a machine without a GPU a
# CPU-only build is taken where one is reachable; otherwise the package index's default build (with CUDA libraries,
# about 2.5 GB) is announced in one line and installed. A second run reinstalls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
job=${1:-}
case "$job" in
    demo) extras="" ;;
    test) extras="[test]" ;;
    *) echo "usage: bash scripts/dev.sh demo|test" >&2; exit 2 ;;
esac

say() { echo "lyra-hf setup: $*" >&2; }

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
else
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv"
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    python=.venv/bin/python
fi
pip=("$python" -m pip install --quiet)

# The torch the project accepts (pyproject.toml: torch>=2.6,<2.14).
torch_ok() {
    "$python" - <<'EOF' 2>/dev/null
import sys
import torch
major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (2, 6) <= (major, minor) < (2, 14) else 1)
EOF
}

# The version pip would install for torch==$TORCH_VERSION with the given extra options ("" when it cannot resolve).
torch_candidate() {
    "$python" -m pip install --quiet --dry-run --no-deps --ignore-installed --report - "$@" "torch==$TORCH_VERSION" 2>/dev/null \
        | "$python" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' 2>/dev/null || true
}

if torch_ok; then
    :
elif command -v nvidia-smi >/dev/null 2>&1; then
    say "installing torch $TORCH_VERSION (the default build, with CUDA, for this machine's GPU)"
    "${pip[@]}" "torch==$TORCH_VERSION"
elif [[ "$(torch_candidate)" == *+cpu ]]; then
    say "installing torch $TORCH_VERSION, CPU build"
    "${pip[@]}" "torch==$TORCH_VERSION"
elif [[ "$(torch_candidate --index-url "$TORCH_CPU_INDEX" --timeout 15 --retries 0)" == *+cpu ]]; then
    say "installing torch $TORCH_VERSION, CPU build, from PyTorch's CPU index"
    "${pip[@]}" --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"
else
    say "no CPU-only torch $TORCH_VERSION is reachable: installing the package index's default build, which includes CUDA libraries (about 2.5 GB)"
    "${pip[@]}" "torch==$TORCH_VERSION"
fi

# The project (editable), once per checkout and version of pyproject.toml; the test extra once more.
prefix="$("$python" -c 'import sys; print(sys.prefix)')"
want="$(sha256sum pyproject.toml | cut -c1-16) $(pwd)"
stamp="$prefix/.lyra-hf-installed${extras:+-test}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('lyra_hf') is None)"; then
    say "installing lyra-hf$extras"
    "${pip[@]}" -e ".$extras"
    echo "$want" > "$stamp"
    echo "$want" > "$prefix/.lyra-hf-installed"  # the test extra includes the base install
fi

bin="$(dirname "$python")"
case "$job" in
    demo) exec "$bin/lyra-train" --output-dir runs/demo --overwrite-output-dir ;;
    test) exec "$python" -m pytest -q ;;
esac
