// Name rules: nicks, rooms, listen addresses.
#include "roomd/base/names.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace roomd {

namespace {
bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
}  // namespace

bool valid_nick(std::string_view nick) {
  if (nick.empty() || nick.size() > 32 || !is_alpha(nick[0])) return false;
  for (char c : nick.substr(1))
    if (!is_alnum(c) && c != '_' && c != '-') return false;
  return true;
}

bool valid_room_name(std::string_view room) {
  if (room.empty() || room.size() > 64 || !is_alnum(room[0])) return false;
  for (char c : room.substr(1))
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

std::string fold_case(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view next_word(std::string_view& rest) {
  auto start = rest.find_first_not_of(' ');
  if (start == std::string_view::npos) {
    rest = {};
    return {};
  }
  rest.remove_prefix(start);
  auto end = rest.find(' ');
  std::string_view word = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  auto after = rest.find_first_not_of(' ');
  rest = after == std::string_view::npos ? std::string_view{} : rest.substr(after);
  return word;
}

std::string ListenAddress::to_string() const {
  switch (kind) {
    case Kind::ipv4: return host + ":" + std::to_string(port);
    case Kind::ipv6: return "[" + host + "]:" + std::to_string(port);
    case Kind::unix_path: return "unix:" + host;
  }
  return {};
}

std::optional<ListenAddress> parse_listen_address(std::string_view text) {
  if (text.starts_with("unix:")) {
    std::string_view path = text.substr(5);
    if (path.empty() || path.size() > 107) return std::nullopt;  // sun_path limit
    return ListenAddress{ListenAddress::Kind::unix_path, std::string(path), 0};
  }
  std::string_view host, port;
  ListenAddress::Kind kind;
  if (text.starts_with("[")) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    kind = ListenAddress::Kind::ipv6;
    in6_addr probe{};
    if (inet_pton(AF_INET6, std::string(host).c_str(), &probe) != 1) return std::nullopt;
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    kind = ListenAddress::Kind::ipv4;
    in_addr probe{};
    if (inet_pton(AF_INET, std::string(host).c_str(), &probe) != 1) return std::nullopt;
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return std::nullopt;
  return ListenAddress{kind, std::string(host), static_cast<std::uint16_t>(value)};
}

}  // namespace roomd
