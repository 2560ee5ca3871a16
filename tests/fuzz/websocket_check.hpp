// Shared by the two WebSocket targets: a channel fed bytes in fuzzer-chosen splits, with a
// small message limit. Whatever comes, it must not crash, and each message it yields is valid
// UTF-8 (a text message that is not closes the channel with 1007) and within the limit,
// and the splits change nothing: the same messages and status as all the bytes at once.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_input.hpp"
#include "roomd/net/http_text.hpp"
#include "roomd/net/websocket.hpp"
#include "roomd/protocol/codec.hpp"

namespace fuzz {

inline constexpr std::size_t kMaxMessage = 64;
inline constexpr std::size_t kMaxHead = 1024;

inline std::shared_ptr<const roomd::WebSocketSite> site() {
  static const auto s = [] {
    auto site = std::make_shared<roomd::WebSocketSite>();
    site->files.emplace("/", roomd::Bytes::make(roomd::http_answer(200, "text/html", "<p>hi</p>")));
    site->files.emplace("/app.js", roomd::Bytes::make(roomd::http_answer(200, "text/javascript", "1;")));
    return std::shared_ptr<const roomd::WebSocketSite>(site);
  }();
  return s;
}

// Feeds `head` (if any) then `bytes` in the splits; pings or closes when `steer` says so.
// The messages and the status must be those of a channel fed everything at once, unpinged.
inline void run_channel(std::string_view head, std::string_view bytes, const std::vector<std::size_t>& sizes,
                        std::uint8_t steer) {
  using Status = roomd::WebSocketChannel::Status;
  roomd::WebSocketChannel whole(site(), kMaxHead);
  std::deque<std::string> whole_messages;
  {
    std::string all(head);
    all += bytes;
    whole.feed(all, whole_messages, kMaxMessage);
  }

  roomd::WebSocketChannel ws(site(), kMaxHead);
  std::deque<std::string> messages;
  auto feed = [&](std::string_view chunk) {
    ws.feed(chunk, messages, kMaxMessage);
    if ((steer & 1) && ws.status() == Status::open) ws.ping();
    (void)ws.take_output();
  };
  if (!head.empty()) feed(head);
  in_chunks(bytes, sizes, feed);
  for (const auto& m : messages) {
    FUZZ_CHECK(m.size() <= kMaxMessage, m);
    FUZZ_CHECK(roomd::valid_utf8(m), m);
  }
  if (ws.status() == Status::answered || ws.status() == Status::closing) FUZZ_CHECK(!ws.why().empty(), ws.why());
  // Two verdicts may depend on the pieces: a head near the limit (the channel counts each
  // http-parser callback's separators), and wslay 1.1.1's UTF-8 check of a close frame's
  // reason, which skips the first 2 bytes of every piece of the payload, not only the status
  // code (so a close may end in 1007 or not, or sooner or later).
  // The messages depend on the pieces only through the first.
  const bool head_431 = ws.why().starts_with("431") || whole.why().starts_with("431");
  if (!head_431) FUZZ_CHECK(messages == whole_messages, ws.why() + " / " + whole.why());
  auto piece_dependent = [](const std::string& why) {
    return why.starts_with("431") || why == "closed with 1007";
  };
  if (!piece_dependent(ws.why()) && !piece_dependent(whole.why()))
    FUZZ_CHECK(ws.status() == whole.status(), ws.why() + " / " + whole.why());
  if ((steer & 2) && ws.status() == Status::open) ws.close(1000, "bye");
  (void)ws.take_output();
}

}  // namespace fuzz
