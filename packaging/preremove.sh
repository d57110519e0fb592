#!/bin/sh
# edgelb preremove: stop lbd on removal (not on upgrade). A clean stop leaves
# VIPs in place; drain the member first (lbctl member drain ID) so its VIPs
# move to others before it goes.
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
  systemctl disable --now lbd.service >/dev/null 2>&1 || true
fi
exit 0
