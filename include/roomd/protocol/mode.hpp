// The two wire modes and the JSON type every body is built in. A leaf header, so that the
// codec, events and wire bodies can share them without including one another.
#pragma once

#include <nlohmann/json.hpp>

namespace roomd {

// ordered_json keeps keys in insertion order: the protocol's field order is part of the wire.
using ordered_json = nlohmann::ordered_json;

enum class Mode : unsigned char { json, text };

}  // namespace roomd
