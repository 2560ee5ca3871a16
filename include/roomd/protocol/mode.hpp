// The wire modes and the JSON type every body is built in. A leaf header, so that the
// codec, events and wire bodies can share them without including one another.
#pragma once

#include <nlohmann/json.hpp>

namespace roomd {

// ordered_json keeps keys in insertion order: the protocol's field order is part of the wire.
using ordered_json = nlohmann::ordered_json;

// json: one JSON line per frame; text: lines for people (netcat); websocket: the JSON body,
// without its line ending, as one WebSocket text message (a browser speaks JSON only).
enum class Mode : unsigned char { json, text, websocket };

}  // namespace roomd
