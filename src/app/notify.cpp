// Notify: sd_notify and sd_listen_fds, or nothing without libsystemd.
#include "roomd/app/notify.hpp"

#include "roomd_build_config.hpp"

#if ROOMD_HAVE_SYSTEMD
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdlib>
#endif

namespace roomd::notify {

#if ROOMD_HAVE_SYSTEMD

namespace {
void send(const std::string& state) { sd_notify(0, state.c_str()); }

std::uint64_t monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}
}  // namespace

void ready() { send("READY=1"); }
void reloading() { send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec())); }
void stopping() { send("STOPPING=1"); }
void status(const std::string& line) { send("STATUS=" + line); }
void watchdog() { send("WATCHDOG=1"); }

std::optional<std::uint64_t> watchdog_usec() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return usec;
  return std::nullopt;
}

std::vector<ActivatedSocket> activated_sockets() {
  std::vector<ActivatedSocket> out;
  char** names = nullptr;
  int n = sd_listen_fds_with_names(1, &names);  // 1: unset LISTEN_* so children do not inherit
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    bool is_unix = sd_is_socket(fd, AF_UNIX, SOCK_STREAM, 1) > 0;
    bool is_inet = sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0;
    if (is_unix || is_inet) out.push_back({fd, is_unix, names && names[i] ? names[i] : ""});
  }
  if (names) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return out;
}

#else

void ready() {}
void reloading() {}
void stopping() {}
void status(const std::string&) {}
void watchdog() {}
std::optional<std::uint64_t> watchdog_usec() { return std::nullopt; }
std::vector<ActivatedSocket> activated_sockets() { return {}; }

#endif

}  // namespace roomd::notify
