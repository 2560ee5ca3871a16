// roomd's command line: parse options, load and check the config, run the server.
#include "roomd/cli.hpp"

#include <csignal>
#include <cstdio>
#include <iostream>

#include "roomd/config.hpp"
#include "roomd/log.hpp"
#include "roomd/names.hpp"
#include "roomd/server.hpp"
#include "roomd_build_config.hpp"

namespace {
constexpr int kExitConfig = 78;  // EX_CONFIG: systemd's RestartPreventExitStatus
}  // namespace

int main(int argc, char** argv) {
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
  if (hash_key) {
    std::fprintf(stderr, "roomd: --hash-key needs the worker-pool build (libsodium), not available yet\n");
    return 1;
  }

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
  // libuv writes without MSG_NOSIGNAL: a peer that vanished must cost an EPIPE, not the daemon.
  std::signal(SIGPIPE, SIG_IGN);

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
