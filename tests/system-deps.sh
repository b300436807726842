#!/bin/sh
# System programs some tests drive (run by `make test`; .ci/run calls `make test` too):
#   chromium  - the HTML report test renders its page in headless Chromium
#   pgbouncer - the transaction-pooler tests start a real PgBouncer on a free port
# Installed with the system's package manager when they are missing and we may (root, or sudo
# without a password); otherwise one line says what to run. Never fails the build by itself: the
# tests that need a missing program fail and say so.
missing=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$missing pgbouncer"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo -n"
else
  as_root="none"
fi

if command -v apt-get >/dev/null 2>&1 && [ "$as_root" != none ]; then
  echo "system-deps: installing$missing (apt-get) ..."
  if $as_root env DEBIAN_FRONTEND=noninteractive sh -c \
      "apt-get update -qq && apt-get install -y -qq$missing" >/dev/null 2>&1; then
    exit 0
  fi
  echo "system-deps: apt-get could not install$missing; the tests that need them will fail" >&2
  exit 0
fi
echo "system-deps: missing$missing; install them (Debian/Ubuntu: sudo apt-get install$missing) or the tests that need them fail" >&2
exit 0
