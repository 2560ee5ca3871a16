// WebSocket: the upgrade's request head on http-parser (libhttp-parser-dev), frames on wslay
// (libwslay-dev), the accept key on OpenSSL's SHA-1 and base64. See websocket.hpp.
#include "roomd/net/websocket.hpp"

#include <http_parser.h>
#include <openssl/evp.h>
#include <wslay/wslay.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "roomd/net/http_text.hpp"

namespace roomd {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Whether a comma-separated header value holds `token` (case-insensitive), as Connection's
// "keep-alive, Upgrade" does.
bool has_token(std::string_view value, std::string_view token) {
  std::string v = lower(value);
  std::size_t pos = 0;
  while (pos <= v.size()) {
    std::size_t end = v.find(',', pos);
    if (end == std::string::npos) end = v.size();
    std::string_view item(v.data() + pos, end - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == token) return true;
    pos = end + 1;
  }
  return false;
}

std::string content_type_of(const std::filesystem::path& file) {
  const std::string ext = lower(file.extension().string());
  if (ext == ".html" || ext == ".htm") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".json") return "application/json";
  return "text/plain; charset=utf-8";
}

// The Origin's "host[:port]" (scheme and default port taken off), lower case.
std::string origin_authority(std::string_view origin) {
  std::string o = lower(origin);
  std::string_view v = o;
  std::string_view default_port;
  if (v.starts_with("http://")) v.remove_prefix(7), default_port = ":80";
  else if (v.starts_with("https://")) v.remove_prefix(8), default_port = ":443";
  else return "";
  if (v.ends_with(default_port)) v.remove_suffix(default_port.size());
  return std::string(v);
}

// "127.0.0.1:7080", "[::1]:7080", "localhost:7080": a host whose address no DNS answer
// decides (the host part before the port is an IP literal, or localhost).
bool unbindable_host(std::string_view authority) {
  std::string_view host = authority;
  if (host.starts_with("[")) return host.find(']') != std::string_view::npos;  // an IPv6 literal
  host = host.substr(0, host.rfind(':') == std::string_view::npos ? host.size() : host.rfind(':'));
  if (host == "localhost") return true;
  return !host.empty() && host.find_first_not_of("0123456789.") == std::string_view::npos;
}

std::string host_authority(std::string_view host) {
  std::string h = lower(host);
  for (std::string_view default_port : {":80", ":443"})
    if (h.ends_with(default_port)) h.resize(h.size() - default_port.size());
  return h;
}

}  // namespace

std::string websocket_accept_key(std::string_view client_key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input(client_key);
  input += kGuid;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1)
    throw std::runtime_error("SHA-1 failed");
  unsigned char encoded[64];
  int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_len));
  return std::string(reinterpret_cast<char*>(encoded), static_cast<std::size_t>(n));
}

