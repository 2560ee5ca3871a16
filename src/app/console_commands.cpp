// Console commands against the server and its router.
#include "roomd/app/console_commands.hpp"

#include "roomd/base/log.hpp"
#include "roomd/base/names.hpp"

namespace roomd {

std::string run_console_command(Router& router, const ConsoleActions& server, std::string_view line) {
  std::string_view rest = line;
  std::string_view cmd = next_word(rest);
  if (cmd == "stats") return server.stats_line() + "\n";
  if (cmd == "rooms") {
    std::string out;
    for (const auto& r : router.rooms())
      out += r.name + " members=" + std::to_string(r.members + r.remote_members) +
             (r.remote_members ? " here=" + std::to_string(r.members) : std::string()) + " seq=" + std::to_string(r.last_seq) +
             (r.configured ? " configured" : " dynamic") + (r.keyed ? " keyed" : "") + " topic=" + r.topic + "\n";
    return out.empty() ? "no rooms\n" : out;
  }
  if (cmd == "who") {
    std::string_view room = next_word(rest);
    auto members = router.who(room);
    if (!members) return "! no room '" + std::string(room) + "'\n";
    std::string out = std::string(room) + ":";
    for (const auto& n : *members) out += " " + n;
    return out + "\n";
  }
  if (cmd == "kick") {
    std::string nick(next_word(rest));
    if (nick.empty()) return "! usage: kick NICK [REASON]\n";
    if (!router.kick(nick, rest)) return "! no such nick '" + nick + "'\n";
    log::notice("console: kicked " + nick);
    return "kicked " + nick + "\n";
  }
  if (cmd == "say") {
    std::string room(next_word(rest));
    if (room.empty() || rest.empty()) return "! usage: say ROOM TEXT\n";
    if (auto error = router.server_say(room, rest)) return "! " + *error + "\n";
    return "ok\n";
  }
  if (cmd == "reload") {
    server.reload();
    return "ok\n";
  }
  if (cmd == "shutdown") {
    server.shutdown();
    return "shutting down\n";
  }
  if (cmd == "help" || cmd.empty())
    return "commands: stats, rooms, who ROOM, kick NICK [REASON], say ROOM TEXT, reload, shutdown\n";
  return "! unknown command '" + std::string(cmd) + "' (try help)\n";
}

}  // namespace roomd
