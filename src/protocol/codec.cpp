// Codec: JSON requests, text-mode commands, and rendering events for both modes.
#include "roomd/protocol/codec.hpp"

#include <charconv>

#include "roomd/base/names.hpp"

namespace roomd {

using nlohmann::json;

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) { ++p; continue; }
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    if (static_cast<std::size_t>(end - p) <= n) return false;
    for (std::size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return false;
    p += n + 1;
  }
  return true;
}

Mode detect_mode(std::string_view line) {
  auto first = line.find_first_not_of(" \t");
  return first != std::string_view::npos && line[first] == '{' ? Mode::json : Mode::text;
}

namespace {

// Reads typed fields of a request object; the first problem becomes a bad_request.
class Fields {
 public:
  Fields(const json& obj, std::optional<json> id) : obj_(obj), id_(std::move(id)) {}

  bool string(const char* name, std::string& out) {
    auto it = obj_.find(name);
    if (it == obj_.end()) return fail(std::string("missing field '") + name + "'");
    if (!it->is_string()) return fail(std::string("field '") + name + "' must be a string");
    out = it->get<std::string>();
    return true;
  }
  bool optional_string(const char* name, std::optional<std::string>& out) {
    auto it = obj_.find(name);
    if (it == obj_.end() || it->is_null()) return true;
    if (!it->is_string()) return fail(std::string("field '") + name + "' must be a string");
    out = it->get<std::string>();
    return true;
  }
  bool optional_count(const char* name, std::optional<std::uint64_t>& out, std::uint64_t min) {
    auto it = obj_.find(name);
    if (it == obj_.end() || it->is_null()) return true;
    if (!it->is_number_integer() || (it->is_number_integer() && !it->is_number_unsigned() &&
                                     it->get<std::int64_t>() < 0) ||
        it->get<std::uint64_t>() < min)
      return fail(std::string("field '") + name + "' must be an integer >= " + std::to_string(min));
    out = it->get<std::uint64_t>();
    return true;
  }

  std::optional<RequestError> error;

 private:
  bool fail(std::string message) {
    if (!error) error = RequestError{ErrorCode::bad_request, std::move(message), id_};
    return false;
  }
  const json& obj_;
  std::optional<json> id_;
};

}  // namespace