std::shared_ptr<const WebSocketSite> WebSocketSite::load(std::vector<std::string> origins, std::string web_root,
                                                         std::string* warning) {
  auto site = std::make_shared<WebSocketSite>();
  site->origins = std::move(origins);
  site->web_root = std::move(web_root);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::directory_iterator dir(site->web_root, ec);
  if (ec) {
    if (warning) *warning = "web client folder " + site->web_root + ": " + ec.message();
    return site;
  }
  constexpr std::uintmax_t kMaxFileBytes = 1 << 20;
  for (const auto& entry : dir) {
    const std::string name = entry.path().filename().string();
    // Not hidden files or editor backups (".env", "index.html~"); nothing big.
    if (name.starts_with(".") || name.ends_with("~") || !entry.is_regular_file(ec)) continue;
    if (entry.file_size(ec) > kMaxFileBytes || ec) {
      if (warning) *warning += (warning->empty() ? "" : "; ") + name + " skipped (over 1 MiB)";
      continue;
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream body;
    body << in.rdbuf();
    if (!in) continue;
    const std::string answer = http_answer(200, content_type_of(entry.path()), body.str(), "Cache-Control: no-cache\r\n");
    site->files.emplace("/" + name, Bytes::make(answer));
    if (name == "index.html") site->files.emplace("/", Bytes::make(answer));
  }
  return site;
}

// ---- wslay's callbacks -------------------------------------------------------------------

struct WebSocketCallbacks {
  // Each buffered fragment costs wslay three allocations (~100 bytes of heap, even for a
  // 1-byte fragment), and its 1009 check counts payload only: so the fragments of one
  // message are capped too. Browsers send a message in one frame.
  static constexpr int kMaxFragments = 1024;
  static void on_frame_start(wslay_event_context_ptr ctx, const wslay_event_on_frame_recv_start_arg* arg, void* user) {
    auto* self = static_cast<WebSocketChannel*>(user);
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) self->fragments_ = 1;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME && ++self->fragments_ > kMaxFragments) {
      static constexpr std::string_view kWhy = "too many fragments";
      wslay_event_queue_close(ctx, WSLAY_CODE_MESSAGE_TOO_BIG, reinterpret_cast<const uint8_t*>(kWhy.data()), kWhy.size());
      wslay_event_shutdown_read(ctx);
    }
  }
  static ssize_t recv(wslay_event_context_ptr ctx, uint8_t* buf, size_t len, int, void* user) {
    auto* self = static_cast<WebSocketChannel*>(user);
    if (self->input_.empty()) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
      return -1;
    }
    std::size_t n = std::min(len, self->input_.size());
    std::copy_n(self->input_.data(), n, buf);
    self->input_.remove_prefix(n);
    return static_cast<ssize_t>(n);
  }
  static ssize_t send(wslay_event_context_ptr, const uint8_t* data, size_t len, int, void* user) {
    static_cast<WebSocketChannel*>(user)->output_.append(reinterpret_cast<const char*>(data), len);
    return static_cast<ssize_t>(len);
  }
  static void on_message(wslay_event_context_ptr ctx, const wslay_event_on_msg_recv_arg* arg, void* user) {
    auto* self = static_cast<WebSocketChannel*>(user);
    ++self->messages_received_;
    switch (arg->opcode) {
      case WSLAY_TEXT_FRAME:
        self->messages_->emplace_back(reinterpret_cast<const char*>(arg->msg), arg->msg_length);
        break;
      case WSLAY_BINARY_FRAME: {
        static constexpr std::string_view kWhy = "binary messages are not accepted: send JSON as text";
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, reinterpret_cast<const uint8_t*>(kWhy.data()),
                                kWhy.size());
        // Nothing after it is read, as after wslay's own closes (1002, 1007, 1009): else
        // the messages behind it in the same read would still come out.
        wslay_event_shutdown_read(ctx);
        break;
      }
      case WSLAY_CONNECTION_CLOSE:
        self->note_closed("peer sent close " + std::to_string(arg->status_code));
        break;
      default: break;  // ping (answered by wslay), pong
    }
  }
};

// ---- the channel ---------------------------------------------------------------------------

WebSocketChannel::WebSocketChannel(std::shared_ptr<const WebSocketSite> site, std::size_t max_head_bytes)
    : site_(std::move(site)), max_head_bytes_(max_head_bytes), parser_(std::make_unique<http_parser>()) {
  http_parser_init(parser_.get(), HTTP_REQUEST);
  parser_->data = this;
}

WebSocketChannel::~WebSocketChannel() {
  if (frames_) wslay_event_context_free(frames_);
}

namespace {
const http_parser_settings& head_settings();
}

WebSocketChannel::Status WebSocketChannel::feed(std::string_view bytes, std::deque<std::string>& messages,
                                                std::size_t max_message_bytes) {
  if (status_ == Status::open) return read_frames(bytes, messages, max_message_bytes);
  if (status_ != Status::handshake) return status_;  // answered or closing: input is discarded
  std::size_t parsed = http_parser_execute(parser_.get(), &head_settings(), bytes.data(), bytes.size());
  const auto err = HTTP_PARSER_ERRNO(parser_.get());
  if (head_done_ || (err == HPE_OK && parser_->upgrade)) {
    if (err == HPE_PAUSED) http_parser_pause(parser_.get(), 0);
    head_done_ = true;
    on_head_complete();
    if (status_ == Status::open && parsed < bytes.size())  // frames right behind the request
      return read_frames(bytes.substr(parsed), messages, max_message_bytes);
    return status_;
  }
  if (err != HPE_OK) {
    if (head_too_large_ || err == HPE_HEADER_OVERFLOW) answer(431, "request head too large");
    else answer(400, std::string("bad request (") + http_errno_name(err) + ")");
    return status_;
  }
  return status_;
}

