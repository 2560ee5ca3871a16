// Event: one thing the server says, as a JSON body, serialized at most once per wire mode.
//
// A broadcast to 1000 members builds one Event; each member's connection asks for the bytes
// of its mode and queues a reference to them. The bytes are immutable once made, so sharing
// them needs no copy and no lock.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "roomd/protocol/mode.hpp"

namespace roomd {

// Bytes: an immutable string shared by reference count. The count is deliberately not
// atomic: wire bytes are made, queued, written and freed on the loop thread only (what the
// worker pool needs, it gets as a copy). In a fan-out every recipient takes and drops one
// reference, so this saves two locked instructions per delivery over std::shared_ptr.
class Bytes {
 public:
  Bytes() = default;
  static Bytes make(std::string data) {
    Bytes b;
    b.rep_ = new Rep{1, std::move(data)};
    return b;
  }
  Bytes(const Bytes& other) noexcept : rep_(other.rep_) {
    if (rep_) ++rep_->refs;
  }
  Bytes(Bytes&& other) noexcept : rep_(std::exchange(other.rep_, nullptr)) {}
  Bytes& operator=(Bytes other) noexcept {
    std::swap(rep_, other.rep_);
    return *this;
  }
  ~Bytes() {
    if (rep_ && --rep_->refs == 0) delete rep_;
  }
  const std::string& operator*() const { return rep_->data; }
  const std::string* operator->() const { return &rep_->data; }
  const std::string* get() const { return rep_ ? &rep_->data : nullptr; }
  explicit operator bool() const { return rep_ != nullptr; }

 private:
  struct Rep {
    std::size_t refs;
    const std::string data;
  };
  Rep* rep_ = nullptr;
};

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
  mutable Bytes websocket_;
};

using EventPtr = std::shared_ptr<const Event>;

inline EventPtr make_event(ordered_json body) { return std::make_shared<const Event>(std::move(body)); }

}  // namespace roomd
