#!/bin/sh
# edgelb postremove: forget the unit. The state in /var/lib/edgelb and the
# configuration in /etc/edgelb are kept unless the package is purged.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
if [ "$1" = "purge" ]; then
  rm -rf /var/lib/edgelb
fi
exit 0
