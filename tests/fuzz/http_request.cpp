// The operators' HTTP endpoint's requests (HttpExchange, net/http_exchange: http-parser, the
// head limit, keep-alive, the routes /metrics, /healthz and /readyz) fed the fuzzer's bytes
// as one connection's input, in fuzzer-chosen splits, the way the endpoint's connection feeds
// them: after a keep-alive answer, the rest of the same read, then the next reads; after a
// closing answer, nothing.
// Input: [head limit][split count][split sizes...][request bytes...]
//
// Checked: every answer is a well-formed HTTP/1.1 response (a status line roomd knows,
// header lines, Content-Length of the body or a HEAD's missing body, Connection saying what
// the exchange does next, Allow on a 405); a request answered from the routes had a head
// within the limit (a few bytes of slack: the endpoint counts up to the last header byte and
// adds 4); and **differentially**, the answers are those of the same bytes fed whole, up to
// the first 431 on either side (the head's count may differ by those few bytes with the
// splits, so a head near the limit may get 431 in one and pass in the other).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "roomd/net/http_exchange.hpp"
#include "roomd/net/http_text.hpp"

namespace {

// How far over the limit an accepted head may be: the count leaves out what follows the last
// header byte (or the target, without headers): " HTTP/1.1" and the line ends, counted as 4.
constexpr std::size_t kHeadSlack = 16;

const std::vector<roomd::HttpRoute>& routes() {
  static const std::vector<roomd::HttpRoute> r{
      {"/metrics", [] { return roomd::HttpResponse{.status = 200, .content_type = "text/plain; version=0.0.4; charset=utf-8",
                                                   .body = "# TYPE roomd_clients gauge\nroomd_clients 0\n"}; }},
      {"/healthz", [] { return roomd::HttpResponse{.status = 200, .body = "ok\n"}; }},
      {"/readyz", [] { return roomd::HttpResponse{.status = 503, .body = "shutting down\n"}; }},
  };
  return r;
}

bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

// A well-formed answer, as http_text makes them.
void check_answer(const roomd::HttpExchange::Reply& r) {
  const std::string_view a = r.bytes;
  static constexpr int kKnown[] = {200, 400, 404, 405, 431, 503};
  bool known = false;
  for (int s : kKnown) known = known || s == r.status;
  FUZZ_CHECK(known, a);
  const std::string line = roomd::http_status_line(r.status);
  FUZZ_CHECK(a.starts_with(line), a);
  const std::size_t head_end = a.find("\r\n\r\n");
  FUZZ_CHECK(head_end != std::string_view::npos && head_end + 2 >= line.size(), a);
  std::string_view headers = a.substr(line.size(), head_end + 2 - line.size());
  std::string_view content_length, connection;
  bool allow = false;
  while (!headers.empty()) {
    const std::size_t eol = headers.find("\r\n");
    FUZZ_CHECK(eol != std::string_view::npos, a);
    const std::string_view h = headers.substr(0, eol);
    headers.remove_prefix(eol + 2);
    const std::size_t colon = h.find(": ");
    FUZZ_CHECK(colon != std::string_view::npos && colon > 0, a);
    for (char c : h.substr(0, colon)) FUZZ_CHECK(token_char(c), a);
    const std::string_view value = h.substr(colon + 2);
    for (char c : value) FUZZ_CHECK(c >= 0x20 && c < 0x7f, a);
    const std::string_view name = h.substr(0, colon);
    if (name == "Content-Length") content_length = value;
    if (name == "Connection") connection = value;
    if (name == "Allow") allow = true;
  }
  FUZZ_CHECK(connection == (r.keep_alive ? "keep-alive" : "close"), a);
  FUZZ_CHECK(allow == (r.status == 405), a);
  const std::string_view body = a.substr(head_end + 4);
  FUZZ_CHECK(!content_length.empty(), a);
  FUZZ_CHECK(body.empty() || std::to_string(body.size()) == content_length, a);  // a HEAD's answer has none
}

struct Answered {
  int status;
  bool keep_alive;
  std::size_t start;  // where its request began in the input
  std::size_t end;    // and where it ended (for a refusal: where the parser stopped)
};

bool refusal(int status) { return status == 400 || status == 431; }

std::vector<Answered> converse(std::string_view bytes, const std::vector<std::size_t>& sizes, std::size_t limit) {
  roomd::HttpExchange exchange(limit);
  const roomd::HttpExchange::Answerer answer = [](unsigned method, std::string_view target) {
    return roomd::route_http_request(routes(), method, target);
  };
  std::vector<Answered> answers;
  bool over = false;
  std::size_t offset = 0;        // of the next chunk in the input
  std::size_t request_start = 0;  // of the request being read
  fuzz::in_chunks(bytes, sizes, [&](std::string_view chunk) {
    std::size_t at = offset;
    offset += chunk.size();
    while (!over && !chunk.empty()) {
      auto r = exchange.feed(chunk, answer);
      if (!r) return;
      FUZZ_CHECK(r->consumed <= chunk.size(), r->bytes);
      check_answer(*r);
      answers.push_back({r->status, r->keep_alive, request_start, at + r->consumed});
      if (!r->keep_alive) {
        over = true;
        return;
      }
      FUZZ_CHECK(r->consumed > 0, r->bytes);
      // The endpoint's connection: the rest of this read is the next request's.
      chunk.remove_prefix(r->consumed);
      at += r->consumed;
      request_start = at;
    }
  });
  return answers;
}

std::string describe(const std::vector<Answered>& answers) {
  std::string s;
  for (const auto& a : answers)
    s += std::to_string(a.status) + (a.keep_alive ? "+" : ".") + "@" + std::to_string(a.start) + "-" +
         std::to_string(a.end) + " ";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  const std::size_t limit = 32 + std::size_t{in.byte()} * 4;  // 32 B to 1 KB
  const auto sizes = in.splits();
  const std::string_view bytes = in.rest();

  const auto split = converse(bytes, sizes, limit);
  const auto whole = converse(bytes, {}, limit);
  const std::string both = "split " + describe(split) + "/ whole " + describe(whole);

  for (const auto& a : split) {
    FUZZ_CHECK(a.end <= bytes.size(), both);
    // A request served from the routes had a head within the limit (its end is where the
    // head ended: a request with a body is answered at its head).
    if (!refusal(a.status)) FUZZ_CHECK(a.end - a.start <= limit + kHeadSlack, both);
  }

  std::size_t i = 0;
  for (; i < split.size() && i < whole.size(); ++i) {
    if (split[i].status == 431 || whole[i].status == 431) break;
    FUZZ_CHECK(split[i].status == whole[i].status && split[i].keep_alive == whole[i].keep_alive, both);
    if (!refusal(split[i].status)) FUZZ_CHECK(split[i].end == whole[i].end, both);
  }
  const bool split_431 = i < split.size() && split[i].status == 431;
  const bool whole_431 = i < whole.size() && whole[i].status == 431;
  if (split_431 != whole_431) {
    // Only a head near the limit: where the other side's request ended (if it was served), or
    // all the input that was left, is at least about the limit.
    const auto& other = split_431 ? whole : split;
    const std::size_t start = i == 0 ? 0 : split[i - 1].end;
    const std::size_t reach = i < other.size() && !refusal(other[i].status) ? other[i].end : bytes.size();
    FUZZ_CHECK(reach - start + kHeadSlack >= limit, both);
  } else if (!split_431) {
    FUZZ_CHECK(split.size() == whole.size(), both);
  }
  return 0;
}
