#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are on PATH: the dashboard's browser tests
# (`make test`) and the README's screenshots (scripts/screenshots.py) drive them.
#
# Installed: nothing to do. Missing and root on Debian/Ubuntu: installs Debian's
# `chromium` and `chromium-driver` packages with apt-get. Otherwise: says what to
# install and exits 1 (the browser tests cannot run without them).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "ensure_chromium: chromium and chromedriver are not on PATH; the dashboard's browser" \
        "tests need them. Install Debian's packages as root:" \
        "apt-get update && apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium and chromedriver are not on PATH and this system has no" \
        "apt-get; install Chromium and the chromedriver of the same version, on PATH" >&2
    exit 1
fi
echo "ensure_chromium: installing Debian's chromium and chromium-driver (browser tests) ..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
command -v chromium >/dev/null && command -v chromedriver >/dev/null
