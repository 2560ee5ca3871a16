// Owns the log level and the one place that writes log lines.
#include "roomd/base/log.hpp"

#include <cstdio>

namespace roomd::log {

namespace {
Level current = Level::info;
}

std::optional<Level> parse_level(std::string_view name) {
  if (name == "error") return Level::error;
  if (name == "warning" || name == "warn") return Level::warning;
  if (name == "notice") return Level::notice;
  if (name == "info") return Level::info;
  if (name == "debug") return Level::debug;
  return std::nullopt;
}

void set_level(Level l) { current = l; }
Level level() { return current; }

void write(Level l, std::string_view message) {
  if (static_cast<int>(l) > static_cast<int>(current)) return;
  // One fwrite per line so concurrent writers (none today, the worker pool later) never
  // interleave within a line; stderr is unbuffered, so this is one write(2).
  std::string line;
  line.reserve(message.size() + 5);
  line += '<';
  line += static_cast<char>('0' + static_cast<int>(l));
  line += '>';
  for (char c : message) line += (c == '\n' ? ' ' : c);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace roomd::log
