// Shared by the fuzz targets: reading the few leading bytes that steer a run (split sizes,
// limits) off the front of libFuzzer's input, and a check that stops the run on a broken
// invariant, printing why (libFuzzer then saves the input as a crash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace fuzz {

// The input, with steering bytes taken off its front as they are asked for; a byte asked of
// an empty input is 0.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  std::uint8_t byte() {
    if (rest_.empty()) return 0;
    auto b = static_cast<std::uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  // 0-7 split sizes (1-256 bytes each, used in turn): the rest of the input is fed in chunks
  // of these sizes; none means all at once.
  std::vector<std::size_t> splits() {
    std::vector<std::size_t> sizes(byte() % 8);
    for (auto& s : sizes) s = std::size_t{byte()} + 1;
    return sizes;
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

// Calls feed(chunk) for the bytes in chunks of the given sizes, in turn.
template <class Feed>
void in_chunks(std::string_view bytes, const std::vector<std::size_t>& sizes, Feed&& feed) {
  if (sizes.empty()) {
    feed(bytes);
    return;
  }
  for (std::size_t i = 0; !bytes.empty(); ++i) {
    std::size_t n = sizes[i % sizes.size()];
    if (n > bytes.size()) n = bytes.size();
    feed(bytes.substr(0, n));
    bytes.remove_prefix(n);
  }
}

[[noreturn]] inline void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  if (!detail.empty()) std::fprintf(stderr, "  on: %.*s\n", static_cast<int>(detail.size() > 400 ? 400 : detail.size()), detail.data());
  std::abort();
}

}  // namespace fuzz

#define FUZZ_CHECK(cond, detail) \
  do {                           \
    if (!(cond)) ::fuzz::fail(#cond, (detail)); \
  } while (0)
