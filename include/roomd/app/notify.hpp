// Notify: what roomd tells systemd (sd_notify: READY, RELOADING, STOPPING, STATUS,
// WATCHDOG) and what systemd hands roomd (socket activation). Built on libsystemd when the
// `systemd` meson feature finds it; otherwise every call is a no-op and nothing changes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace roomd::notify {

void ready();
void reloading();
void stopping();
void status(const std::string& line);
void watchdog();
// The watchdog interval systemd asked for (WATCHDOG_USEC), if any.
std::optional<std::uint64_t> watchdog_usec();

struct ActivatedSocket {
  int fd;
  bool is_unix;
  std::string name;  // FileDescriptorName=; "admin" marks an admin listener
};
// Sockets passed by systemd (LISTEN_FDS), in order; empty without activation.
std::vector<ActivatedSocket> activated_sockets();

}  // namespace roomd::notify
