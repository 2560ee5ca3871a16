// A server's WebSocket text frame (RFC 6455 §5.2: FIN, opcode 1, unmasked) around one JSON
// line, made with wslay's frame writer. A server's frames are never masked, so the bytes are
// the same for every recipient: a broadcast is framed once and shared, as its line is.
#pragma once

#include <string>
#include <string_view>

namespace roomd {

// `payload` without its line ending; the frame's header and payload, ready to write.
std::string websocket_text_frame(std::string_view payload);

}  // namespace roomd
