// A WebSocketChannel fed a valid upgrade request, then the fuzzer's bytes as frames, in
// fuzzer-chosen splits, with a 64-byte message limit (see websocket_check.hpp).
// Input: [steer][split count][split sizes...][frame bytes...]
#include <cstddef>
#include <cstdint>

#include "websocket_check.hpp"

namespace {
constexpr std::string_view kUpgrade =
    "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:7080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:7080\r\n\r\n";
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  const std::uint8_t steer = in.byte();
  const auto sizes = in.splits();
  fuzz::run_channel(kUpgrade, in.rest(), sizes, steer);
  return 0;
}
