// What a client asks for, in one shape for both JSON and text mode, and the error codes of
// the protocol. Codecs produce Requests; the router consumes them.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace roomd {

enum class Op { nick, rooms, join, leave, say, whisper, who, topic, history, ping, echo, bye, help, stats };

enum class ErrorCode {
  bad_json, bad_request, unknown_op, frame_too_large, bad_utf8, bad_nick, nick_taken,
  bad_room_name, no_such_room, room_full, bad_key, not_member, read_only, rate_limited,
  no_such_nick, server_full, slow_consumer, shutting_down, internal
};

std::string_view to_string(ErrorCode code);

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
  std::string to;
  std::string topic;
  std::optional<std::uint64_t> before;
  std::optional<std::uint32_t> limit;
  std::optional<std::string> search;
};

struct RequestError {
  ErrorCode code;
  std::string message;
  std::optional<nlohmann::json> id;
};

}  // namespace roomd
