// Framer: cuts a byte stream into lines ("\n" or "\r\n"), keeping only the unfinished tail.
//
//   bytes in:   {"op":"ping"}\n{"op":"sa      y"}\r\n  <oversized ........ \n
//               '------------'  '-----+-----------'    '--- discarded, one error ---'
//                  frame           partial, kept          frame_too_large
//
// A line longer than max_frame_bytes (counted without its line ending) is reported once as
// too large and the rest of it is skipped as it arrives, never buffered. Empty lines are
// dropped here so no layer above sees them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace roomd {

class Framer {
 public:
  explicit Framer(std::size_t max_frame_bytes) : max_(max_frame_bytes) {}

  void set_max_frame_bytes(std::size_t max) { max_ = max; }

  // Calls on_frame(std::string_view) for each complete line and on_overlong() once for each
  // line that is too long. The view is valid only during the call.
  template <class OnFrame, class OnOverlong>
  void feed(std::string_view bytes, OnFrame&& on_frame, OnOverlong&& on_overlong);

  // Bytes held for an unfinished line (for tests and memory accounting).
  std::size_t buffered() const { return partial_.size(); }

 private:
  // The longest tail we may hold: a full frame plus a '\r' whose '\n' has not arrived.
  std::size_t hold_limit() const { return max_ + 1; }

  std::size_t max_;
  std::string partial_;
  bool discarding_ = false;
};

template <class OnFrame, class OnOverlong>
void Framer::feed(std::string_view bytes, OnFrame&& on_frame, OnOverlong&& on_overlong) {
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    if (discarding_) {
      if (nl == std::string_view::npos) return;  // still inside the oversized line
      discarding_ = false;
      bytes.remove_prefix(nl + 1);
      continue;
    }
    if (nl == std::string_view::npos) {
      if (partial_.size() + bytes.size() > hold_limit()) {
        partial_.clear();
        partial_.shrink_to_fit();
        discarding_ = true;
        on_overlong();
        return;
      }
      partial_.append(bytes);
      return;
    }
    std::string_view line = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    if (!partial_.empty()) {
      if (partial_.size() + line.size() > hold_limit()) {
        partial_.clear();
        on_overlong();
        continue;
      }
      partial_.append(line);
      line = partial_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_) on_overlong();
    else if (!line.empty()) on_frame(line);
    if (!partial_.empty()) {
      partial_.clear();
      if (partial_.capacity() > 4096) partial_.shrink_to_fit();  // idle clients hold nothing
    }
  }
}

}  // namespace roomd
