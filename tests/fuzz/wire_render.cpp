// Arbitrary JSON (parsed with nlohmann, discarded if invalid) as an event body:
//   - encode_json and render_text do not crash or throw;
//   - encode_json's line is one line, and parses back to the same JSON;
//   - the event's WebSocket frame is a FIN text frame, unmasked, with the right header for
//     its length, around the JSON line without its newline;
//   - an Event made from the line (as room messages are) gives the same bytes in every mode;
//   - for an object, wire::message_line writes byte for byte what encode_json makes of
//     wire::message with the same fields.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_input.hpp"
#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/event.hpp"
#include "roomd/protocol/websocket_frame.hpp"
#include "roomd/protocol/wire.hpp"

using namespace roomd;

namespace {

void check_frame_header(std::string_view frame, std::string_view payload) {
  const std::size_t n = payload.size();
  const std::size_t header = n < 126 ? 2 : n < 65536 ? 4 : 10;
  FUZZ_CHECK(frame.size() == header + n, payload);
  const auto* b = reinterpret_cast<const unsigned char*>(frame.data());
  FUZZ_CHECK(b[0] == 0x81, payload);  // FIN, text, no RSV bits
  FUZZ_CHECK((b[1] & 0x80) == 0, payload);  // a server never masks
  std::uint64_t length = b[1] & 0x7f;
  if (header == 4) {
    FUZZ_CHECK(length == 126, payload);
    length = (std::uint64_t{b[2]} << 8) | b[3];
  } else if (header == 10) {
    FUZZ_CHECK(length == 127, payload);
    length = 0;
    for (int i = 2; i < 10; ++i) length = (length << 8) | b[i];
  }
  FUZZ_CHECK(length == n, payload);
  FUZZ_CHECK(frame.substr(header) == payload, payload);
}

std::string_view string_field(const ordered_json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? std::string_view(it->get_ref<const std::string&>()) : std::string_view{};
}

std::uint64_t count_field(const ordered_json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ordered_json body = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;

  const std::string line = encode_json(body);
  FUZZ_CHECK(!line.empty() && line.back() == '\n', text);
  FUZZ_CHECK(line.find('\n') == line.size() - 1, text);
  const ordered_json back = ordered_json::parse(line, nullptr, false);
  FUZZ_CHECK(!back.is_discarded(), line);
  FUZZ_CHECK(back == body, line);
  FUZZ_CHECK(encode_json(back) == line, line);

  const std::string rendered = render_text(body);
  FUZZ_CHECK(rendered.empty() || rendered.back() == '\n', text);

  const std::string_view payload(line.data(), line.size() - 1);
  check_frame_header(websocket_text_frame(payload), payload);

  const EventPtr built = make_event(body);
  FUZZ_CHECK(*built->bytes(Mode::json) == line, line);
  FUZZ_CHECK(*built->bytes(Mode::text) == rendered, line);
  FUZZ_CHECK(*built->bytes(Mode::websocket) == websocket_text_frame(payload), line);
  const EventPtr from_line = Event::from_json_line(line);
  FUZZ_CHECK(*from_line->bytes(Mode::json) == line, line);
  FUZZ_CHECK(*from_line->bytes(Mode::text) == rendered, line);
  FUZZ_CHECK(*from_line->bytes(Mode::websocket) == *built->bytes(Mode::websocket), line);

  if (body.is_object()) {
    std::optional<std::string_view> said;
    if (auto it = body.find("text"); it != body.end() && it->is_string()) said = it->get_ref<const std::string&>();
    const nlohmann::json extra = body.contains("data") ? nlohmann::json::parse(body["data"].dump()) : nlohmann::json();
    const auto room = string_field(body, "room"), from = string_field(body, "from");
    const auto seq = count_field(body, "seq"), ts = count_field(body, "ts");
    FUZZ_CHECK(wire::message_line(room, seq, ts, from, said, extra) ==
                   encode_json(wire::message(room, seq, ts, from, said, extra)),
               line);
  }
  return 0;
}
