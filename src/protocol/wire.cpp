// Wire: the server's bodies and lines. See wire.hpp; the field order of each body is the
// order of the assignments here.
#include "roomd/protocol/wire.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

namespace roomd {

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // copy unescaped stretches in one append
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

namespace wire {

namespace {
ordered_json nick_list(std::vector<std::string> nicks) {
  std::sort(nicks.begin(), nicks.end());
  return ordered_json(std::move(nicks));
}

// Message lines this server wrote, spliced into an array being written (history_line,
// joined_line): a trailing "\n" or "\r\n" is cut, a line that is not an object is skipped.
template <typename Lines>
void append_message_lines(std::string& line, const Lines& lines) {
  bool first = true;
  for (std::string_view body : lines) {
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
    if (body.size() < 2 || body.front() != '{' || body.back() != '}') continue;  // not one of ours
    if (!std::exchange(first, false)) line += ',';
    line += body;
  }
}

ordered_json presence(std::string_view room, const char* event, std::string_view nick) {
  return ordered_json{{"op", "presence"}, {"room", room}, {"event", event}, {"nick", nick}};
}

ordered_json system_event(const char* event) { return ordered_json{{"op", "system"}, {"event", event}}; }

// Appends for the lines written by hand. A literal's length is known at compile time here,
// whatever the inliner decides about std::string::append(const char*) (out of line, it would
// call strlen for each), and a number goes in without a temporary std::string.
template <std::size_t N>
void put(std::string& out, const char (&literal)[N]) {
  out.append(literal, N - 1);
}
void put_number(std::string& out, std::uint64_t n) {
  char digits[20];  // UINT64_MAX has 20
  auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out.append(digits, static_cast<std::size_t>(end - digits));
}
}  // namespace

// ---- the greeting ----------------------------------------------------------------------

ordered_json welcome(std::string_view version, std::string_view nick, std::string_view motd,
                     const Limits& limits) {
  ordered_json w;
  w["op"] = "welcome";
  w["server"] = "roomd";
  w["version"] = version;
  w["proto"] = 1;
  w["nick"] = nick;
  w["motd"] = motd;
  w["hint"] = "send JSON lines, or type /help for text mode";
  // Not in the spec's list: lets a client pace itself instead of being refused.
  w["limits"] = {{"rate", limits.rate},
                 {"burst", limits.burst},
                 {"query_rate", limits.query_rate},
                 {"query_burst", limits.query_burst},
                 {"max_frame_bytes", limits.max_frame_bytes},
                 {"churn_rate", limits.churn_rate},
                 {"churn_burst", limits.churn_burst}};
  return w;
}

// ---- replies to one client's request -----------------------------------------------------

ordered_json reply(const Id& id, std::string_view op) {
  ordered_json b;
  b["op"] = op;
  if (id) b["id"] = *id;
  return b;
}

ordered_json ok(const Id& id) { return reply(id, "ok"); }

ordered_json ok_nick(const Id& id, std::string_view nick) {
  auto b = reply(id, "ok");
  b["nick"] = nick;
  return b;
}

ordered_json ok_seq(const Id& id, std::uint64_t seq, bool duplicate) {
  auto b = reply(id, "ok");
  b["seq"] = seq;
  // A resend of a say with the same msg_id: the seq is the first one's, nothing was published.
  if (duplicate) b["duplicate"] = true;
  return b;
}

// A resend of a whisper with the same msg_id: not delivered again.
ordered_json ok_duplicate(const Id& id) {
  auto b = reply(id, "ok");
  b["duplicate"] = true;
  return b;
}

ordered_json pong(const Id& id) { return reply(id, "pong"); }

ordered_json echo(const Id& id, std::string_view text) {
  auto b = reply(id, "echo");
  b["text"] = text;
  return b;
}

ordered_json help(const Id& id) { return reply(id, "help"); }

ordered_json bye(const Id& id) { return reply(id, "bye"); }

ordered_json stats(const Id& id, const ordered_json& figures) {
  auto b = reply(id, "stats");
  b.update(figures);
  return b;
}

ordered_json joined(const Id& id, std::string_view room, std::string_view topic, MemberPage members,
                    const RoomPosition& position, ordered_json history) {
  auto b = reply(id, "joined");
  b["room"] = room;
  b["topic"] = topic;
  b["members"] = nick_list(std::move(members.nicks));
  b["count"] = members.count;
  b["more"] = members.more;
  b["seq"] = position.seq;
  b["epoch"] = position.epoch;
  if (position.resumed) b["resumed"] = *position.resumed;
  b["history"] = std::move(history);
  return b;
}

std::string joined_line(const Id& id, std::string_view room, std::string_view topic, MemberPage members,
                        const RoomPosition& position, std::span<const std::string_view> message_lines) {
  // The head as joined() gives it, with an empty history last: `..."history":[]}`.
  std::string line = joined(id, room, topic, std::move(members), position, ordered_json::array())
                         .dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  line.resize(line.size() - 2);  // "]}"
  append_message_lines(line, message_lines);
  line += "]}\n";
  return line;
}

ordered_json left(const Id& id, std::string_view room) {
  auto b = reply(id, "left");
  b["room"] = room;
  return b;
}

ordered_json rooms(const Id& id, ordered_json entries) {
  auto b = reply(id, "rooms");
  b["rooms"] = std::move(entries);
  return b;
}

ordered_json room_entry(std::string_view name, std::string_view topic, std::size_t members, bool keyed) {
  return ordered_json{{"name", name}, {"topic", topic}, {"members", members}, {"keyed", keyed}};
}

ordered_json who(const Id& id, std::string_view room, MemberPage members) {
  auto b = reply(id, "who");
  b["room"] = room;
  b["members"] = nick_list(std::move(members.nicks));
  b["count"] = members.count;
  b["more"] = members.more;
  return b;
}

ordered_json history(const Id& id, std::string_view room, ordered_json messages, bool more) {
  auto b = reply(id, "history");
  b["room"] = room;
  b["messages"] = std::move(messages);
  b["more"] = more;
  return b;
}

std::string history_line(const Id& id, std::string_view room, std::span<const std::string> bodies,
                         bool more) {
  // The stored bodies are message lines this server wrote: they go into the reply as they
  // are, not parsed and written again (that was most of a search's cost on the loop).
  // Same keys, same order as history() gives.
  std::string line;
  put(line, R"({"op":"history")");
  if (id) {
    put(line, R"(,"id":)");
    line += id->dump();
  }
  put(line, R"(,"room":)");
  append_json_string(line, room);
  put(line, R"(,"messages":[)");
  append_message_lines(line, bodies);
  if (more) put(line, "],\"more\":true}\n");
  else put(line, "],\"more\":false}\n");
  return line;
}

ordered_json error_body(ErrorCode code, std::string_view message, const Id& id) {
  ordered_json e;
  e["op"] = "error";
  if (id) e["id"] = *id;
  e["code"] = to_string(code);
  e["message"] = message;
  return e;
}

ordered_json error_slow_consumer() {
  return error_body(ErrorCode::slow_consumer, "you are not reading fast enough; closing");
}

// ---- room traffic ------------------------------------------------------------------------

ordered_json message(std::string_view room, std::uint64_t seq, std::uint64_t ts, std::string_view from,
                     std::optional<std::string_view> text, const nlohmann::json& data) {
  ordered_json m;
  m["op"] = "message";
  m["room"] = room;
  m["seq"] = seq;
  m["ts"] = ts;
  m["from"] = from;
  if (text) m["text"] = *text;
  if (!data.is_null()) m["data"] = data;
  return m;
}

std::string message_line(std::string_view room, std::uint64_t seq, std::uint64_t ts, std::string_view from,
                         std::optional<std::string_view> text, const nlohmann::json& data) {
  // The hot path: the message's JSON line is written directly, once, not built as a DOM and
  // dumped; its fields keep message()'s order.
  std::string line;
  line.reserve(96 + room.size() + from.size() + (text ? text->size() : 0));
  put(line, R"({"op":"message","room":)");
  append_json_string(line, room);
  put(line, R"(,"seq":)");
  put_number(line, seq);
  put(line, R"(,"ts":)");
  put_number(line, ts);
  put(line, R"(,"from":)");
  append_json_string(line, from);
  if (text) {
    put(line, R"(,"text":)");
    append_json_string(line, *text);
  }
  if (!data.is_null()) {
    put(line, R"(,"data":)");
    line += data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  put(line, "}\n");
  return line;
}

MessageLineParts message_line_parts(std::string_view room, std::uint64_t ts, std::string_view from,
                                    std::optional<std::string_view> text, const nlohmann::json& data) {
  std::string line = message_line(room, 0, ts, from, text, data);
  // The room comes first and its name is JSON-plain, so the first "seq": is the field.
  constexpr std::string_view seq_field = R"("seq":0,)";
  const std::size_t at = line.find(seq_field);
  MessageLineParts parts;
  parts.head = line.substr(0, at + seq_field.size() - 2);
  parts.tail = line.substr(at + seq_field.size() - 1);
  return parts;
}

ordered_json whisper(std::string_view from, std::string_view to, std::string_view text, std::uint64_t ts) {
  return ordered_json{{"op", "whisper"}, {"from", from}, {"to", to}, {"text", text}, {"ts", ts}};
}

ordered_json presence_join(std::string_view room, std::string_view nick) { return presence(room, "join", nick); }

ordered_json presence_leave(std::string_view room, std::string_view nick) { return presence(room, "leave", nick); }

ordered_json presence_nick(std::string_view room, std::string_view nick, std::string_view old) {
  auto p = presence(room, "nick", nick);
  p["old"] = old;
  return p;
}

ordered_json presence_topic(std::string_view room, std::string_view nick, std::string_view topic) {
  auto p = presence(room, "topic", nick);
  p["topic"] = topic;
  return p;
}

ordered_json presence_summary(std::string_view room, const PresenceSummary& summary, std::size_t count) {
  auto renamed = ordered_json::array();
  for (const auto& [old, nick] : summary.renamed) renamed.push_back(ordered_json{{"old", old}, {"nick", nick}});
  return ordered_json{{"op", "presence"},        {"room", room},
                      {"event", "summary"},      {"joins", summary.joins},
                      {"leaves", summary.leaves}, {"renames", summary.renames},
                      {"joined", summary.joined}, {"left", summary.left},
                      {"renamed", std::move(renamed)}, {"count", count}};
}

// ---- notices from the server itself ------------------------------------------------------

ordered_json system_shutdown() { return system_event("shutdown"); }

ordered_json system_reload(std::string_view room, std::string_view reason) {
  auto b = system_event("reload");
  b["room"] = room;
  b["reason"] = reason;
  return b;
}

ordered_json system_kicked(std::string_view reason) {
  auto b = system_event("kicked");
  b["reason"] = reason;
  return b;
}

ordered_json system_dropped(std::string_view room, std::uint64_t count) {
  auto b = system_event("dropped");
  b["room"] = room;
  b["count"] = count;
  return b;
}

ordered_json system_lame_duck(std::uint64_t reconnect_ms) {
  auto b = system_event("lame_duck");
  b["reconnect_ms"] = reconnect_ms;
  return b;
}

ordered_json system_renamed(std::string_view nick, std::string_view old, std::string_view reason) {
  auto b = system_event("renamed");
  b["nick"] = nick;
  b["old"] = old;
  b["reason"] = reason;
  return b;
}

ordered_json ping() { return ordered_json{{"op", "ping"}}; }

}  // namespace wire
}  // namespace roomd
