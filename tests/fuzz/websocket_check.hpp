// Shared by the two WebSocket targets: a channel fed bytes in fuzzer-chosen splits, with a
// small message limit. Whatever comes, it must not crash, and each message it yields is valid
// UTF-8 (a text message that is not closes the channel with 1007) and within the limit.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_input.hpp"
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
inline void run_channel(std::string_view head, std::string_view bytes, const std::vector<std::size_t>& sizes,
                        std::uint8_t steer) {
  roomd::WebSocketChannel ws(site(), kMaxHead);
  std::deque<std::string> messages;
  auto feed = [&](std::string_view chunk) {
    ws.feed(chunk, messages, kMaxMessage);
    if ((steer & 1) && ws.status() == roomd::WebSocketChannel::Status::open) ws.ping();
    (void)ws.take_output();
  };
  if (!head.empty()) feed(head);
  in_chunks(bytes, sizes, feed);
  if ((steer & 2) && ws.status() == roomd::WebSocketChannel::Status::open) ws.close(1000, "bye");
  (void)ws.take_output();
  for (const auto& m : messages) {
    FUZZ_CHECK(m.size() <= kMaxMessage, m);
    FUZZ_CHECK(roomd::valid_utf8(m), m);
  }
  using Status = roomd::WebSocketChannel::Status;
  if (ws.status() == Status::answered || ws.status() == Status::closing) FUZZ_CHECK(!ws.why().empty(), head);
}

}  // namespace fuzz
