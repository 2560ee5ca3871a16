// Logging: one line per event on stderr, prefixed with the systemd priority (<3> err … <7>
// debug) so journald files each line at the right level. The level is process-wide because
// a log is: it is set once at start and on reload, from the loop thread only.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace roomd::log {

enum class Level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

std::optional<Level> parse_level(std::string_view name);
void set_level(Level level);
Level level();

void write(Level level, std::string_view message);

inline void error(std::string_view m) { write(Level::error, m); }
inline void warning(std::string_view m) { write(Level::warning, m); }
inline void notice(std::string_view m) { write(Level::notice, m); }
inline void info(std::string_view m) { write(Level::info, m); }
inline void debug(std::string_view m) { write(Level::debug, m); }

}  // namespace roomd::log
