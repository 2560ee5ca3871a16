// A WebSocketChannel fed the fuzzer's bytes from the first one: the HTTP request head itself
// (http-parser and the upgrade checks), then whatever frames follow it, in fuzzer-chosen
// splits, with a 1-KB head limit and a 64-byte message limit (see websocket_check.hpp).
// Input: [steer][split count][split sizes...][head and frame bytes...]
#include <cstddef>
#include <cstdint>

#include "websocket_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  const std::uint8_t steer = in.byte();
  const auto sizes = in.splits();
  fuzz::run_channel({}, in.rest(), sizes, steer);
  return 0;
}
