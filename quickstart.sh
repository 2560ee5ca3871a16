#!/bin/sh
# roomd quick start, for a fresh Debian 12 machine as root (or any machine with the packages).
#   ./quickstart.sh run    install what is missing, build, run roomd on its embedded default
#   ./quickstart.sh test   install what is missing, build (plain, ASan+UBSan, TSan; -Werror),
#                          run every test in each build
set -eu
cd "$(dirname "$0")"

PACKAGES="g++ pkg-config meson ninja-build cmake libuv1-dev nlohmann-json3-dev
libtomlplusplus-dev doctest-dev libcli11-dev libedit-dev libsodium-dev libsqlite3-dev libsystemd-dev
libssl-dev libwslay-dev libhttp-parser-dev openssl python3 netcat-openbsd tmux systemd prometheus"

install_missing() {
  missing=""
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "quickstart: installing$missing"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
  fi
}

build() {  # build DIR [meson options...]
  dir=$1; shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" -Dwerror=true "$@"
  meson compile -C "$dir"
}

install_missing
case "${1:-run}" in
  run)
    build build
    exec ./build/roomd
    ;;
  test)
    build build
    build build-san -Db_sanitize=address,undefined -Db_lundef=false
    build build-tsan -Db_sanitize=thread
    meson test -C build --print-errorlogs --num-processes 2
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C build-san --print-errorlogs --num-processes 2 --timeout-multiplier 3
    # The worker pool and its completions under ThreadSanitizer: a data race fails the run.
    TSAN_OPTIONS=halt_on_error=1 \
      meson test -C build-tsan --print-errorlogs --num-processes 2 --timeout-multiplier 3
    echo "quickstart: all tests passed (plain, ASan+UBSan, TSan)"
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
