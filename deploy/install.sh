#!/usr/bin/env bash
# Install the smartpole edge controller on a Debian-based edge computer (Debian 12 or
# later, Ubuntu 24.04): a venv under /opt/smartpole, the config bundle in /etc/smartpole,
# a `smartpole` service user, the systemd unit and log rotation.
#
#   sudo deploy/install.sh --wheelhouse wheelhouse/ --bundle bundles/pole-0042/
#
# Options:
#   --wheelhouse DIR   install smartpole (and its runtime dependencies) from these wheels,
#                      offline (build them on a laptop: pip wheel -w wheelhouse .); a pole
#                      gets `smartpole` alone, never the [installer] or [sim] extras
#   --source DIR       install from a source tree instead (needs PyPI access)
#   --bundle DIR       the pole's bundle from `polectl provision` (pole.toml, pole.key,
#                      pole.crt, ca.pem, commands.pub, identity.json) -> /etc/smartpole,
#                      root:SERVICE_USER 0640 (the folder 0750)
#   --force-config     replace an existing /etc/smartpole/pole.toml (default: keep it)
#   --no-start         enable the service but do not (re)start it
#
# Environment: PREFIX (/opt/smartpole), CONFDIR (/etc/smartpole), STATEDIR
# (/var/lib/smartpole), LOGDIR (/var/log/smartpole), SERVICE_USER (smartpole), PYTHON
# (python3), PIP_INSTALL_ARGS (extra pip arguments), SKIP_APT=1 (no apt-get).
#
# DESTDIR=/some/scratch installs into that root instead: nothing outside it is touched;
# apt-get, useradd, chown and systemctl are printed as "skipped (DESTDIR): ..." instead
# of run. The test of docs/install.md uses this.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/smartpole}
CONFDIR=${CONFDIR:-/etc/smartpole}
STATEDIR=${STATEDIR:-/var/lib/smartpole}
LOGDIR=${LOGDIR:-/var/log/smartpole}
UNITDIR=${UNITDIR:-/etc/systemd/system}
LOGROTATEDIR=${LOGROTATEDIR:-/etc/logrotate.d}
SERVICE_USER=${SERVICE_USER:-smartpole}
PYTHON=${PYTHON:-python3}
PIP_INSTALL_ARGS=${PIP_INSTALL_ARGS:-}
SKIP_APT=${SKIP_APT:-}
APT_PACKAGES="python3 python3-venv ca-certificates chrony alsa-utils logrotate"

WHEELHOUSE="" SOURCE="" BUNDLE="" FORCE_CONFIG="" START=1
die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a folder}; shift 2 ;;
    --source) SOURCE=${2:?--source needs a folder}; shift 2 ;;
    --bundle) BUNDLE=${2:?--bundle needs a folder}; shift 2 ;;
    --force-config) FORCE_CONFIG=1; shift ;;
    --no-start) START=""; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$WHEELHOUSE$SOURCE" ] || die "give --wheelhouse DIR (offline) or --source DIR"
