// HTTP/1.1 answers as text. See http_text.hpp.
#include "roomd/net/http_text.hpp"

namespace roomd {

const char* http_reason_phrase(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

std::string http_status_line(int status) {
  return "HTTP/1.1 " + std::to_string(status) + " " + http_reason_phrase(status) + "\r\n";
}

std::string http_response_text(int status, std::string_view content_type, std::string_view body,
                               std::string_view headers, bool keep_alive, bool head_only) {
  std::string out = http_status_line(status);
  out += "Content-Type: " + std::string(content_type) + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += headers;
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (!head_only) out += body;
  return out;
}

std::string http_answer(int status, std::string_view content_type, std::string_view body, std::string_view extra_headers,
                        bool head_only) {
  std::string headers = "X-Content-Type-Options: nosniff\r\n";
  headers += extra_headers;
  return http_response_text(status, content_type, body, headers, false, head_only);
}

}  // namespace roomd
