// Framer: cuts a byte stream into lines ("\n" or "\r\n"), keeping only what it has not cut.
//
//   bytes in:   {"op":"ping"}\n{"op":"sa      y"}\r\n  <oversized ........ \n
//               '------------'  '-----+-----------'    '--- discarded, one error ---'
//                  frame           partial, kept          frame_too_large
//
// A line longer than max_frame_bytes (counted without its line ending) is reported once as
// too large and the rest of it is skipped as it arrives, never buffered. Empty lines are
// dropped here so no layer above sees them.
//
// The reader may stop it between frames (a held or backed-up connection, as Redis stops
// parsing a blocked client): what was not cut yet stays here, unread, and resume() goes on
// from it. That tail is bounded by what was read, since a stopped reader stops reading.
//
//   unread_:  [ cut already (unread_pos_) | frames not yet cut ... | partial line ]
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
  void feed(std::string_view bytes, OnFrame&& on_frame, OnOverlong&& on_overlong) {
    feed(bytes, [] { return true; }, on_frame, on_overlong);
  }
  // The same, asking may_go() before each line: when it says no, the rest is kept unread.
  // Returns whether everything was cut.
  template <class MayGo, class OnFrame, class OnOverlong>
  bool feed(std::string_view bytes, MayGo&& may_go, OnFrame&& on_frame, OnOverlong&& on_overlong);
  // Goes on with what a stopped feed kept. Returns whether everything was cut.
  template <class MayGo, class OnFrame, class OnOverlong>
  bool resume(MayGo&& may_go, OnFrame&& on_frame, OnOverlong&& on_overlong);

  // Bytes read but not yet cut into frames (kept while stopped).
  std::size_t unread() const { return unread_.size() - unread_pos_; }
  // Bytes held for an unfinished line (for tests and memory accounting).
  std::size_t buffered() const { return partial_.size(); }

 private:
  // The longest tail we may hold: a full frame plus a '\r' whose '\n' has not arrived.
  std::size_t hold_limit() const { return max_ + 1; }
  // Cuts frames off the front of `bytes` while may_go(); false if it stopped.
  template <class MayGo, class OnFrame, class OnOverlong>
  bool cut(std::string_view& bytes, MayGo& may_go, OnFrame& on_frame, OnOverlong& on_overlong);

  std::size_t max_;
  std::string partial_;
  bool discarding_ = false;
  std::string unread_;  // kept by a stopped feed, from unread_pos_ on
  std::size_t unread_pos_ = 0;
};

template <class MayGo, class OnFrame, class OnOverlong>
bool Framer::feed(std::string_view bytes, MayGo&& may_go, OnFrame&& on_frame, OnOverlong&& on_overlong) {
  if (unread() > 0) {  // behind what is kept: keep order
    unread_.append(bytes);
    return resume(may_go, on_frame, on_overlong);
  }
  if (cut(bytes, may_go, on_frame, on_overlong)) return true;
  unread_.assign(bytes);
  unread_pos_ = 0;
  return false;
}

template <class MayGo, class OnFrame, class OnOverlong>
bool Framer::resume(MayGo&& may_go, OnFrame&& on_frame, OnOverlong&& on_overlong) {
  std::string_view rest(unread_);
  rest.remove_prefix(unread_pos_);
  // The views handed out point into unread_, which nothing appends to while cutting.
  bool all = cut(rest, may_go, on_frame, on_overlong);
  unread_pos_ = unread_.size() - rest.size();
  if (all) {
    unread_.clear();
    unread_pos_ = 0;
    if (unread_.capacity() > 4096) unread_.shrink_to_fit();  // idle clients hold nothing
  }
  return all;
}

template <class MayGo, class OnFrame, class OnOverlong>
bool Framer::cut(std::string_view& bytes, MayGo& may_go, OnFrame& on_frame, OnOverlong& on_overlong) {
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    if (discarding_) {
      if (nl == std::string_view::npos) {  // still inside the oversized line
        bytes = {};
        return true;
      }
      discarding_ = false;
      bytes.remove_prefix(nl + 1);
      continue;
    }
    if (nl == std::string_view::npos) {
      if (partial_.size() + bytes.size() > hold_limit()) {
        if (!may_go()) return false;
        partial_.clear();
        partial_.shrink_to_fit();
        discarding_ = true;
        bytes = {};
        on_overlong();
        return true;
      }
      partial_.append(bytes);
      bytes = {};
      return true;
    }
    if (!may_go()) return false;
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
  return true;
}

}  // namespace roomd