[ -z "$WHEELHOUSE" ] || [ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE: no such folder"
[ -z "$BUNDLE" ] || [ -f "$BUNDLE/pole.toml" ] || \
  die "--bundle $BUNDLE has no pole.toml: make one with polectl provision"
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or set DESTDIR for a staged install"
fi

D=$DESTDIR
step() { echo "==> $*"; }
# Commands that change the running system; in a DESTDIR install only printed.
system() {
  if [ -n "$DESTDIR" ]; then echo "skipped (DESTDIR): $*"; else "$@"; fi
}

step "packages"
if [ -n "$SKIP_APT" ]; then
  echo "skipped (SKIP_APT): apt-get install $APT_PACKAGES"
else
  system env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $APT_PACKAGES
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
  die "$PYTHON is older than 3.11 (Debian 12 has 3.11); set PYTHON=python3.11"

step "service user $SERVICE_USER"
if [ -z "$DESTDIR" ] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
  echo "exists"
else
  system useradd --system --home-dir "$STATEDIR" --no-create-home \
    --shell /usr/sbin/nologin --user-group "$SERVICE_USER"
fi
for g in dialout video audio; do
  if [ -n "$DESTDIR" ] || getent group "$g" >/dev/null; then
    system usermod -a -G "$g" "$SERVICE_USER"
  fi
done

step "folders"
install -d -m 0755 "$D$PREFIX" "$D$PREFIX/share/doc" "$D$UNITDIR" "$D$LOGROTATEDIR"
install -d -m 0750 "$D$CONFDIR" "$D$STATEDIR" "$D$LOGDIR"
system chown "root:$SERVICE_USER" "$CONFDIR"
system chown "$SERVICE_USER:$SERVICE_USER" "$STATEDIR" "$LOGDIR"

step "venv $PREFIX/venv"
if [ ! -x "$D$PREFIX/venv/bin/python" ]; then
  "$PYTHON" -m venv "$D$PREFIX/venv"
fi
# A PYTHONPATH from the caller's shell must not make pip skip what the venv lacks.
PIP=(env -u PYTHONPATH "$D$PREFIX/venv/bin/python" -m pip install --quiet --upgrade)
# shellcheck disable=SC2206
EXTRA=($PIP_INSTALL_ARGS)
if [ -n "$WHEELHOUSE" ]; then
  "${PIP[@]}" --no-index --find-links "$WHEELHOUSE" "${EXTRA[@]}" smartpole
else
  "${PIP[@]}" "${EXTRA[@]}" "$SOURCE"
fi
[ -x "$D$PREFIX/venv/bin/pole-controller" ] || die "pole-controller was not installed"
install -m 0644 "$REPO/docs/install.md" "$D$PREFIX/share/doc/install.md"

step "config $CONFDIR"
if [ -n "$BUNDLE" ]; then
  if [ -f "$D$CONFDIR/pole.toml" ] && [ -z "$FORCE_CONFIG" ] && \
     ! cmp -s "$BUNDLE/pole.toml" "$D$CONFDIR/pole.toml"; then
    echo "keeping the existing $CONFDIR/pole.toml (it differs from the bundle's;" \
         "--force-config replaces it)"
  else
    install -m 0640 "$BUNDLE/pole.toml" "$D$CONFDIR/pole.toml"
  fi
  # Every file the controller reads is root:$SERVICE_USER: the service user reads them
  # (0640, the private key too), only root changes them. Before, pole.crt and ca.pem stayed
  # root:root 0640 and the service could not open them.
  installed=("$CONFDIR/pole.toml")
  for f in pole.key pole.crt ca.pem commands.pub identity.json pole.csr; do
    if [ -f "$BUNDLE/$f" ]; then
      install -m 0640 "$BUNDLE/$f" "$D$CONFDIR/$f"
      installed+=("$CONFDIR/$f")
    fi
  done
  chmod 0640 "$D$CONFDIR/pole.toml"
  system chown "root:$SERVICE_USER" "${installed[@]}"
fi
[ -f "$D$CONFDIR/pole.toml" ] || \
  die "no $CONFDIR/pole.toml: provision the pole (polectl provision) and pass --bundle"
# The controller validates its own config (a pole has no polectl: that is the
# installer's extra); the files it names are checked at every start.
"$D$PREFIX/venv/bin/pole-controller" --check-config --config "$D$CONFDIR/pole.toml" || \
  die "$CONFDIR/pole.toml is invalid: fix the keys above, then run install.sh again"

step "systemd unit and log rotation"
subst() {
  sed -e "s|/opt/smartpole|$PREFIX|g" -e "s|/etc/smartpole|$CONFDIR|g" \
      -e "s|/var/lib/smartpole|$STATEDIR|g" -e "s|/var/log/smartpole|$LOGDIR|g" \
      -e "s|^User=smartpole|User=$SERVICE_USER|" -e "s|^Group=smartpole|Group=$SERVICE_USER|" \
      -e "s|su smartpole smartpole|su $SERVICE_USER $SERVICE_USER|" "$1"
}
subst "$HERE/pole-controller.service" > "$D$UNITDIR/pole-controller.service"
subst "$HERE/logrotate.conf" > "$D$LOGROTATEDIR/smartpole"
chmod 0644 "$D$UNITDIR/pole-controller.service" "$D$LOGROTATEDIR/smartpole"
system systemctl daemon-reload
system systemctl enable pole-controller.service
if [ -n "$START" ]; then
  system systemctl restart pole-controller.service
fi

step "done"
echo "pole-controller installed in $D$PREFIX; config $D$CONFDIR/pole.toml"
echo "watch it:   systemctl status pole-controller; tail -f $LOGDIR/controller.log"
echo "then, from the installer's laptop: polectl commission --config pole.toml"
