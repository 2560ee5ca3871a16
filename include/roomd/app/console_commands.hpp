// The operator's console commands (stats, rooms, who, kick, say, reload, shutdown): one line
// in, the answer to print out. The console (net/console.hpp) only reads and prints.
#pragma once

#include <string>
#include <string_view>

namespace roomd {

class Server;

std::string run_console_command(Server& server, std::string_view line);

}  // namespace roomd
