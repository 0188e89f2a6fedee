#!/usr/bin/env bash
# Install the Debian packages the kit uses, when we can (root): bubblewrap for the grader's sandbox, chromium for
# the browser tests, postgresql for lesson 06's team server; or only those named as arguments. Without root, say what
# will be skipped.
set -euo pipefail
if [ $# -gt 0 ]; then packages=("$@"); else packages=(bubblewrap chromium postgresql); fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "NOTE: not root, so not installing ${missing[*]}: without bubblewrap the grader runs student code unsandboxed (and says so); the tests that need them are skipped (pytest -ra lists why)."
fi
