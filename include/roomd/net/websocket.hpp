// WebSocket (RFC 6455) for a connection of a `websocket = true` listener, on plaintext: what
// comes in is what TCP read, or what TLS decrypted. Two stages:
//
//   handshake  an HTTP/1.1 request head, parsed with http-parser: a GET with
//              `Upgrade: websocket` from an allowed Origin is answered 101 and the channel is
//              open; any other GET is answered from the web client's files (or 404) and the
//              connection closes after the answer; anything else gets its 4xx and closes.
//   open       frames, read with wslay's event API: each complete text message is one
//              protocol frame for the connection to serve; pings are answered, a close is
//              answered and ends the channel; a protocol error (1002), an oversized message
//              (1009), invalid UTF-8 (1007) or a binary message (1003) closes it.
//
// The channel makes only control frames and HTTP answers (take_output); the connection's
// data frames are the events' shared WebSocket bytes (protocol/websocket_frame.hpp), so a
// broadcast is framed once for every browser in the room.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/protocol/event.hpp"

struct wslay_event_context;
struct http_parser;

namespace roomd {

// What every connection of the WebSocket listeners shares: built at start and on reload, and
// held by each connection from its accept, as its TLS context is.
struct WebSocketSite {
  // Origins allowed to upgrade ("https://chat.example.com"); empty: the Origin's host[:port]
  // must be the request's Host. A request without Origin (not a browser) is allowed.
  std::vector<std::string> origins;
  // The web client: each file's whole HTTP answer, made once ("/" is index.html).
  std::map<std::string, Bytes, std::less<>> files;
  std::string web_root;  // where they were read from (for the log and the 404's text)

  // Reads every regular file of `web_root` (not its subfolders). A missing folder gives a site
  // without files; `warning` then says why.
  static std::shared_ptr<const WebSocketSite> load(std::vector<std::string> origins, std::string web_root,
                                                   std::string* warning);
};

// The value of Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2).
std::string websocket_accept_key(std::string_view client_key);

class WebSocketChannel {
 public:
  enum class Status {
    handshake,  // the request head is not complete yet
    open,       // upgraded: messages flow
    answered,   // an HTTP answer (a file, or a refusal) is in the output: send it, then close
    closing,    // a close frame was received, or sent on an error: send the output, then close
  };

  WebSocketChannel(std::shared_ptr<const WebSocketSite> site, std::size_t max_head_bytes);
  ~WebSocketChannel();
  WebSocketChannel(const WebSocketChannel&) = delete;
  WebSocketChannel& operator=(const WebSocketChannel&) = delete;

  // Plaintext from the peer. Complete text messages are appended to `messages`; output to
  // send (the HTTP answer, pongs, a close frame) waits in take_output. `max_message_bytes`:
  // a message longer than this closes the channel with 1009.
  Status feed(std::string_view bytes, std::deque<std::string>& messages, std::size_t max_message_bytes);
  // A ping to the peer (an idle browser answers with a pong, which counts as activity).
  void ping();
  // Our close frame, once (nothing if one was sent or the channel is not open).
  void close(std::uint16_t code, std::string_view reason);
  std::string take_output();

  Status status() const { return status_; }
  // Why the channel is answered or closing, for the log ("Origin not allowed", "close 1009").
  const std::string& why() const { return why_; }
  // Whether the handshake was a refused upgrade (for the counters).
  bool refused() const { return refused_; }
  // Whole messages received since the upgrade, pings and pongs included (the idle timeout's
  // activity).
  std::uint64_t messages_received() const { return messages_received_; }

 private:
  friend struct WebSocketCallbacks;
  friend struct WebSocketHead;
  void on_head_complete();
  void answer(int status, std::string_view text, std::string_view extra_headers = "");
  void open_frames();
  Status read_frames(std::string_view bytes, std::deque<std::string>& messages, std::size_t max_message_bytes);
  void flush_frames();
  void note_closed(std::string why);

  std::shared_ptr<const WebSocketSite> site_;
  std::size_t max_head_bytes_;
  Status status_ = Status::handshake;
  std::string why_;
  bool refused_ = false;
  std::string output_;

  // The request head (handshake stage).
  std::unique_ptr<http_parser> parser_;
  std::size_t head_bytes_ = 0;
  bool head_done_ = false;
  bool head_too_large_ = false;
  std::string url_;
  std::map<std::string, std::string> headers_;  // lower-case names; repeated ones joined with ", "
  std::string field_;
  std::string value_;
  bool in_value_ = false;

  // Frames (open stage).
  wslay_event_context* frames_ = nullptr;
  std::string_view input_;  // what wslay's read callback takes from
  std::deque<std::string>* messages_ = nullptr;
  int fragments_ = 0;  // data frames of the message being read
  std::uint64_t messages_received_ = 0;
};

}  // namespace roomd
