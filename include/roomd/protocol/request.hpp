// What a client asks for, in one shape for both JSON and text mode, and the error codes of
// the protocol. Codecs produce Requests; the router consumes them.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace roomd {

enum class Op { nick, rooms, join, leave, say, whisper, who, topic, history, ping, echo, bye, help, stats };

// The op table: every Op with its name on the wire, in the enum's order. It lives here, next
// to the enum, so that adding an op is one edit in one header that both directions read:
// the codec parses names with op_from_name() and request_json() writes them with op_name().
// `help` has a name but is text mode's alone: a JSON frame naming it is an unknown op.
struct OpName {
  Op op;
  std::string_view name;
  bool in_json;  // a JSON request may name it
};
inline constexpr OpName op_table[] = {
    {Op::nick, "nick", true},       {Op::rooms, "rooms", true}, {Op::join, "join", true},
    {Op::leave, "leave", true},     {Op::say, "say", true},     {Op::whisper, "whisper", true},
    {Op::who, "who", true},         {Op::topic, "topic", true}, {Op::history, "history", true},
    {Op::ping, "ping", true},       {Op::echo, "echo", true},   {Op::bye, "bye", true},
    {Op::help, "help", false},      {Op::stats, "stats", true}};

constexpr bool op_table_in_enum_order() {
  std::size_t i = 0;
  for (const auto& entry : op_table)
    if (static_cast<std::size_t>(entry.op) != i++) return false;
  return i == static_cast<std::size_t>(Op::stats) + 1;
}
static_assert(op_table_in_enum_order(), "op_table must list every Op once, in the enum's order");

constexpr std::string_view op_name(Op op) { return op_table[static_cast<std::size_t>(op)].name; }

// The Op a JSON request names, or nothing for a name no JSON request may use.
constexpr std::optional<Op> op_from_name(std::string_view name) {
  for (const auto& entry : op_table)
    if (entry.in_json && entry.name == name) return entry.op;
  return std::nullopt;
}

enum class ErrorCode {
  bad_json, bad_request, unknown_op, frame_too_large, bad_utf8, bad_nick, nick_taken,
  bad_room_name, no_such_room, room_full, bad_key, not_member, read_only, rate_limited,
  no_such_nick, server_full, slow_consumer, shutting_down, internal, unavailable
};

// The code as the wire names it.
constexpr std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::bad_json: return "bad_json";
    case ErrorCode::bad_request: return "bad_request";
    case ErrorCode::unknown_op: return "unknown_op";
    case ErrorCode::frame_too_large: return "frame_too_large";
    case ErrorCode::bad_utf8: return "bad_utf8";
    case ErrorCode::bad_nick: return "bad_nick";
    case ErrorCode::nick_taken: return "nick_taken";
    case ErrorCode::bad_room_name: return "bad_room_name";
    case ErrorCode::no_such_room: return "no_such_room";
    case ErrorCode::room_full: return "room_full";
    case ErrorCode::bad_key: return "bad_key";
    case ErrorCode::not_member: return "not_member";
    case ErrorCode::read_only: return "read_only";
    case ErrorCode::rate_limited: return "rate_limited";
    case ErrorCode::no_such_nick: return "no_such_nick";
    case ErrorCode::server_full: return "server_full";
    case ErrorCode::slow_consumer: return "slow_consumer";
    case ErrorCode::shutting_down: return "shutting_down";
    case ErrorCode::internal: return "internal";
    case ErrorCode::unavailable: return "unavailable";
  }
  return "internal";
}

// A `who` page holds at most this many members (a bigger `limit` is cut to it).
inline constexpr std::uint32_t kMaxWhoPage = 1000;

// A say's or whisper's `msg_id` (the client's idempotency id) is a string of 1 to this many bytes.
inline constexpr std::size_t kMaxMsgIdBytes = 64;
constexpr bool valid_msg_id(std::string_view id) { return !id.empty() && id.size() <= kMaxMsgIdBytes; }

struct Request {
  Op op = Op::ping;
  std::optional<nlohmann::json> id;  // any JSON scalar, echoed in the reply
  // Fields by op; which are set depends on op.
  std::string nick;
  std::string room;
  bool current_room = false;  // text mode left out the room: use the one joined last
  std::optional<std::string> key;
  std::optional<std::string> text;
  nlohmann::json data;  // null: absent
  // say: the client's id for this message; a resend with the same id (same nick, same room,
  // within the window) is answered with the first one's seq and not published again.
  // whisper: the same, per sender and target: a resend is answered duplicate, not delivered.
  std::optional<std::string> msg_id;
  std::string to;
  std::string topic;
  std::optional<std::uint64_t> before;
  std::optional<std::uint32_t> limit;   // history: messages; who: members
  std::optional<std::uint64_t> since;   // join: resume after this seq ...
  std::optional<std::string> epoch;     // ... of the room as it was in this epoch
  std::optional<std::string> after;     // who: the page after this nick
  std::optional<std::string> search;
};

struct RequestError {
  ErrorCode code;
  std::string message;
  std::optional<nlohmann::json> id;
};

}  // namespace roomd
