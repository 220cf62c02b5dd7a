#!/usr/bin/env bash
# Installs what the demo and the tests need, and fails loudly on what it
# cannot install: the Python virtual environment (.venv) with the pinned
# emulator and IaC packages of dev/requirements.txt, rebuilt when that file
# changes. Cargo builds are done by the Makefile.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bootstrap: $*" >&2; exit 1; }
need() { command -v "$1" > /dev/null 2>&1 || die "required tool '$1' is missing ($2)"; }

need cargo "install Rust with rustup"
need python3 "install Python 3.10 or newer"
need curl "apt-get install curl"
need setsid "apt-get install util-linux"
need sha256sum "apt-get install coreutils"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || die "Python 3.10 or newer is required (found $(python3 --version))"
python3 -c 'import venv, ensurepip' 2> /dev/null || die "Python's venv module is missing (apt-get install python3-venv)"

want=$(sha256sum dev/requirements.txt | cut -d' ' -f1)
stamp=.venv/.requirements.sha256
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "bootstrap: creating .venv with the pinned packages of dev/requirements.txt"
rm -rf .venv
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r dev/requirements.txt || die "pip could not install dev/requirements.txt"
for tool in moto_server cargo-lambda cfn-lint checkov scim2-server; do
  [ -x ".venv/bin/$tool" ] || die "$tool is missing from .venv after installing"
done
echo "$want" > "$stamp"