namespace {

// Reads a JSON string with nothing to unescape at `p` (just after its opening quote):
// the text up to the closing quote, or nothing if there is a backslash or a control
// character first (the general parser handles those).
std::optional<std::string_view> plain_string(std::string_view frame, std::size_t& p) {
  std::size_t start = p;
  for (; p < frame.size(); ++p) {
    auto c = static_cast<unsigned char>(frame[p]);
    if (c == '"') return frame.substr(start, p++ - start);
    if (c == '\\' || c < 0x20) return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Request> parse_plain_say(std::string_view frame) {
  // Exactly {"op":"say","room":R,"text":T} with an optional integer "id" and an optional
  // "msg_id", keys in any order, no blanks, no escapes: what programs send all day. Anything
  // else returns nothing.
  if (frame.size() < 2 || frame.front() != '{' || frame.back() != '}') return std::nullopt;
  std::optional<std::string_view> op, room, text, msg_id;
  std::optional<nlohmann::json> id;
  std::size_t p = 1;
  for (;;) {
    if (p >= frame.size() || frame[p] != '"') return std::nullopt;
    ++p;
    auto key = plain_string(frame, p);
    if (!key || p >= frame.size() || frame[p] != ':') return std::nullopt;
    ++p;
    if (*key == "id") {
      if (id) return std::nullopt;
      bool negative = p < frame.size() && frame[p] == '-';
      if (negative) ++p;
      std::size_t digits = p;
      while (p < frame.size() && frame[p] >= '0' && frame[p] <= '9') ++p;
      std::size_t n = p - digits;
      if (n == 0 || n > 18 || (n > 1 && frame[digits] == '0')) return std::nullopt;
      std::int64_t value = 0;
      for (std::size_t i = digits; i < p; ++i) value = value * 10 + (frame[i] - '0');
      // As the general parser types them: unsigned when not negative.
      if (negative) id = nlohmann::json(static_cast<std::int64_t>(-value));
      else id = nlohmann::json(static_cast<std::uint64_t>(value));
    } else {
      std::optional<std::string_view>* slot = *key == "op"       ? &op
                                              : *key == "room"   ? &room
                                              : *key == "text"   ? &text
                                              : *key == "msg_id" ? &msg_id
                                                                 : nullptr;
      if (!slot || *slot || p >= frame.size() || frame[p] != '"') return std::nullopt;
      ++p;
      *slot = plain_string(frame, p);
      if (!*slot) return std::nullopt;
    }
    if (p >= frame.size()) return std::nullopt;
    if (frame[p] == ',') {
      ++p;
      continue;
    }
    if (frame[p] == '}' && p + 1 == frame.size()) break;
    return std::nullopt;
  }
  if (op != "say" || !room || !text) return std::nullopt;
  if (msg_id && !valid_msg_id(*msg_id)) return std::nullopt;  // the general parser says why
  Request req;
  req.op = Op::say;
  req.id = std::move(id);
  req.room = std::string(*room);
  req.text = std::string(*text);
  if (msg_id) req.msg_id = std::string(*msg_id);
  return req;
}

namespace {
ParseResult parse_valid_utf8_dom(std::string_view frame);
}  // namespace

ParseResult parse_json_request(std::string_view frame) {
  if (!valid_utf8(frame)) return RequestError{ErrorCode::bad_utf8, "frame is not valid UTF-8", {}};
  if (auto say = parse_plain_say(frame)) return std::move(*say);
  return parse_valid_utf8_dom(frame);
}

ParseResult parse_json_request_dom(std::string_view frame) {
  if (!valid_utf8(frame)) return RequestError{ErrorCode::bad_utf8, "frame is not valid UTF-8", {}};
  return parse_valid_utf8_dom(frame);
}

namespace {

ParseResult parse_valid_utf8_dom(std::string_view frame) {
  json obj = json::parse(frame, nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return RequestError{ErrorCode::bad_json, "frame is not valid JSON", {}};
  if (!obj.is_object()) return RequestError{ErrorCode::bad_request, "frame must be a JSON object", {}};

  std::optional<json> id;
  if (auto it = obj.find("id"); it != obj.end()) {
    if (it->is_structured())
      return RequestError{ErrorCode::bad_request, "field 'id' must be a scalar", {}};
    id = *it;
  }
  auto op_it = obj.find("op");
  if (op_it == obj.end()) return RequestError{ErrorCode::bad_request, "missing field 'op'", id};
  if (!op_it->is_string()) return RequestError{ErrorCode::bad_request, "field 'op' must be a string", id};
  auto op = op_from_name(op_it->get_ref<const std::string&>());
  if (!op)
    return RequestError{ErrorCode::unknown_op, "unknown op '" + op_it->get<std::string>() + "'", id};

  Request req;
  req.op = *op;
  req.id = id;
  Fields f(obj, id);
  switch (*op) {
    case Op::nick: f.string("nick", req.nick); break;
    case Op::join:
      f.string("room", req.room) && f.optional_string("key", req.key) && f.optional_count("since", req.since, 0) &&
          f.optional_string("epoch", req.epoch);
      break;
    case Op::leave: f.string("room", req.room); break;
    case Op::who: {
      std::optional<std::uint64_t> limit;
      if (f.string("room", req.room) && f.optional_string("after", req.after) && f.optional_count("limit", limit, 1))
        if (limit) req.limit = static_cast<std::uint32_t>(std::min<std::uint64_t>(*limit, kMaxWhoPage));
      break;
    }
    case Op::say: {
      if (!f.string("room", req.room) || !f.optional_string("text", req.text) ||
          !f.optional_string("msg_id", req.msg_id))
        break;
      if (auto it = obj.find("data"); it != obj.end()) req.data = *it;
      if (!req.text && req.data.is_null())
        return RequestError{ErrorCode::bad_request, "say needs 'text' or 'data'", id};
      if (req.msg_id && !valid_msg_id(*req.msg_id))
        return RequestError{ErrorCode::bad_request,
                            "field 'msg_id' must be a string of 1 to " + std::to_string(kMaxMsgIdBytes) + " bytes", id};
      break;
    }
    case Op::whisper: {
      std::string text;
      if (!f.string("to", req.to) || !f.string("text", text) || !f.optional_string("msg_id", req.msg_id)) break;
      req.text = std::move(text);
      // A deviation from SPEC.md, as the say's (docs/protocol.md, Resending a say).
      if (req.msg_id && !valid_msg_id(*req.msg_id))
        return RequestError{ErrorCode::bad_request,
                            "field 'msg_id' must be a string of 1 to " + std::to_string(kMaxMsgIdBytes) + " bytes", id};
      break;
    }
    case Op::topic: f.string("room", req.room) && f.string("topic", req.topic); break;
    case Op::history: {
      std::optional<std::uint64_t> limit;
      if (f.string("room", req.room) && f.optional_count("before", req.before, 1) &&
          f.optional_count("limit", limit, 1) && f.optional_string("search", req.search))
        if (limit) req.limit = static_cast<std::uint32_t>(std::min<std::uint64_t>(*limit, 500));
      break;
    }
    case Op::echo: {
      std::string text;
      if (f.string("text", text)) req.text = std::move(text);
      break;
    }
    case Op::rooms:
    case Op::ping:
    case Op::bye:
    case Op::help:
    case Op::stats: break;
  }
  if (f.error) return *f.error;
  return req;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

RequestError usage(std::string_view text) {
  return RequestError{ErrorCode::bad_request, "usage: " + std::string(text), {}};
}

}  // namespace

ParseResult parse_text_line(std::string_view line) {
  if (!valid_utf8(line)) return RequestError{ErrorCode::bad_utf8, "line is not valid UTF-8", {}};
  Request req;
  if (line == "Bye") { req.op = Op::bye; return req; }
  if (line.empty() || line[0] != '/') {
    req.op = Op::say;
    req.current_room = true;
    req.text = std::string(line);
    return req;
  }
  std::string_view rest = line.substr(1);
  std::string_view cmd = next_word(rest);
  if (cmd == "nick") {
    req.op = Op::nick;
    req.nick = next_word(rest);
    if (req.nick.empty()) return usage("/nick NICK");
  } else if (cmd == "join") {
    req.op = Op::join;
    req.room = next_word(rest);
    if (req.room.empty()) return usage("/join ROOM [KEY]");
    if (auto key = next_word(rest); !key.empty()) req.key = std::string(key);
  } else if (cmd == "leave" || cmd == "part") {
    req.op = Op::leave;
    req.room = next_word(rest);
    req.current_room = req.room.empty();
  } else if (cmd == "rooms" || cmd == "list") {
    req.op = Op::rooms;
  } else if (cmd == "who") {
    req.op = Op::who;
    req.room = next_word(rest);
    req.current_room = req.room.empty();
    if (auto after = next_word(rest); !after.empty()) req.after = std::string(after);
  } else if (cmd == "msg") {
    req.op = Op::whisper;
    req.to = next_word(rest);
    if (req.to.empty() || rest.empty()) return usage("/msg NICK TEXT");
    req.text = std::string(rest);
  } else if (cmd == "topic") {
    req.op = Op::topic;
    req.room = next_word(rest);
    if (req.room.empty()) return usage("/topic ROOM TEXT");
    req.topic = std::string(rest);
  } else if (cmd == "history") {
    req.op = Op::history;
    std::string_view a = next_word(rest), b = next_word(rest);
    if (all_digits(a) && b.empty()) std::swap(a, b);  // "/history 20" means the current room
    req.room = a;
    req.current_room = req.room.empty();
    if (!b.empty()) {
      if (!all_digits(b) || b.size() > 6) return usage("/history [ROOM] [N]");
      unsigned n = 0;
      std::from_chars(b.data(), b.data() + b.size(), n);
      if (n == 0) return usage("/history [ROOM] [N]");
      req.limit = std::min(n, 500u);
    }
  } else if (cmd == "search") {
    req.op = Op::history;
    req.room = next_word(rest);
    if (req.room.empty() || rest.empty()) return usage("/search ROOM WORDS");
    req.search = std::string(rest);
  } else if (cmd == "quit") {
    req.op = Op::bye;
  } else if (cmd == "help") {
    req.op = Op::help;
  } else if (cmd == "ping") {
    req.op = Op::ping;
  } else {
    return RequestError{ErrorCode::unknown_op,
                        "unknown command /" + std::string(cmd) + " (try /help)", {}};
  }
  return req;
}

std::string encode_json(const ordered_json& body) {
  std::string s = body.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  s += '\n';
  return s;
}

namespace {

std::string str(const ordered_json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  return it->dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

void message_line(std::string& out, const ordered_json& m) {
  out += '[' + str(m, "room") + "] " + str(m, "from") + ": ";
  auto text = m.find("text");
  if (text != m.end() && text->is_string()) out += text->get<std::string>();
  auto data = m.find("data");
  if (data != m.end() && !data->is_null()) {
    if (text != m.end()) out += ' ';
    out += data->dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  }
  out += '\n';
}

// A body's field, or null when it has none. (A const operator[] on a missing key is undefined
// behaviour, an assertion in nlohmann's debug builds, and value() throws on a field of
// another type: a body missing a list or holding a flag of the wrong type renders as if it
// were empty or false, never crashes.)
const ordered_json& field(const ordered_json& b, const char* key) {
  static const ordered_json none;
  if (!b.is_object()) return none;
  auto it = b.find(key);
  return it == b.end() ? none : *it;
}
bool flag(const ordered_json& b, const char* key) {
  const ordered_json& f = field(b, key);
  return f.is_boolean() && f.get<bool>();
}
// A count is an unsigned integer, as roomd writes it: a float (1e300 does not fit, and its
// conversion would be undefined) or a negative one reads as 0.
std::uint64_t count_of(const ordered_json& b, const char* key) {
  const ordered_json& f = field(b, key);
  return f.is_number_unsigned() ? f.get<std::uint64_t>() : 0;
}

std::string join_nicks(const ordered_json& list) {
  std::string s;
  for (const auto& n : list) {
    if (!s.empty()) s += ", ";
    s += n.is_string() ? n.get<std::string>() : n.dump();
  }
  return s;
}

std::string last_nick(const ordered_json& list) {
  return list.empty() || !list.back().is_string() ? std::string() : list.back().get<std::string>();
}

// "* lobby: 12 joined (alice, bob, ...), 3 left (carol), 1 renamed (dan -> dave); 1009 members"
std::string summary_line(const ordered_json& b) {
  auto part = [&](const char* count_key, const char* verb, const char* list_key) {
    std::uint64_t n = count_of(b, count_key);
    if (n == 0) return std::string();
    static const ordered_json none = ordered_json::array();
    auto it = b.find(list_key);
    const ordered_json& list = it != b.end() && it->is_array() ? *it : none;
    std::string names;
    for (const auto& item : list) {
      if (!names.empty()) names += ", ";
      if (item.is_object()) names += str(item, "old") + " -> " + str(item, "nick");
      else names += item.is_string() ? item.get<std::string>() : item.dump();
    }
    if (n > list.size()) names += names.empty() ? "..." : ", ...";
    return std::to_string(n) + " " + verb + (names.empty() ? "" : " (" + names + ")");
  };
  std::string out = "* " + str(b, "room") + ":";
  bool first = true;
  for (const auto& p : {part("joins", "joined", "joined"), part("leaves", "left", "left"),
                        part("renames", "renamed", "renamed")}) {
    if (p.empty()) continue;
    out += (first ? " " : ", ") + p;
    first = false;
  }
  return out + "; " + str(b, "count") + " members\n";
}

}  // namespace

std::string render_text(const ordered_json& b) {
  const std::string op = str(b, "op");
  std::string out;
  if (op == "message") {
    message_line(out, b);
  } else if (op == "presence") {
    const std::string event = str(b, "event"), nick = str(b, "nick"), room = str(b, "room");
    if (event == "join") out = "* " + nick + " joined " + room + "\n";
    else if (event == "leave") out = "* " + nick + " left " + room + "\n";
    else if (event == "nick") out = "* " + str(b, "old") + " is now known as " + nick + " in " + room + "\n";
    else if (event == "topic") out = "* " + nick + " set the topic of " + room + ": " + str(b, "topic") + "\n";
    else if (event == "summary") out = summary_line(b);
  } else if (op == "error") {
    out = "! " + str(b, "code") + ": " + str(b, "message") + "\n";
  } else if (op == "joined") {
    out = "* you joined " + str(b, "room");
    if (auto t = str(b, "topic"); !t.empty()) out += " (topic: " + t + ")";
    if (flag(b, "more")) {
      out += "; " + str(b, "count") + " members: " + join_nicks(field(b, "members")) + ", ... (/who " + str(b, "room") +
             " " + last_nick(field(b, "members")) + " for more)\n";
    } else {
      out += "; members: " + join_nicks(field(b, "members")) + "\n";
    }
    for (const auto& m : field(b, "history")) message_line(out, m);
  } else if (op == "left") {
    out = "* you left " + str(b, "room") + "\n";
  } else if (op == "ok") {
    if (b.contains("nick")) out = "* you are now known as " + str(b, "nick") + "\n";
    else if (!b.contains("seq")) out = "* ok\n";
  } else if (op == "rooms") {
    out = "* rooms:\n";
    for (const auto& r : field(b, "rooms")) {
      out += "  " + str(r, "name") + " (" + str(r, "members") + " members";
      if (flag(r, "keyed")) out += ", key required";
      out += ")";
      if (auto t = str(r, "topic"); !t.empty()) out += " " + t;
      out += '\n';
    }
  } else if (op == "who") {
    out = "* " + str(b, "room") + ": " + join_nicks(field(b, "members"));
    if (flag(b, "more"))
      out += ", ... (" + str(b, "count") + " members; /who " + str(b, "room") + " " + last_nick(field(b, "members")) +
             " for more)";
    out += "\n";
  } else if (op == "history") {
    for (const auto& m : field(b, "messages")) message_line(out, m);
    if (field(b, "messages").empty()) out = "* no messages\n";
    else if (flag(b, "more")) out += "* (older messages exist)\n";
  } else if (op == "whisper") {
    out = "*" + str(b, "from") + "* " + str(b, "text") + "\n";
  } else if (op == "welcome") {
    out = "* " + str(b, "motd") + "\n";
  } else if (op == "pong") {
    out = "* pong\n";
  } else if (op == "echo") {
    out = str(b, "text") + "\n";
  } else if (op == "bye") {
    out = "* bye\n";
  } else if (op == "system") {
    const std::string event = str(b, "event");
    out = "! system: " + event;
    if (b.contains("room")) out += " " + str(b, "room");
    if (b.contains("count")) out += " (" + str(b, "count") + " messages skipped)";
    if (auto ms = b.find("reconnect_ms"); ms != b.end() && ms->is_number_unsigned())  // lame_duck
      out += ": this server is going away; you will be disconnected in about " +
             std::to_string((ms->get<std::uint64_t>() + 999) / 1000) + " s, then connect again";
    if (b.contains("old")) out += " " + str(b, "old") + " -> " + str(b, "nick");
    if (auto reason = str(b, "reason"); !reason.empty()) out += ": " + reason;
    out += '\n';
  } else if (op == "help") {
    out = std::string(text_help());
  }
  // "ping" from the server renders as nothing: a person at netcat cannot answer it, and the
  // idle timeout, not the ping, is what ends a silent connection.
  return out;
}

ordered_json request_json(const Request& r) {
  ordered_json j;
  j["op"] = op_name(r.op);
  if (r.id) j["id"] = *r.id;
  switch (r.op) {
    case Op::nick: j["nick"] = r.nick; break;
    case Op::join:
      j["room"] = r.room;
      if (r.key) j["key"] = *r.key;
      if (r.since) j["since"] = *r.since;
      if (r.epoch) j["epoch"] = *r.epoch;
      break;
    case Op::leave: j["room"] = r.room; break;
    case Op::who:
      j["room"] = r.room;
      if (r.after) j["after"] = *r.after;
      if (r.limit) j["limit"] = *r.limit;
      break;
    case Op::say:
      j["room"] = r.room;
      if (r.text) j["text"] = *r.text;
      if (!r.data.is_null()) j["data"] = r.data;
      if (r.msg_id) j["msg_id"] = *r.msg_id;
      break;
    case Op::whisper:
      j["to"] = r.to;
      j["text"] = r.text.value_or("");
      if (r.msg_id) j["msg_id"] = *r.msg_id;
      break;
    case Op::topic:
      j["room"] = r.room;
      j["topic"] = r.topic;
      break;
    case Op::history:
      j["room"] = r.room;
      if (r.before) j["before"] = *r.before;
      if (r.limit) j["limit"] = *r.limit;
      if (r.search) j["search"] = *r.search;
      break;
    case Op::echo: j["text"] = r.text.value_or(""); break;
    case Op::rooms:
    case Op::ping:
    case Op::bye:
    case Op::help:
    case Op::stats: break;
  }
  return j;
}

std::string_view text_help() {
  return "* commands:\n"
         "  /nick NICK            change your nick\n"
         "  /join ROOM [KEY]      join (or create) a room; it becomes your current room\n"
         "  /leave [ROOM]         leave a room (default: the current one)\n"
         "  /rooms                list rooms\n"
         "  /who [ROOM] [AFTER]   list members (a page; the next starts after the nick AFTER)\n"
         "  /msg NICK TEXT        whisper to one person\n"
         "  /topic ROOM TEXT      set a room's topic\n"
         "  /history [ROOM] [N]   show the last N messages\n"
         "  /search ROOM WORDS    search a room's history\n"
         "  /quit  (or Bye)       leave\n"
         "  any other line is said in the current room\n";
}

}  // namespace roomd
