#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet: apt-get as
# root, sudo otherwise. Quiet and quick when everything is there (it runs before every build).
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
echo "bert_pretrain: installing missing packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else
    echo "error: packages missing (${missing[*]}) and neither root nor sudo available" >&2
    echo "HINT: ask an administrator to run: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
