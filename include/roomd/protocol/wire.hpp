// Wire: every body the server sends a client, built in one place, and the JSON string
// escaping that writes lines by hand.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "roomd/protocol/mode.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd {

// Appends `s` as a JSON string literal, escaped exactly as nlohmann::json::dump() does.
void append_json_string(std::string& out, std::string_view s);

namespace wire {

// {"op":"error","id"?,"code","message"}
ordered_json error_body(ErrorCode code, std::string_view message,
                        const std::optional<nlohmann::json>& id = std::nullopt);

}  // namespace wire

using wire::error_body;  // its name from before wire.hpp, which callers outside protocol/ use

}  // namespace roomd
