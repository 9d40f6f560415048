#!/usr/bin/env bash
# Installs the servers the integration tests start on their own (Prosody,
# ejabberd, Mosquitto, Redis) on a fresh Debian machine, only where a binary is missing,
# and the Python OMEMO client the XMPP encryption tests talk to (test/harness/omemo-peer.py:
# python3-omemo, python3-oldmemo, python3-twomemo, python3-slixmpp, python3-xmlschema for
# oldmemo's XML helpers), only where one is missing.
#
# The test harnesses start private instances on free loopback ports, so the
# Debian service instances must not be started by the install. Instances that
# already run on this machine (e.g. Mosquitto on 1883, Redis on 6379) are never
# touched: only packages this script installs are stopped and disabled.
#
# Usage (as root, no stdin needed): .ci/install-services.sh
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "install-services: run as root (apt-get needs it)" >&2
  exit 1
fi

# package name -> binary that proves it is installed
declare -A binaries=(
  [prosody]=prosodyctl
  [ejabberd]=ejabberdctl
  [mosquitto]=mosquitto
  [redis-server]=redis-server
)

has_binary() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for pkg in prosody ejabberd mosquitto redis-server; do
  if ! has_binary "${binaries[$pkg]}"; then
    missing+=("$pkg")
  fi
done

# Libraries, not services: installed when missing, nothing to stop afterwards.
python_packages=(python3-omemo python3-oldmemo python3-twomemo python3-slixmpp python3-xmlschema)
python_missing=()
for pkg in "${python_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    python_missing+=("$pkg")
  fi
done
if [ "${#python_missing[@]}" -gt 0 ]; then
  echo "install-services: installing ${python_missing[*]}"
  apt-get update
  apt-get install -y "${python_missing[@]}" </dev/null
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-services: prosody, ejabberd, mosquitto and redis-server are already installed"
  exit 0
fi

echo "install-services: installing ${missing[*]}"

# policy-rc.d exit 101 tells invoke-rc.d not to start services during the
# install. Docker images often ship one already; keep it if so, else add ours
# for the duration of this script only.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup() {
  if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
  fi
}
trap cleanup EXIT

apt-get update
apt-get install -y "${missing[@]}" </dev/null

# Belt and braces for init systems that ignore policy-rc.d (systemd units
# enabled by the package): stop and disable only what was just installed.
for pkg in "${missing[@]}"; do
  service="$pkg"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    service "$service" stop >/dev/null 2>&1 || true
  fi
  # sysvinit: no start at boot either (ejabberd's init script would bind 5222, 5269, 5280, 1883).
  if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$service" ]; then
    update-rc.d "$service" disable >/dev/null 2>&1 || true
  fi
done

for pkg in "${missing[@]}"; do
  if ! has_binary "${binaries[$pkg]}"; then
    echo "install-services: $pkg installed but ${binaries[$pkg]} is still missing" >&2
    exit 1
  fi
done

if has_binary prosody; then
  prosodyctl about 2>/dev/null | sed -n 's/^Prosody /install-services: prosody /p' | head -n 1 || true
fi
echo "install-services: done"
