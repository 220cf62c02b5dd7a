#!/usr/bin/env bash
# What the portal's browser tests need (make test runs this first): Debian's
# chromium and chromium-driver (headless Chromium and its WebDriver; no
# browser download from elsewhere), installed with apt-get when missing and
# this runs as root (or with sudo), and axe-core from dev/package-lock.json
# (dev/bootstrap.sh installs it). Fails loudly, naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bootstrap-browser: $*" >&2; exit 1; }

if ! command -v chromium > /dev/null 2>&1 || ! command -v chromedriver > /dev/null 2>&1; then
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2> /dev/null || die "chromium and chromedriver are missing and this user cannot install them: run 'sudo apt-get install chromium chromium-driver'"
    as_root=(sudo -n)
  fi
  command -v apt-get > /dev/null 2>&1 || die "chromium and chromedriver are missing and there is no apt-get: install Chromium and its matching ChromeDriver"
  echo "bootstrap-browser: installing Debian's chromium and chromium-driver"
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > .local-apt.log 2>&1; then
    "${as_root[@]}" apt-get update -q > /dev/null 2>&1 || true
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > .local-apt.log 2>&1 ||
      { cat .local-apt.log >&2; die "apt-get could not install chromium and chromium-driver (see above)"; }
  fi
  rm -f .local-apt.log
fi
browser=$(chromium --version 2> /dev/null | grep -oE '[0-9]+' | head -1) || true
driver=$(chromedriver --version 2> /dev/null | grep -oE '[0-9]+' | head -1) || true
[ -n "$browser" ] || die "chromium does not start ('chromium --version' failed)"
[ -n "$driver" ] || die "chromedriver does not start ('chromedriver --version' failed)"
[ "$browser" = "$driver" ] || die "chromium $browser and chromedriver $driver differ: install both from the same Debian release"
[ -f dev/node_modules/axe-core/axe.min.js ] || die "axe-core is missing from dev/node_modules (dev/bootstrap.sh installs dev/package-lock.json)"
