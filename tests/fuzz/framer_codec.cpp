// The framer fed the input in fuzzer-chosen splits, and every frame through the codec,
// differentially:
//   - the frames (and too-long reports) are the same whatever the splits and whether the
//     reader stops between frames, as when all the bytes come at once;
//   - wherever the plain-`say` fast path answers, the DOM parser gives the same Request;
//   - parse_json_request (fast path, then DOM) agrees with the DOM parser alone: the same
//     Request on success, the same error code (and id) on failure;
//   - a parsed request written back with request_json parses to the same request;
//   - parse_text_line never throws, and a plain line is said as it is.
// Input: [limit/stop byte][split count][split sizes...][stream bytes...]
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/framer.hpp"

using namespace roomd;

namespace {

// Strictly the same id: equal, of the same JSON type, written the same.
bool same_json(const std::optional<nlohmann::json>& a, const std::optional<nlohmann::json>& b, bool strict = true) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return *a == *b && (!strict || (a->type() == b->type() && a->dump() == b->dump()));
}

bool same_request(const Request& a, const Request& b, bool strict_id = true) {
  return a.op == b.op && same_json(a.id, b.id, strict_id) && a.nick == b.nick && a.room == b.room &&
         a.current_room == b.current_room && a.key == b.key && a.text == b.text && a.msg_id == b.msg_id && a.data == b.data &&
         a.data.dump() == b.data.dump() && a.to == b.to && a.topic == b.topic && a.before == b.before &&
         a.limit == b.limit && a.since == b.since && a.epoch == b.epoch && a.after == b.after && a.search == b.search;
}

void check_frame(std::string_view frame) {
  const ParseResult dom = parse_json_request_dom(frame);
  const ParseResult combined = parse_json_request(frame);

  // The fast path is only asked after the UTF-8 check, as parse_json_request asks it.
  if (valid_utf8(frame)) {
    if (auto fast = parse_plain_say(frame)) {
      const Request* slow = std::get_if<Request>(&dom);
      FUZZ_CHECK(slow != nullptr, frame);
      FUZZ_CHECK(same_request(*fast, *slow), frame);
      FUZZ_CHECK(fast->op == Op::say && fast->data.is_null(), frame);
    }
  }

  FUZZ_CHECK(dom.index() == combined.index(), frame);
  if (const auto* a = std::get_if<Request>(&dom)) {
    FUZZ_CHECK(same_request(*a, std::get<Request>(combined)), frame);
    // A request written back as a client's frame (request_json, as roomcat sends them) reads
    // as the same request. (Its id only numerically: "-0" comes back as 0.)
    const std::string again = request_json(*a).dump();
    const ParseResult reread = parse_json_request(again);
    FUZZ_CHECK(std::holds_alternative<Request>(reread), again);
    FUZZ_CHECK(same_request(*a, std::get<Request>(reread), /*strict_id=*/false), again);
  } else {
    const auto& a_err = std::get<RequestError>(dom);
    const auto& b_err = std::get<RequestError>(combined);
    FUZZ_CHECK(a_err.code == b_err.code, frame);
    FUZZ_CHECK(same_json(a_err.id, b_err.id), frame);
  }

  const ParseResult text = parse_text_line(frame);
  if (const auto* r = std::get_if<Request>(&text)) {
    if (!frame.empty() && frame[0] != '/' && frame != "Bye") {
      FUZZ_CHECK(r->op == Op::say && r->current_room && r->text == std::string(frame), frame);
    }
  } else {
    FUZZ_CHECK(std::get<RequestError>(text).code != ErrorCode::internal, frame);
  }
  (void)detect_mode(frame);
}

// What the framer reported, in order: a frame's bytes, or "\n" for a too-long line (a frame
// never holds a newline, so the two cannot be confused).
using Cuts = std::vector<std::string>;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  const std::uint8_t steer = in.byte();
  static constexpr std::size_t kLimits[] = {8, 64, 512, 65536};
  const std::size_t max_frame = kLimits[steer & 3];
  const unsigned stop_every = (steer >> 2) & 7;  // 0: never stop; else stop at every (n+1)-th ask
  const auto sizes = in.splits();
  const std::string_view stream = in.rest();

  // All at once, never stopped: the reference.
  Cuts whole;
  {
    Framer framer(max_frame);
    framer.feed(
        stream, [&](std::string_view f) { whole.emplace_back(f); }, [&] { whole.emplace_back("\n"); });
  }

  // In the chosen splits, stopping as a held connection does and resuming before more comes.
  Cuts split;
  Framer framer(max_frame);
  unsigned asked = 0;
  auto may_go = [&] { return stop_every == 0 || ++asked % (stop_every + 1) != 0; };
  auto on_frame = [&](std::string_view f) {
    FUZZ_CHECK(f.size() <= max_frame, f);
    FUZZ_CHECK(!f.empty() && f.find('\n') == std::string_view::npos, f);
    split.emplace_back(f);
    check_frame(f);
  };
  auto on_overlong = [&] { split.emplace_back("\n"); };
  fuzz::in_chunks(stream, sizes, [&](std::string_view chunk) {
    bool all = framer.feed(chunk, may_go, on_frame, on_overlong);
    while (!all) all = framer.resume(may_go, on_frame, on_overlong);
    FUZZ_CHECK(framer.unread() == 0, chunk);
    FUZZ_CHECK(framer.buffered() <= max_frame + 1, chunk);
  });
  FUZZ_CHECK(split == whole, stream);
  return 0;
}
