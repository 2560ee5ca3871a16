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

const Bytes& Event::bytes(Mode mode) const {
  Bytes& slot = mode == Mode::json ? json_ : text_;
  if (!slot) slot = Bytes::make(mode == Mode::json ? encode_json(body()) : render_text(body()));
  return slot;
}

}  // namespace roomd
