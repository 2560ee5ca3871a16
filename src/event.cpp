// Event: lazy, once-per-mode serialization of what the server says.
#include "roomd/event.hpp"

#include "roomd/codec.hpp"

namespace roomd {

const Bytes& Event::bytes(Mode mode) const {
  Bytes& slot = mode == Mode::json ? json_ : text_;
  if (!slot) slot = std::make_shared<const std::string>(mode == Mode::json ? encode_json(body_)
                                                                           : render_text(body_));
  return slot;
}

}  // namespace roomd
