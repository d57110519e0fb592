#!/bin/sh
# edgelb postinstall: make systemd see the unit and load the IPVS modules now
# (they load at every boot from /usr/lib/modules-load.d/edgelb.conf). lbd is
# not enabled or started: /etc/edgelb/lbd.yaml and the certificates come
# first (docs/OPERATIONS.md). On upgrade, a running lbd is restarted: a clean
# restart leaves IPVS and the VIPs in place, so traffic is not disturbed.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  systemctl restart systemd-modules-load.service >/dev/null 2>&1 || true
  if [ "$1" = "configure" ] && [ -n "$2" ] && systemctl is-active --quiet lbd.service; then
    systemctl try-restart lbd.service || true
  fi
fi
exit 0
