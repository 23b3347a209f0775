#!/usr/bin/env bash
# The bundled example end to end, in a scratch Git repository (your clone stays untouched):
# steps -> run (twice, the second from the step cache) -> convert -> commit -> check, then package
# into an image and export it as a Kubeflow pipeline if a Docker engine answers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d -t dsops-quickstart-XXXX)}"
mkdir -p "$work" && cd "$work"
git init -q . 2>/dev/null || true
git config user.name >/dev/null || git config user.name "dsops quickstart"
git config user.email >/dev/null || git config user.email "quickstart@dsops.invalid"
cp "$here/wine.ipynb" .
printf '[tool.dsops]\noutput = "pipelines"\nnotebooks = ["*.ipynb"]\n' > pyproject.toml
printf 'outputs/\n' > .gitignore   # run folders go to .dsops/, which ignores itself
git add -A && git commit -qm "wine notebook" || true

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step dsops steps wine.ipynb
step dsops run wine.ipynb -p alpha 0.5 --cache
step dsops run wine.ipynb -p alpha 0.5 --cache   # unchanged steps restored from .dsops/cache
step dsops steps wine.ipynb -p alpha 0.5         # now fresh
step dsops runs wine.ipynb                       # both runs, newest first
step dsops convert wine.ipynb
step python pipelines/wine/wine.py --alpha 0.5
step dsops commit wine.ipynb
step dsops versions wine.ipynb
step dsops check
if python3 -c "import docker; docker.from_env().ping()" 2>/dev/null; then
  step dsops package wine.ipynb --smoke
  step dsops export wine.ipynb --to kfp
else
  printf '\n(no Docker engine reachable: skipping `dsops package`; see README "Images")\n'
fi
printf '\nDone. Everything is in %s\n' "$work"
