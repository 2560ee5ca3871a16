// Event: lazy, once-per-mode serialization of what the server says.
#include "roomd/protocol/event.hpp"

#include "roomd/protocol/codec.hpp"

namespace roomd {

std::shared_ptr<const Event> Event::from_json_line(std::string line) {
  std::shared_ptr<Event> e(new Event());
  e->body_ready_ = false;
  e->json_ = Bytes::make(std::move(line));
  return e;
}

const ordered_json& Event::body() const {
  if (!body_ready_) {
    std::string_view line = *json_;
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    body_ = ordered_json::parse(line, nullptr, false);
    body_ready_ = true;
  }
  return body_;
}

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

const Bytes& Event::bytes(Mode mode) const {
  Bytes& slot = mode == Mode::json ? json_ : text_;
  if (!slot) slot = Bytes::make(mode == Mode::json ? encode_json(body()) : render_text(body()));
  return slot;
}

}  // namespace roomd
