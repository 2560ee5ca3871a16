// WebSocket text frames through wslay_frame_send (libwslay-dev), collected into a string.
#include "roomd/protocol/websocket_frame.hpp"

#include <wslay/wslay.h>

#include <stdexcept>

namespace roomd {

namespace {
ssize_t collect(const uint8_t* data, size_t len, int /*flags*/, void* user) {
  static_cast<std::string*>(user)->append(reinterpret_cast<const char*>(data), len);
  return static_cast<ssize_t>(len);
}
ssize_t no_recv(uint8_t*, size_t, int, void*) { return WSLAY_ERR_WANT_READ; }
int no_mask(uint8_t*, size_t, void*) { return -1; }  // a server never masks
}  // namespace

std::string websocket_text_frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 10);
  wslay_frame_callbacks callbacks{collect, no_recv, no_mask};
  wslay_frame_context_ptr ctx = nullptr;
  if (wslay_frame_context_init(&ctx, &callbacks, &out) != 0) throw std::bad_alloc();
  wslay_frame_iocb iocb{};
  iocb.fin = 1;
  iocb.opcode = WSLAY_TEXT_FRAME;
  iocb.mask = 0;
  iocb.payload_length = payload.size();
  iocb.data = reinterpret_cast<const uint8_t*>(payload.data());
  iocb.data_length = payload.size();
  // The callback takes everything, so one call writes the whole frame.
  ssize_t sent = wslay_frame_send(ctx, &iocb);
  wslay_frame_context_free(ctx);
  if (sent < 0 || static_cast<std::size_t>(sent) != payload.size()) throw std::runtime_error("wslay_frame_send failed");
  return out;
}

}  // namespace roomd
