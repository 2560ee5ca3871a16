// Wire: every body the server sends a client, built in one place, and the JSON string
// escaping that writes lines by hand.
//
// This file owns the protocol's server -> client shapes (spec §2, §2a): which fields each
// body has and in what order. Field order is part of the wire (clients and tests compare
// JSON; text mode renders from these bodies), so a body is built here and nowhere else.
// Most functions return a body for make_event(); the two hot or bulky ones return the
// finished JSON line instead (Event::from_json_line): a room message, written directly with
// no DOM, and a history reply from the store, which splices stored lines in unparsed.
// (Lines, not EventPtrs: wire sits below event in protocol/, event -> codec -> wire.)
//
// `id` is the id of the request a reply answers: when it has one, it follows "op".
// The builders live in namespace wire (wire::who, wire::rooms, ...) so they read as what
// they build and are not hidden by Router's members of the same names. Op names are in
// request.hpp's op_table, beside the enum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "roomd/protocol/mode.hpp"
#include "roomd/protocol/request.hpp"

namespace roomd {

// Appends `s` as a JSON string literal, escaped exactly as nlohmann::json::dump() does.
void append_json_string(std::string& out, std::string_view s);

namespace wire {

using Id = std::optional<nlohmann::json>;

// ---- the greeting ----------------------------------------------------------------------

// What a client may send before it is paced or refused (welcome's "limits").
struct Limits {
  double rate;
  std::uint32_t burst;
  double query_rate;
  std::uint32_t query_burst;
  std::uint32_t max_frame_bytes;
  double churn_rate;          // nick changes and leaves
  std::uint32_t churn_burst;
};
// {"op":"welcome","server":"roomd","version","proto":1,"nick","motd","hint",
//  "limits":{"rate","burst","query_rate","query_burst","max_frame_bytes","churn_rate","churn_burst"}}
ordered_json welcome(std::string_view version, std::string_view nick, std::string_view motd,
                     const Limits& limits);

// ---- replies to one client's request -----------------------------------------------------

// {"op":op,"id"?}: the start of every reply below.
ordered_json reply(const Id& id, std::string_view op);
ordered_json ok(const Id& id);                                    // {"op":"ok","id"?}
ordered_json ok_nick(const Id& id, std::string_view nick);        // {"op":"ok","id"?,"nick"}
ordered_json ok_seq(const Id& id, std::uint64_t seq, bool duplicate = false);  // {"op":"ok","id"?,"seq","duplicate"?:true}
ordered_json ok_duplicate(const Id& id);                          // {"op":"ok","id"?,"duplicate":true}
ordered_json pong(const Id& id);                                  // {"op":"pong","id"?}
ordered_json echo(const Id& id, std::string_view text);           // {"op":"echo","id"?,"text"}
ordered_json help(const Id& id);                                  // {"op":"help","id"?}
ordered_json bye(const Id& id);                                   // {"op":"bye","id"?}
// {"op":"stats","id"?, ...figures' own keys, in their order}
ordered_json stats(const Id& id, const ordered_json& figures);

// A page of a room's members: nicks in byte order, the room's member count, and whether
// members follow the last one listed.
struct MemberPage {
  std::vector<std::string> nicks;
  std::size_t count = 0;
  bool more = false;
};
// Where a room's sequence stands for a joiner, and whether its `since` was honoured.
struct RoomPosition {
  std::uint64_t seq = 0;  // the room's last seq (0: no message yet)
  std::string_view epoch;
  std::optional<bool> resumed;  // set when the join asked to resume
};
// {"op":"joined","id"?,"room","topic","members":[nicks],"count","more","seq","epoch",
//  "resumed"?,"history":[message...]}; `history` is an array of message bodies, oldest first.
ordered_json joined(const Id& id, std::string_view room, std::string_view topic, MemberPage members,
                    const RoomPosition& position, ordered_json history);
// The same reply as one JSON line (with its '\n') around message lines this server wrote
// (the room's ring, oldest first), spliced in as they are: a join into a busy room replays
// its messages without copying each one's DOM. Lines are taken as history_line takes them.
std::string joined_line(const Id& id, std::string_view room, std::string_view topic, MemberPage members,
                        const RoomPosition& position, std::span<const std::string_view> message_lines);
// {"op":"left","id"?,"room"}
ordered_json left(const Id& id, std::string_view room);
// {"op":"rooms","id"?,"rooms":[room_entry...]}
ordered_json rooms(const Id& id, ordered_json entries);
// {"name","topic","members":count,"keyed"}
ordered_json room_entry(std::string_view name, std::string_view topic, std::size_t members, bool keyed);
// {"op":"who","id"?,"room","members":[nicks],"count","more"}
ordered_json who(const Id& id, std::string_view room, MemberPage members);
// {"op":"history","id"?,"room","messages":[message...],"more"}; messages oldest first.
ordered_json history(const Id& id, std::string_view room, ordered_json messages, bool more);
// The same reply as one JSON line (with its '\n') around message lines this server wrote
// (the history store's bodies, oldest first): they are spliced in as they are, never parsed
// and written again. A trailing "\n" or "\r\n" is cut; a body that is not a JSON object is
// skipped.
std::string history_line(const Id& id, std::string_view room, std::span<const std::string> bodies,
                         bool more);

// {"op":"error","id"?,"code","message"}
ordered_json error_body(ErrorCode code, std::string_view message, const Id& id = std::nullopt);
// The error a slow consumer gets before it is closed (slow_consumer).
ordered_json error_slow_consumer();

// ---- room traffic ------------------------------------------------------------------------

// {"op":"message","room","seq","ts","from","text"?,"data"?}; a null `data` is absent.
ordered_json message(std::string_view room, std::uint64_t seq, std::uint64_t ts, std::string_view from,
                     std::optional<std::string_view> text, const nlohmann::json& data);
// The hot path: message()'s JSON line (with its '\n'), byte for byte what encode_json would
// make of it, written directly into one reserved string.
std::string message_line(std::string_view room, std::uint64_t seq, std::uint64_t ts, std::string_view from,
                         std::optional<std::string_view> text, const nlohmann::json& data);
// message_line() cut around its seq, for a clustered room whose seq the cluster gives:
// head + seq + tail is the line message_line() would make with that seq.
struct MessageLineParts {
  std::string head;
  std::string tail;
};
MessageLineParts message_line_parts(std::string_view room, std::uint64_t ts, std::string_view from,
                                    std::optional<std::string_view> text, const nlohmann::json& data);
// {"op":"whisper","from","to","text","ts"}
ordered_json whisper(std::string_view from, std::string_view to, std::string_view text, std::uint64_t ts);

// {"op":"presence","room","event":"join"|"leave","nick"}
ordered_json presence_join(std::string_view room, std::string_view nick);
ordered_json presence_leave(std::string_view room, std::string_view nick);
// {"op":"presence","room","event":"nick","nick","old"}
ordered_json presence_nick(std::string_view room, std::string_view nick, std::string_view old);
// {"op":"presence","room","event":"topic","nick","topic"}
ordered_json presence_topic(std::string_view room, std::string_view nick, std::string_view topic);
// What changed in a big room over one interval (its presence is summarized, not sent one
// event per change). The lists hold the first changes of the interval, capped; the counts are
// all of them.
struct PresenceSummary {
  std::uint64_t joins = 0;
  std::uint64_t leaves = 0;
  std::uint64_t renames = 0;
  std::vector<std::string> joined;                          // nicks as they joined
  std::vector<std::string> left;                            // nicks as they left
  std::vector<std::pair<std::string, std::string>> renamed;  // (old, new)
};
// {"op":"presence","room","event":"summary","joins","leaves","renames","joined":[nicks],
//  "left":[nicks],"renamed":[{"old","nick"}],"count":members now}
ordered_json presence_summary(std::string_view room, const PresenceSummary& summary, std::size_t count);

// ---- notices from the server itself ------------------------------------------------------
// (system_shutdown and system_lame_duck are the server's, system_dropped, ping and
// error_slow_consumer the connection's; system_reload, system_kicked and system_renamed the router's.)

ordered_json system_shutdown();                                                // {"op":"system","event":"shutdown"}
ordered_json system_reload(std::string_view room, std::string_view reason);    // ...,"room","reason"}
ordered_json system_kicked(std::string_view reason);                           // ...,"reason"}
ordered_json system_dropped(std::string_view room, std::uint64_t count);       // ...,"room","count"}
// This node is draining (lame duck, SIGUSR2): it will close the connection in about
// `reconnect_ms`; reconnect then (elsewhere). {"op":"system","event":"lame_duck","reconnect_ms"}
ordered_json system_lame_duck(std::uint64_t reconnect_ms);
// The server gave the client another nick (a cluster's node could not keep its own).
ordered_json system_renamed(std::string_view nick, std::string_view old, std::string_view reason);  // ...,"nick","old","reason"}
ordered_json ping();                                                           // {"op":"ping"}

}  // namespace wire


}  // namespace roomd
