// A configured room as the router keeps it: the [[rooms]] table of the config file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace roomd {

struct RoomConfig {
  std::string name;
  std::string topic;
  std::uint32_t max_members = 1000;
  bool persist = true;
  std::string key;  // argon2id hash; empty: no key needed
  bool read_only = false;
  std::vector<std::string> speakers;

  bool operator==(const RoomConfig&) const = default;
};

}  // namespace roomd
