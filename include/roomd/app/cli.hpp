// Command-line parsing shared by roomd and roomcat: CLI11 with the exit statuses both use
// (0 after --help, 2 for bad usage).
#pragma once

#include <CLI/CLI.hpp>

#include <optional>

namespace roomd {

inline constexpr int kExitUsage = 2;

// Parses; returns the status to exit with when the program should stop here.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace roomd
