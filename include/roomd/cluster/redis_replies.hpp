// What the cluster client makes of Redis' replies (docs/cluster.md): the `roomd` function's
// say and state results, the subscriber's pushes (messages and presence), a gap fill's XRANGE
// entries, and the members, nicks and heartbeats of the nodes. Pure
// functions of one hiredis reply tree, apart from the links and the feeds, so the unit tests
// and the `redis_reply` fuzz target hold them to what they accept:
//
//   - a seq is 1..2^63-1 (Redis' integers are signed 64-bit; 0 is never a message's, and a
//     seq of 2^64-1 would make the next one 0); a state's seq may be 0 (nothing said yet);
//   - an epoch is a non-empty word (a message carries it between two spaces);
//   - a message line is one JSON object and its '\n', as the function stores it;
//   - a nick is a valid nick (base/names), a room a valid room name, a node a non-empty word.
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

#include "roomd/core/cluster_bus.hpp"
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

// A message as the functions publish it: "SEQ EPOCH LINE" alone, or one of a batch (below).
struct Message {
  std::uint64_t seq = 0;
  std::string epoch;
  std::string line;
  bool operator==(const Message&) const = default;
};

// A change of a room's members as the functions publish it, on the room's channel next to its
// messages: "p VERSION NODE join|leave NICK..." or "p VERSION NODE nick OLD NEW". VERSION is
// the room's membership version, one more per change. A topic change counts as one too:
// "p VERSION NODE topic NICK TEXT" (TEXT: the rest of the payload, spaces and all, maybe empty).
struct Presence {
  std::uint64_t version = 0;
  std::string node;  // whose member changed (a node id and its incarnation)
  ClusterPresence::Kind kind = ClusterPresence::Kind::join;
  std::vector<std::string> nicks;  // join, leave: one or more; nick: old, new; topic: who set it
  std::string topic;               // topic: the text
  bool operator==(const Presence&) const = default;
};

// A push on the subscriber link the client acts on: for a room's channel "roomd:{ROOM}", or a
// whisper on a node's own channel "roomd:node:NODE" ("FROM TS TO TEXT", TO folded).
struct Push {
  enum class Kind { message, presence, subscribed, whisper, batch };
  Kind kind = Kind::message;
  std::string room;
  Message message;    // for a message
  Presence presence;  // for a presence
  ClusterWhisper whisper;  // for a whisper
  std::vector<Message> batch;  // for a batch: its messages in seq order, one epoch
  bool operator==(const Push&) const = default;
};

// roomd_members: the room's membership version and its members on the other nodes (those of
// the node named `self` are left out: the router knows its own).
struct MemberSnapshot {
  std::uint64_t version = 0;
  std::vector<std::string> others;
  bool operator==(const MemberSnapshot&) const = default;
};

// roomd_topic_of: the room's topic (nullopt: none stored) at a membership version.
struct TopicRead {
  std::uint64_t version = 0;
  std::optional<ClusterTopic> topic;
  bool operator==(const TopicRead&) const = default;
};

// roomd_beat: whether the node was not registered (new, or swept after its lease ran out),
// the nicks another node holds now, and the nodes whose lease has run out.
struct Beat {
  bool fresh = false;
  std::vector<std::string> lost;
  std::vector<std::string> expired;
  bool operator==(const Beat&) const = default;
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

// Whether Redis keeps what it answered through a crash of its own (docs/cluster.md,
// "Acked = durable"): its AOF on, and written to disk before every answer.
struct RedisDurability {
  std::string appendonly;   // "yes" or "no"
  std::string appendfsync;  // "always", "everysec" or "no"
  bool durable() const { return appendonly == "yes" && appendfsync == "always"; }
  bool operator==(const RedisDurability&) const = default;
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
// A node's name in the registry: non-empty, no space.
bool valid_node(std::string_view node);

// FCALL roomd_say: [seq, epoch], or [seq, epoch, 1] for a say id seen before (the library of
// an older node answers those with [seq, epoch] too: both are read).
Read<SayResult> read_say(const redisReply* r);
// FCALL roomd_say_batch for `count` says: [epoch, [seq, flag, seq, flag, ...]], a pair per say
// in the order sent (flag 1: a say id seen before, seq its first seq; else 0), every seq of
// that epoch.
Read<std::vector<SayResult>> read_say_batch(const redisReply* r, std::size_t count);
// FCALL roomd_state: [seq, epoch, [line...], base] (the lines oldest first, as they are: the
// router keeps those that continue up to the seq; base, 0..seq, where the room's incarnation
// began; a reply without it, from an older library, has base 0).
Read<RoomState> read_state(const redisReply* r);
// A subscriber push: ["message", channel, payload] or ["subscribe", channel, count]; nothing
// for other pushes, other channels and malformed messages or presence.
std::optional<Push> read_push(const redisReply* r);
// A message's payload "SEQ EPOCH LINE".
std::optional<Message> read_message(std::string_view payload);
// A batch's payload "b EPOCH\n" and one entry or more "SEQ LEN LINE", LINE exactly LEN bytes
// (so a line needs no escaping), the seqs increasing.
std::optional<std::vector<Message>> read_batch(std::string_view payload);
// A presence payload "p VERSION NODE KIND NICK...": join and leave with one nick or more,
// nick with exactly two; every nick valid; topic with one nick and the text after it.
std::optional<Presence> read_presence(std::string_view payload);
// A whisper payload "FROM TS TO TEXT" or, with a msg_id, "FROM TS TO:HEX TEXT": both nicks
// valid, TO folded, TS a number, HEX the msg_id in lower-case hex.
std::optional<ClusterWhisper> read_whisper(std::string_view payload);
// Bytes as lower-case hex, and back (nullopt: not such hex).
std::string hex(std::string_view bytes);
std::optional<std::string> unhex(std::string_view text);
// XRANGE: [[id, [field, line]]...]; entries of another shape are skipped.
Read<StreamRange> read_range(const redisReply* r);
// CONFIG GET appendonly appendfsync: [name, value, ...] in any order; both must be there.
Read<RedisDurability> read_durability(const redisReply* r);

// FCALL roomd_members: [version, [[node, nick...]...]]; nicks that are not valid are skipped.
Read<MemberSnapshot> read_members(const redisReply* r, std::string_view self);
// FCALL roomd_who: [count, [nick...], more (0/1)]; a page no longer than its count.
Read<ClusterMemberPage> read_who(const redisReply* r);
// FCALL roomd_topic_of: [version, text, by] or [version, nil, nil] (none stored); `by` a valid nick.
Read<TopicRead> read_topic(const redisReply* r);
// FCALL roomd_rooms: [room, count, ...], and [room, topic] after the count of a room with a
// topic (a string where a count would be); pairs that are neither, or not a valid room name,
// are skipped.
Read<std::vector<ClusterRoomCount>> read_room_counts(const redisReply* r);
// FCALL roomd_beat: [fresh (0/1), [nick...], [node...]].
Read<Beat> read_beat(const redisReply* r);
// An array of nicks (folded or not), as roomd_reclaim answers; invalid ones are skipped.
Read<std::vector<std::string>> read_nicks(const redisReply* r);
// An integer reply (roomd_claim's 1 or 0, roomd_sweep's count).
Read<long long> read_integer(const redisReply* r);

}  // namespace roomd::redis_replies
