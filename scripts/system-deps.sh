#!/usr/bin/env bash
# Installs what the tests need from Debian's packages, only where it is missing:
# redis-server (tests start their own, killable), Chromium (the page is tested in a real browser),
# Node.js/npm (socket.io-client for the page comes from npm).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "missing ${need[*]}: install them with apt-get (needs root)" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
