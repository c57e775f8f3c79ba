#!/usr/bin/env bash
# Set up voicemill on this machine: the system package ffmpeg, a virtual
# environment in .venv, and the pinned Python packages. Safe to rerun: it
# skips what is already in place. Ends with `pip install -e .`: the `voicemill` command.
#   scripts/setup.sh          what the pipeline needs
#   scripts/setup.sh --test   also Chromium, which the report test drives headless
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {  # apt_install PACKAGE: as root, or with password-less sudo
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing $1 with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "setup: installing $1 with sudo apt-get"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    return 1
  fi
}

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  if ! apt_install ffmpeg; then
    echo "setup: ffmpeg (with ffprobe and its shared libraries) is required and could not be installed" >&2
    echo "       automatically. Install it, then rerun: Debian/Ubuntu 'sudo apt-get install ffmpeg'," >&2
    echo "       Fedora 'sudo dnf install ffmpeg', macOS 'brew install ffmpeg'." >&2
    exit 1
  fi
fi

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null; then
  if ! apt_install chromium; then
    echo "setup: the report test needs Chromium; install it (Debian/Ubuntu 'sudo apt-get install chromium')" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned packages (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
# voicemill itself, editable: puts the `voicemill` command (speak, serve, voices) in $VENV/bin
if [ ! -x "$VENV/bin/voicemill" ] || ! "$VENV/bin/python" -c "import voicemill.serve" 2>/dev/null; then
  echo "setup: installing voicemill (editable) and its command"
  # quiet unless it fails: setuptools warns at length about every editable install
  if ! log=$("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1); then
    echo "$log" >&2
    exit 1
  fi
fi
# DVC's plot page with the Vega libraries inlined (.dvc/config names it): `dvc plots show` needs no network
if [ ! -s .dvc/offline_plots.html ] || [ requirements.txt -nt .dvc/offline_plots.html ]; then
  "$VENV/bin/python" -m voicemill.plots template >/dev/null
fi
echo "setup: ready ($VENV, $("$VENV/bin/python" --version), ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3))"
