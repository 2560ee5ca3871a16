#!/bin/sh
# meson install step: put the example config in place unless the operator already has one.
# usage: install-config.sh SOURCE ABSOLUTE_TARGET
set -eu
target="${DESTDIR:-}$2"
if [ -e "$target" ]; then
  echo "roomd: keeping existing $target"
else
  mkdir -p "$(dirname "$target")"
  cp "$1" "$target"
  chmod 0644 "$target"
  echo "roomd: installed example config $target"
fi
