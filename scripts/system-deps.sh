#!/usr/bin/env bash
# Install the Debian packages the kit's tests use, when we can (root). Without root, say which tests will skip.
set -euo pipefail
packages=(bubblewrap chromium)
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
  echo "NOTE: not root, so not installing ${missing[*]}; the tests that need them will be skipped (pytest -ra lists why)."
fi
