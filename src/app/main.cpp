// roomd's command line: parse options, load and check the config, run the server.
#include "roomd/app/cli.hpp"

#include <csignal>
#include <cstdio>
#include <iostream>

#include <malloc.h>
#include <sodium.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "roomd/app/config.hpp"
#include "roomd/history/history_helper.hpp"
#include "roomd/offload/key_helper.hpp"
#include "roomd/offload/keys.hpp"
#include "roomd/base/log.hpp"
#include "roomd/base/names.hpp"
#include "roomd/app/server.hpp"
#include "roomd_build_config.hpp"

namespace {
constexpr int kExitConfig = 78;  // EX_CONFIG: systemd's RestartPreventExitStatus

// --hash-key: one line from stdin (its newline is not part of the key), not echoed when
// stdin is a terminal; prints exactly one line, the hash.
int hash_key_from_stdin() {
  bool tty = isatty(STDIN_FILENO);
  termios saved{};
  if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::fprintf(stderr, "room key: ");
  }
  std::string key;
  bool got = static_cast<bool>(std::getline(std::cin, key));
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::fprintf(stderr, "\n");
  }
  if (!key.empty() && key.back() == '\r') key.pop_back();
  if (!got || key.empty()) {
    std::fprintf(stderr, "roomd: --hash-key needs a non-empty key on stdin\n");
    return 1;
  }
  auto hash = roomd::hash_key(key);
  sodium_memzero(key.data(), key.size());
  if (!hash) {
    std::fprintf(stderr, "roomd: hashing failed (out of memory?)\n");
    return 1;
  }
  std::printf("%s\n", hash->c_str());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  // Not a user-facing option: the daemon starts its argon2id helpers this way.
  if (argc == 2 && std::string_view(argv[1]) == "--key-check-helper") return roomd::run_key_check_helper();
  if (argc == 3 && std::string_view(argv[1]) == "--history-query-helper")
    return roomd::run_history_query_helper(argv[2]);
  CLI::App app{"roomd: a chat and message-routing daemon"};
  std::string config_path;
  bool check_config = false, hash_key = false, version = false;
  std::string log_level;
  std::vector<std::string> listen;
  app.add_option("-c,--config", config_path, "TOML config file (default: the embedded default)");
  app.add_flag("--check-config", check_config, "validate the config and exit (0 ok, 78 bad)");
  app.add_flag("--hash-key", hash_key, "read a room key on stdin and print its argon2id hash");
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("--log-level", log_level, "error, warning, notice, info or debug (overrides the config)");
  app.add_option("--listen", listen, "listen address (repeatable; overrides server.listen): "
                                     "IP:PORT, [IPv6]:PORT or unix:PATH");
  if (auto status = roomd::parse_command_line(app, argc, argv)) return *status;

  if (version) {
    std::printf("roomd %s\n", ROOMD_VERSION);
    return 0;
  }
  if (!roomd::keys_init()) {
    std::fprintf(stderr, "roomd: libsodium cannot be initialised\n");
    return 1;
  }
  if (hash_key) return hash_key_from_stdin();

  roomd::ConfigResult loaded;
  if (config_path.empty()) loaded.config = roomd::default_config();
  else loaded = roomd::load_config_file(config_path);
  std::string source = config_path.empty() ? "(embedded default)" : config_path;
  for (const auto& addr : listen)
    if (!roomd::parse_listen_address(addr))
      loaded.errors.push_back({"--listen", 0, "bad address '" + addr + "' (want IP:PORT, [IPv6]:PORT or unix:PATH)"});
  if (!log_level.empty() && !roomd::log::parse_level(log_level))
    loaded.errors.push_back({"--log-level", 0, "must be one of error, warning, notice, info, debug"});
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) roomd::log::error("config: " + e.to_string(source));
    return kExitConfig;
  }
  if (check_config) {
    std::printf("%s: ok\n", source.c_str());
    return 0;
  }

  roomd::log::set_level(*roomd::log::parse_level(log_level.empty() ? loaded.config.log.level : log_level));
  // A daemon that may hold max_clients sockets raises its soft descriptor limit to the hard one.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  // libuv writes without MSG_NOSIGNAL: a peer that vanished must cost an EPIPE, not the daemon.
  std::signal(SIGPIPE, SIG_IGN);

  // Large blocks come from one heap, not from mmap, and the heap is not trimmed eagerly, so a
  // loop-thread allocation never waits on the process-wide mmap lock. This was set when
  // libsodium mapped and unmapped 64 MiB per key check on a pool thread, inside the daemon (a
  // storm of keyed joins raised message p99 several-fold). The checks now run in helper
  // processes (this line is not reached there); the setting stays, unmeasured without it.
  // Free memory is still given back, only not from free(): the server trims the heap in a
  // quiet moment of the loop, after a burst has passed (Server::trim_heap_when_quiet).
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);

  // The worker pool is libuv's thread pool, sized when first used: set it before anything runs.
  setenv("UV_THREADPOOL_SIZE", std::to_string(loaded.config.server.workers).c_str(), 1);

  roomd::ServerOptions options;
  options.config = std::move(loaded.config);
  if (!config_path.empty()) options.config_path = config_path;
  options.listen_override = listen;
  try {
    roomd::Server server(std::move(options));
    return server.run();
  } catch (const std::exception& e) {
    roomd::log::error(std::string("fatal: ") + e.what());
    return 1;
  }
}
