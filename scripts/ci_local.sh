#!/usr/bin/env bash
# Runs the GitHub Actions workflows on this machine, end to end: nektos/act runs every job
# here against a real SSH remote, with local stand-ins only for what lives on GitHub
# (docs/ci.md). Sets up .venv if needed; installs openssh-server and gh with apt-get if
# missing (as root). Arguments go to scripts/ci_local.py (--work DIR, --report FILE).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v gh >/dev/null || missing+=(gh)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: ${missing[*]} not installed: run  sudo apt-get install ${missing[*]}  first" >&2
    exit 2
  fi
  echo "installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec python scripts/ci_local.py "$@"
