// Event: one thing the server says, as a JSON body, serialized at most once per wire mode.
//
// A broadcast to 1000 members builds one Event; each member's connection asks for the bytes
// of its mode and queues a reference to them. The bytes are immutable once made, so sharing
// them needs no copy and no lock.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace roomd {

using ordered_json = nlohmann::ordered_json;
using Bytes = std::shared_ptr<const std::string>;

enum class Mode : unsigned char { json, text };

class Event {
 public:
  explicit Event(ordered_json body) : body_(std::move(body)) {}
  // An event whose JSON line (with its '\n') was written directly, as room messages are on
  // the hot path; its body is parsed from the line only if someone asks (text mode, replay).
  static std::shared_ptr<const Event> from_json_line(std::string line);

  const ordered_json& body() const;
  // The wire bytes for a mode; made on first use. Text mode may render an event as
  // nothing (an empty string), which callers skip.
  const Bytes& bytes(Mode mode) const;

 private:
  Event() = default;

  mutable ordered_json body_;  // discarded-free null until parsed, for from_json_line events
  mutable bool body_ready_ = true;
  mutable Bytes json_;
  mutable Bytes text_;
};

using EventPtr = std::shared_ptr<const Event>;

inline EventPtr make_event(ordered_json body) { return std::make_shared<const Event>(std::move(body)); }

// Appends `s` as a JSON string literal, escaped exactly as nlohmann::json::dump() does.
void append_json_string(std::string& out, std::string_view s);

}  // namespace roomd
