// Event: one thing the server says, as a JSON body, serialized at most once per wire mode.
//
// A broadcast to 1000 members builds one Event; each member's connection asks for the bytes
// of its mode and queues a reference to them. The bytes are immutable once made, so sharing
// them needs no copy and no lock.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

namespace roomd {

using ordered_json = nlohmann::ordered_json;
using Bytes = std::shared_ptr<const std::string>;

enum class Mode : unsigned char { json, text };

class Event {
 public:
  explicit Event(ordered_json body) : body_(std::move(body)) {}

  const ordered_json& body() const { return body_; }
  // The wire bytes for a mode; made on first use. Text mode may render an event as
  // nothing (an empty string), which callers skip.
  const Bytes& bytes(Mode mode) const;

 private:
  ordered_json body_;
  mutable Bytes json_;
  mutable Bytes text_;
};

using EventPtr = std::shared_ptr<const Event>;

inline EventPtr make_event(ordered_json body) { return std::make_shared<const Event>(std::move(body)); }

}  // namespace roomd
