// Wire: the server's bodies and lines. See wire.hpp.
#include "roomd/protocol/wire.hpp"

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

ordered_json error_body(ErrorCode code, std::string_view message, const std::optional<nlohmann::json>& id) {
  ordered_json e;
  e["op"] = "error";
  if (id) e["id"] = *id;
  e["code"] = to_string(code);
  e["message"] = message;
  return e;
}

}  // namespace wire
}  // namespace roomd
