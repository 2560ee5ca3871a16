// The text of roomd's HTTP/1.1 answers, shared by the operators' endpoint (net/http_endpoint)
// and the WebSocket listeners' handshake, files and refusals (net/websocket): plain strings,
// no socket.
#pragma once

#include <string>
#include <string_view>

namespace roomd {

// "Not Found" for 404; "Error" for a status roomd does not answer with.
const char* http_reason_phrase(int status);
// "HTTP/1.1 404 Not Found\r\n"
std::string http_status_line(int status);
// A whole answer: the status line, Content-Type, Content-Length (the body's, also when
// `head_only` leaves the body out, as a HEAD's answer does), `headers` (each line ending in
// CRLF), Connection (keep-alive or close), the blank line, then the body.
std::string http_response_text(int status, std::string_view content_type, std::string_view body,
                               std::string_view headers, bool keep_alive, bool head_only);
// The WebSocket listeners' answers: a whole HTTP/1.1 answer that closes the connection, with
// X-Content-Type-Options: nosniff ahead of `extra_headers`.
std::string http_answer(int status, std::string_view content_type, std::string_view body,
                        std::string_view extra_headers = "", bool head_only = false);

}  // namespace roomd
