// The seam between the router and whatever carries a session's bytes: the router talks to a
// session through its Outbox; a transport hands the router a session's requests through a
// SessionSink. Neither side sees the other's type.
#pragma once

#include <cstdint>
#include <string_view>

#include "roomd/protocol/event.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd {

using SessionId = std::uint64_t;  // 0 is never a session

// What the router says to one session. Re-entrancy rule: an Outbox never calls back into
// the router from inside these calls; a connection that must close because of a send (a
// slow consumer) defers telling the router to its owner's next phase.
class Outbox {
 public:
  virtual ~Outbox() = default;
  // A reply to this session's own request, or a notice to it: always queued.
  virtual void send(const EventPtr& event) = 0;
  // Traffic from others (room messages, presence, whispers): subject to the slow-consumer
  // policy, which may skip it (counted per `room`) or end the connection.
  virtual void send_broadcast(const EventPtr& event, std::string_view room) = 0;
  // Presence: as send_broadcast, but not urgent. Its write may wait a few milliseconds for
  // others to share it (a room's burst of joins becomes one write per member, not one per
  // join); anything urgent queued after it takes it along, so the order never changes.
  virtual void send_lazy(const EventPtr& event, std::string_view room) { send_broadcast(event, room); }
  // Flush what is queued, then close. The router has already forgotten the session.
  virtual void end() = 0;
  // A request of this session is waiting (the worker pool, a key check, pacing): serve
  // nothing more of it until the matching release(), so replies keep the order of requests.
  // Holds nest: the session resumes when every hold is released. release() must not
  // re-enter the router; the session resumes at its owner's next phase.
  virtual void hold() = 0;
  virtual void release() = 0;
};

// Where a transport hands a session's requests (the router).
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  virtual void handle(SessionId id, const Request& request) = 0;
  // A frame that could not be parsed: its error goes back like any reply.
  virtual void reject(SessionId id, const RequestError& error) = 0;
};

}  // namespace roomd
