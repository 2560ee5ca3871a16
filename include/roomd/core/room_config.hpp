// A configured room as the router keeps it: the [[rooms]] table of the config file.
#pragma once

#include <cstdint>
#include <optional>
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
  // Above this many members presence is summarized; absent: limits.presence_threshold.
  std::optional<std::uint32_t> presence_threshold;
  // With [cluster]: false keeps the room on this node (its own seq, no Redis).
  bool cluster = true;

  bool operator==(const RoomConfig&) const = default;
};

}  // namespace roomd
