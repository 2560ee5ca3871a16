// What the cluster client makes of Redis' replies (docs/cluster.md): the `roomd` function's
// say and state results, the subscriber's pushes and a gap fill's XRANGE entries. Pure
// functions of one hiredis reply tree, apart from the links and the feeds, so the unit tests
// and the `redis_reply` fuzz target hold them to what they accept:
//
//   - a seq is 1..2^63-1 (Redis' integers are signed 64-bit; 0 is never a message's, and a
//     seq of 2^64-1 would make the next one 0); a state's seq may be 0 (nothing said yet);
//   - an epoch is a non-empty word (a message carries it between two spaces);
//   - a message line is one JSON object and its '\n', as the function stores it.
//
// A reply that breaks these is refused (a say, a state: with why) or skipped (a push, a
// stream entry); Redis running the `roomd` function never gives one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "roomd/history/persistence.hpp"

struct redisReply;  // hiredis' reply tree

namespace roomd::redis_replies {

// A value read from a reply, or why not: Redis' own error text, or what was odd.
template <class T>
struct Read {
  std::optional<T> value;
  std::string error;  // when there is no value
  explicit operator bool() const { return value.has_value(); }
};

// roomd_say's answer: the message's seq and its room's epoch.
struct SayResult {
  std::uint64_t seq = 0;
  std::string epoch;
  bool duplicate = false;
  bool operator==(const SayResult&) const = default;
};

// A message as the function publishes it: "SEQ EPOCH LINE".
struct Message {
  std::uint64_t seq = 0;
  std::string epoch;
  std::string line;
  bool operator==(const Message&) const = default;
};

// A push on the subscriber link the client acts on, for a room's channel "roomd:{ROOM}".
struct Push {
  enum class Kind { message, subscribed };
  Kind kind = Kind::message;
  std::string room;
  Message message;  // for a message
  bool operator==(const Push&) const = default;
};

// One entry of a room's stream: the seq of its id "SEQ-0" and its line (field "m").
struct StreamEntry {
  std::uint64_t seq = 0;
  std::string line;
  bool operator==(const StreamEntry&) const = default;
};

// An XRANGE answer: its well-formed entries in order, and how many entries it held (malformed
// ones included; a full batch means there may be more to read).
struct StreamRange {
  std::vector<StreamEntry> entries;
  std::size_t held = 0;
  bool operator==(const StreamRange&) const = default;
};

// The largest seq: Redis' INCR stops there.
inline constexpr std::uint64_t kMaxSeq = 0x7fffffffffffffffULL;

// The reply's own text (a string, status or error), else empty.
std::string text_of(const redisReply* r);
bool is_error(const redisReply* r);

// A seq written in decimal digits only, 1..kMaxSeq.
std::optional<std::uint64_t> parse_seq(std::string_view text);
// One JSON object and its '\n' (the function's lines; the router parses them).
bool plausible_line(std::string_view line);
bool valid_epoch(std::string_view epoch);

// FCALL roomd_say: [seq, epoch], or [seq, epoch, 1] for a say id seen before (the library of
// an older node answers those with [seq, epoch] too: both are read).
Read<SayResult> read_say(const redisReply* r);
// FCALL roomd_state: [seq, epoch, [line...]] (the lines oldest first, as they are: the
// router keeps those that continue up to the seq).
Read<RoomState> read_state(const redisReply* r);
// A subscriber push: ["message", channel, payload] or ["subscribe", channel, count]; nothing
// for other pushes, other channels and malformed messages.
std::optional<Push> read_push(const redisReply* r);
// A message's payload "SEQ EPOCH LINE".
std::optional<Message> read_message(std::string_view payload);
// XRANGE: [[id, [field, line]]...]; entries of another shape are skipped.
Read<StreamRange> read_range(const redisReply* r);

}  // namespace roomd::redis_replies
