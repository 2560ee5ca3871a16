// Codec: the two wire modes. Parsing turns one frame into a Request (or a RequestError);
// encoding turns a body (see wire.hpp) into JSON bytes or a human line for text mode.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "roomd/protocol/mode.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd {

using ParseResult = std::variant<Request, RequestError>;

bool valid_utf8(std::string_view bytes);

// A connection is in text mode for good when its first non-empty line does not begin
// with '{' (leading blanks ignored).
Mode detect_mode(std::string_view first_line);

ParseResult parse_json_request(std::string_view frame);
// The two ways parse_json_request goes, exposed so tests can hold them to the same answers:
// the fast path for the commonest frame, a plain `say` (nothing when the frame is anything
// else), and the general parser (nlohmann::json's DOM) for every frame.
std::optional<Request> parse_plain_say(std::string_view frame);
ParseResult parse_json_request_dom(std::string_view frame);
ParseResult parse_text_line(std::string_view line);

std::string encode_json(const ordered_json& body);   // one line with its '\n'
std::string render_text(const ordered_json& body);   // zero or more lines, each with '\n'

// A Request as the JSON frame a client sends (roomcat turns slash commands into these).
ordered_json request_json(const Request& request);

// The text-mode help shown by /help.
std::string_view text_help();

}  // namespace roomd