namespace {
WebSocketChannel* channel_of(http_parser* p) { return static_cast<WebSocketChannel*>(p->data); }
}  // namespace

// http-parser's callbacks reach the channel's head through these.
struct WebSocketHead {
  static int on_url(http_parser* p, const char* at, size_t len) {
    auto* c = channel_of(p);
    c->url_.append(at, len);
    return check(c, p, len);
  }
  static int on_field(http_parser* p, const char* at, size_t len) {
    auto* c = channel_of(p);
    if (c->in_value_) store(c);
    c->field_.append(at, len);
    return check(c, p, len);
  }
  static int on_value(http_parser* p, const char* at, size_t len) {
    auto* c = channel_of(p);
    c->in_value_ = true;
    c->value_.append(at, len);
    return check(c, p, len);
  }
  static int on_headers_complete(http_parser* p) {
    auto* c = channel_of(p);
    if (c->in_value_) store(c);
    return 0;
  }
  static int on_message_complete(http_parser* p) {
    auto* c = channel_of(p);
    c->head_done_ = true;
    // One request per connection: what follows a plain request is not parsed. (An upgrade
    // is not paused: the parser then returns where the frames begin.)
    if (!p->upgrade) http_parser_pause(p, 1);
    return 0;
  }
  static void store(WebSocketChannel* c) {
    std::string name = lower(c->field_);
    auto [it, fresh] = c->headers_.emplace(name, c->value_);
    if (!fresh) it->second += ", " + c->value_;
    c->field_.clear();
    c->value_.clear();
    c->in_value_ = false;
  }
  // The head counted as it is parsed (what we keep, plus each line's separators; and the
  // parser's own count), so a long one stops the parser before it is all held.
  static int check(WebSocketChannel* c, http_parser* p, std::size_t len) {
    c->head_bytes_ += len + 2;
    if (std::max<std::size_t>(c->head_bytes_, p->nread) <= c->max_head_bytes_) return 0;
    c->head_too_large_ = true;
    return -1;
  }
};

namespace {
const http_parser_settings& head_settings() {
  static const http_parser_settings s = [] {
    http_parser_settings init{};
    http_parser_settings_init(&init);
    init.on_url = WebSocketHead::on_url;
    init.on_header_field = WebSocketHead::on_field;
    init.on_header_value = WebSocketHead::on_value;
    init.on_headers_complete = WebSocketHead::on_headers_complete;
    init.on_message_complete = WebSocketHead::on_message_complete;
    return init;
  }();
  return s;
}
}  // namespace

void WebSocketChannel::on_head_complete() {
  auto header = [this](std::string_view name) -> std::string_view {
    auto it = headers_.find(std::string(name));
    return it == headers_.end() ? std::string_view{} : std::string_view(it->second);
  };
  const unsigned method = parser_->method;
  const bool wants_upgrade = has_token(header("upgrade"), "websocket");
  if (!wants_upgrade) {
    // The web client's files; nothing else is served here.
    if (method != HTTP_GET && method != HTTP_HEAD) return answer(405, "only GET", "Allow: GET, HEAD\r\n");
    std::string_view path = url_;
    path = path.substr(0, path.find_first_of("?#"));
    auto file = site_->files.find(path);
    if (file == site_->files.end()) {
      return answer(404, path == "/" && site_->files.empty()
                             ? "the web client is not installed here (see websocket.web_root)"
                             : "not found");
    }
    status_ = Status::answered;
    why_ = "served " + std::string(path);
    if (method == HTTP_HEAD) output_ += file->second->substr(0, file->second->find("\r\n\r\n") + 4);
    else output_ += *file->second;
    return;
  }
  refused_ = true;  // until it is accepted below
  if (method != HTTP_GET) return answer(405, "a WebSocket upgrade is a GET", "Allow: GET\r\n");
  if (parser_->http_major != 1 || parser_->http_minor < 1) return answer(400, "a WebSocket upgrade needs HTTP/1.1");
  // A body would be read as body or as frames depending on how the bytes were cut (http-parser
  // reads it before returning when it has it all, and stops at the head when it does not).
  if (!header("transfer-encoding").empty() || (!header("content-length").empty() && header("content-length") != "0"))
    return answer(400, "a WebSocket upgrade has no body");
  if (!has_token(header("connection"), "upgrade")) return answer(400, "Connection: Upgrade is missing");
  if (header("sec-websocket-version") != "13")
    return answer(426, "WebSocket version 13 only", "Sec-WebSocket-Version: 13\r\n");
  const std::string_view key = header("sec-websocket-key");
  if (key.size() != 24) return answer(400, "Sec-WebSocket-Key must be 16 bytes in base64");
  if (const std::string_view origin = header("origin"); !origin.empty()) {
    bool allowed = false;
    if (site_->origins.empty()) {
      // Same host, and a host DNS cannot point elsewhere (an IP address or localhost): a
      // name that resolves to us only for this visit is a DNS-rebinding page, which would
      // otherwise bring its own matching Host and Origin. Named hosts go in `origins`.
      const std::string host = host_authority(header("host"));
      allowed = !origin_authority(origin).empty() && origin_authority(origin) == host && unbindable_host(host);
    } else {
      for (const auto& o : site_->origins) allowed = allowed || lower(o) == lower(origin);
    }
    if (!allowed) return answer(403, "Origin " + std::string(origin) + " is not allowed (websocket.origins)");
  }
  refused_ = false;
  output_ += http_status_line(101) + "Upgrade: websocket\r\nConnection: Upgrade\r\n";
  output_ += "Sec-WebSocket-Accept: " + websocket_accept_key(key) + "\r\n\r\n";
  open_frames();
}

