// Event: lazy, once-per-mode serialization of what the server says.
#include "roomd/protocol/event.hpp"

#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/websocket_frame.hpp"

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
  switch (mode) {
    case Mode::json: break;
    case Mode::text:
      if (!text_) text_ = Bytes::make(render_text(body()));
      return text_;
    case Mode::websocket:
      if (!websocket_) {
        std::string_view line = *bytes(Mode::json);
        if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
        websocket_ = Bytes::make(websocket_text_frame(line));
      }
      return websocket_;
  }
  if (!json_) json_ = Bytes::make(encode_json(body()));
  return json_;
}

}  // namespace roomd
