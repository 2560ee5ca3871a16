// Name rules shared by the router, the config and text mode: nicks, room names, listen
// addresses. Hand-written matchers rather than std::regex: they run on every nick and join.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace roomd {

// ^[A-Za-z][A-Za-z0-9_-]{0,31}$
bool valid_nick(std::string_view nick);
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$
bool valid_room_name(std::string_view room);
// Nicks are unique ignoring case: this is the key they are indexed by.
std::string fold_case(std::string_view s);

// Splits the first space-separated word off `rest`, leaving `rest` at the next word (text
// mode, the console and search words all split this way).
std::string_view next_word(std::string_view& rest);

struct ListenAddress {
  enum class Kind { ipv4, ipv6, unix_path } kind;
  std::string host;  // numeric address for ipv4/ipv6, the path for unix
  std::uint16_t port = 0;

  std::string to_string() const;
};

// "127.0.0.1:7000", "[::1]:7000", "unix:/run/roomd/roomd.sock". Numeric only: a daemon
// should not depend on a resolver at start.
std::optional<ListenAddress> parse_listen_address(std::string_view text);

}  // namespace roomd