void WebSocketChannel::answer(int status, std::string_view text, std::string_view extra_headers) {
  status_ = Status::answered;
  why_ = std::to_string(status) + " " + std::string(text);
  output_ += http_answer(status, "text/plain; charset=utf-8", std::string(text) + "\n", extra_headers);
}

void WebSocketChannel::open_frames() {
  static const wslay_event_callbacks callbacks{
      WebSocketCallbacks::recv, WebSocketCallbacks::send, nullptr, WebSocketCallbacks::on_frame_start, nullptr,
      nullptr, WebSocketCallbacks::on_message};
  if (wslay_event_context_server_init(&frames_, &callbacks, this) != 0) throw std::bad_alloc();
  status_ = Status::open;
  // The head's parser is done with: an open channel keeps only wslay's context.
  parser_.reset();
  headers_.clear();
  url_.clear();
  url_.shrink_to_fit();
}

WebSocketChannel::Status WebSocketChannel::read_frames(std::string_view bytes, std::deque<std::string>& messages,
                                                       std::size_t max_message_bytes) {
  wslay_event_config_set_max_recv_msg_length(frames_, max_message_bytes);
  input_ = bytes;
  messages_ = &messages;
  int rc = wslay_event_recv(frames_);
  messages_ = nullptr;
  input_ = {};
  flush_frames();
  if (rc != 0) note_closed("wslay error " + std::to_string(rc));
  return status_;
}

void WebSocketChannel::flush_frames() {
  if (!frames_) return;
  wslay_event_send(frames_);  // the send callback takes everything: nothing waits inside wslay
  if (wslay_event_get_close_sent(frames_) && status_ == Status::open) {
    const unsigned code = wslay_event_get_status_code_sent(frames_);
    note_closed("closed with " + std::to_string(code));
  }
}

void WebSocketChannel::note_closed(std::string why) {
  if (status_ == Status::closing) return;
  status_ = Status::closing;
  why_ = std::move(why);
}

void WebSocketChannel::ping() {
  if (status_ != Status::open) return;
  static constexpr std::string_view kPayload = "roomd";
  wslay_event_msg msg{WSLAY_PING, reinterpret_cast<const uint8_t*>(kPayload.data()), kPayload.size()};
  wslay_event_queue_msg(frames_, &msg);
  flush_frames();
}

void WebSocketChannel::close(std::uint16_t code, std::string_view reason) {
  if (status_ != Status::open || wslay_event_get_close_sent(frames_)) return;
  reason = reason.substr(0, 123);  // a control frame's payload is at most 125 bytes
  wslay_event_queue_close(frames_, code, reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
  flush_frames();
}

std::string WebSocketChannel::take_output() { return std::exchange(output_, {}); }

}  // namespace roomd
