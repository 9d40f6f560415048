#!/usr/bin/env bash
# Installs the servers the integration tests start on their own (Prosody,
# ejabberd, Mosquitto, Redis), the browser of the console tests (Debian's
# chromium, driven by playwright-core) and the Python OMEMO client the XMPP
# encryption tests talk to (test/harness/omemo-peer.py: python3-omemo,
# python3-oldmemo, python3-twomemo, python3-slixmpp, and python3-xmlschema for
# oldmemo's XML helpers) on a fresh Debian machine, only what is missing, with
# one `apt-get update` and one `apt-get install`.
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
  [chromium]=chromium
)

has_binary() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for pkg in prosody ejabberd mosquitto redis-server chromium; do
  if ! has_binary "${binaries[$pkg]}"; then
    missing+=("$pkg")
  fi
done

# Libraries, not services: installed with the rest when missing, nothing to stop afterwards.
python_packages=(python3-omemo python3-oldmemo python3-twomemo python3-slixmpp python3-xmlschema)
libraries_missing=()
for pkg in "${python_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    libraries_missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ] && [ "${#libraries_missing[@]}" -eq 0 ]; then
  echo "install-services: prosody, ejabberd, mosquitto, redis-server, chromium and the Python OMEMO client are already installed"
  exit 0
fi

echo "install-services: installing ${missing[*]} ${libraries_missing[*]}"

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
apt-get install -y "${missing[@]}" "${libraries_missing[@]}" </dev/null

# Belt and braces for init systems that ignore policy-rc.d (systemd units
# enabled by the package): stop and disable only the services just installed.
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
