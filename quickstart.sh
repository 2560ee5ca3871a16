#!/bin/sh
# roomd quick start, for a fresh Debian 12 machine as root (or any machine with the packages).
#   ./quickstart.sh run    install what is missing, build, run roomd on its embedded default
#   ./quickstart.sh test   install what is missing (also chromium, Node and playwright-core for
#                          the browser test), build (plain, ASan+UBSan, TSan; -Werror),
#                          run every test in each build, the faulted soak (plain, ASan+UBSan)
#                          and the fuzz targets
set -eu
cd "$(dirname "$0")"

# libhiredis-dev and redis-server: [cluster] (docs/cluster.md) and its tests, which start their
# own redis-server on a loopback port (a packaged one on 6379 is not used).
PACKAGES="g++ pkg-config meson ninja-build cmake libuv1-dev nlohmann-json3-dev
libtomlplusplus-dev doctest-dev libcli11-dev libedit-dev libsodium-dev libsqlite3-dev libsystemd-dev
libssl-dev libwslay-dev libhttp-parser-dev libhiredis-dev redis-server openssl python3 netcat-openbsd tmux
systemd prometheus"

install_missing() {  # install_missing PACKAGE... (those not installed yet)
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "quickstart: installing$missing"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
  fi
}

# The browser test (tests/integration/test_browser.py): Debian's chromium, Node and npm, and
# playwright-core as pinned in tests/browser/package-lock.json. For `test` only.
install_browser_test() {
  install_missing chromium
  # node and npm by command: a Node from elsewhere (NodeSource) brings its own npm and
  # conflicts with Debian's npm package.
  command -v node >/dev/null 2>&1 || install_missing nodejs
  command -v npm >/dev/null 2>&1 || install_missing npm
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "quickstart: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund)
  fi
}

started=$(date +%s)
phase() {  # phase NAME: where the time goes, for keeping CI under its budget
  echo "quickstart: [$(( $(date +%s) - started ))s] $1"
}

build() {  # build DIR [meson options...]
  dir=$1; shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" -Dwerror=true "$@"
  meson compile -C "$dir"
}

install_missing $PACKAGES
case "${1:-run}" in
  run)
    build build
    exec ./build/roomd
    ;;
  test)
    install_browser_test
    install_missing clang-14 libclang-rt-14-dev  # the fuzz targets (libFuzzer)
    # The sanitizer builds at -O1 with line tables only (-g1), and as unity builds: stack
    # traces keep file:line, and they compile in a third of the time of -O2 -g file by file,
    # which is most of this command's time. The plain build stays file by file, so a
    # missing include still fails somewhere.
    phase "build (plain)"; build build
    san_opts="-Doptimization=1 -Dcpp_args=-g1 -Dunity=on"
    phase "build (ASan+UBSan)"; build build-san -Db_sanitize=address,undefined -Db_lundef=false $san_opts
    phase "build (TSan)"; build build-tsan -Db_sanitize=thread $san_opts
    phase "tests (plain)"
    meson test -C build --print-errorlogs --num-processes 2
    # (Under the sanitizers, not the browser test: it puts Chromium in front of the WebSocket
    # path, which the websocket suite and the websocket fuzz targets cover there, and no
    # thread of roomd's; it runs in the plain build. CI's 30 minutes are better spent on
    # the cluster suites.)
    phase "tests (ASan+UBSan)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C build-san --print-errorlogs --num-processes 2 --timeout-multiplier 3 --no-suite browser
    # The worker pool and its completions under ThreadSanitizer: a data race fails the run.
    phase "tests (TSan)"
    TSAN_OPTIONS=halt_on_error=1 \
      meson test -C build-tsan --print-errorlogs --num-processes 2 --timeout-multiplier 3 --no-suite browser
    # The faulted soak (tests/soak, docs/reliability.md): about 1.5 minutes each. Against the
    # plain build, where RSS and the heap trim mean something; against ASan+UBSan for its
    # reports (RSS not checked there: ASan's allocator keeps freed memory in quarantine).
    phase "soak (plain, 45 s of faults)"
    tests/soak/soak.py --roomd build/roomd --duration 45 --connections 3000
    phase "soak (ASan+UBSan, 45 s of faults)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      tests/soak/soak.py --roomd build-san/roomd --duration 45 --connections 1500 --sanitizer
    # Every fuzz target (tests/fuzz, libFuzzer under ASan+UBSan) from its seed corpus for a
    # bounded time; longer runs are `tests/fuzz/run 600` (docs/reliability.md).
    phase "fuzz (10 s per target)"
    tests/fuzz/run 10
    phase "done"
    echo "quickstart: all tests passed (plain, ASan+UBSan, TSan; soak plain and ASan+UBSan; fuzz targets 10 s each)"
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
