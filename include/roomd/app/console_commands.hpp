// The operator's console commands (stats, rooms, who, kick, say, reload, shutdown): one line
// in, the answer to print out. The console (net/console.hpp) only reads and prints.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "roomd/core/router.hpp"

namespace roomd {

// What the commands do beyond the router: the server's, handed in.
struct ConsoleActions {
  std::function<std::string()> stats_line{};
  std::function<void()> reload{};
  std::function<void()> shutdown{};
};

std::string run_console_command(Router& router, const ConsoleActions& server, std::string_view line);

}  // namespace roomd
