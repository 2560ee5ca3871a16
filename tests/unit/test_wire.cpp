// The wire module: every server -> client body parses back with its fields in the
// protocol's order, the hand-written lines equal the DOM dumps of the same bodies, and the
// op table reads the same both ways.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/wire.hpp"

using namespace roomd;
using wire::error_body;

namespace {

std::vector<std::string> keys(const ordered_json& body) {
  std::vector<std::string> out;
  for (auto it = body.begin(); it != body.end(); ++it) out.push_back(it.key());
  return out;
}

// A body as a client gets it: one line, exactly `line`; parsed back it is the same body,
// with exactly `fields`, in that order.
void check_body(const ordered_json& body, std::string_view line, const std::vector<std::string>& fields) {
  const std::string bytes = encode_json(body);
  CHECK(bytes == std::string(line) + "\n");
  const auto back = ordered_json::parse(bytes);
  CHECK(back == body);
  CHECK(keys(back) == fields);
}

const wire::Id no_id = std::nullopt;

}  // namespace

TEST_CASE("wire: the welcome") {
  auto w = wire::welcome("1.2", "guest-1", "hi \"there\"", {50, 100, 20, 50, 65536, 2, 30});
  check_body(w,
             R"({"op":"welcome","server":"roomd","version":"1.2","proto":1,"nick":"guest-1","motd":"hi \"there\"",)"
             R"("hint":"send JSON lines, or type /help for text mode",)"
             R"("limits":{"rate":50.0,"burst":100,"query_rate":20.0,"query_burst":50,"max_frame_bytes":65536,"churn_rate":2.0,"churn_burst":30}})",
             {"op", "server", "version", "proto", "nick", "motd", "hint", "limits"});
  CHECK(keys(w["limits"]) == std::vector<std::string>{"rate", "burst", "query_rate", "query_burst", "max_frame_bytes",
                                                      "churn_rate", "churn_burst"});
  CHECK(render_text(w) == "* hi \"there\"\n");
}

TEST_CASE("wire: replies carry the request's id right after op, and only when it had one") {
  check_body(wire::reply(no_id, "pong"), R"({"op":"pong"})", {"op"});
  check_body(wire::reply(nlohmann::json(7), "pong"), R"({"op":"pong","id":7})", {"op", "id"});
  check_body(wire::reply(nlohmann::json("a\"b"), "x"), R"({"op":"x","id":"a\"b"})", {"op", "id"});
  check_body(wire::reply(nlohmann::json(nullptr), "ok"), R"({"op":"ok","id":null})", {"op", "id"});
  check_body(wire::reply(nlohmann::json(-1.5), "ok"), R"({"op":"ok","id":-1.5})", {"op", "id"});
  const wire::Id id = nlohmann::json(3);
  check_body(wire::ok(no_id), R"({"op":"ok"})", {"op"});
  check_body(wire::ok(id), R"({"op":"ok","id":3})", {"op", "id"});
  check_body(wire::ok_nick(id, "alice"), R"({"op":"ok","id":3,"nick":"alice"})", {"op", "id", "nick"});
  check_body(wire::ok_nick(no_id, "alice"), R"({"op":"ok","nick":"alice"})", {"op", "nick"});
  check_body(wire::ok_seq(id, 18446744073709551615u), R"({"op":"ok","id":3,"seq":18446744073709551615})",
             {"op", "id", "seq"});
  check_body(wire::pong(id), R"({"op":"pong","id":3})", {"op", "id"});
  check_body(wire::echo(id, "e\n"), R"({"op":"echo","id":3,"text":"e\n"})", {"op", "id", "text"});
  check_body(wire::help(no_id), R"({"op":"help"})", {"op"});
  check_body(wire::bye(id), R"({"op":"bye","id":3})", {"op", "id"});
  check_body(wire::stats(id, ordered_json{{"uptime_s", 5}, {"clients", 2}}),
             R"({"op":"stats","id":3,"uptime_s":5,"clients":2})", {"op", "id", "uptime_s", "clients"});
}

TEST_CASE("wire: joined, left, rooms, who") {
  const wire::Id id = nlohmann::json("j");
  auto history = ordered_json::array();
  history.push_back(wire::message("lobby", 1, 5, "bob", "hi", nullptr));
  auto j = wire::joined(id, "lobby", "General", {{"bob", "Alice", "carol"}, 3, false}, {1, "e1", std::nullopt},
                        history);
  check_body(j,
             R"({"op":"joined","id":"j","room":"lobby","topic":"General","members":["Alice","bob","carol"],)"
             R"("count":3,"more":false,"seq":1,"epoch":"e1",)"
             R"("history":[{"op":"message","room":"lobby","seq":1,"ts":5,"from":"bob","text":"hi"}]})",
             {"op", "id", "room", "topic", "members", "count", "more", "seq", "epoch", "history"});
  check_body(wire::joined(no_id, "r", "", {}, {0, "e2", false}, ordered_json::array()),
             R"({"op":"joined","room":"r","topic":"","members":[],"count":0,"more":false,"seq":0,"epoch":"e2",)"
             R"("resumed":false,"history":[]})",
             {"op", "room", "topic", "members", "count", "more", "seq", "epoch", "resumed", "history"});

  check_body(wire::left(id, "lobby"), R"({"op":"left","id":"j","room":"lobby"})", {"op", "id", "room"});

  auto entries = ordered_json::array();
  entries.push_back(wire::room_entry("lobby", "General", 3, false));
  entries.push_back(wire::room_entry("vault", "", 0, true));
  check_body(entries[0], R"({"name":"lobby","topic":"General","members":3,"keyed":false})",
             {"name", "topic", "members", "keyed"});
  check_body(wire::rooms(no_id, entries),
             R"({"op":"rooms","rooms":[{"name":"lobby","topic":"General","members":3,"keyed":false},)"
             R"({"name":"vault","topic":"","members":0,"keyed":true}]})",
             {"op", "rooms"});
  check_body(wire::rooms(id, ordered_json::array()), R"({"op":"rooms","id":"j","rooms":[]})", {"op", "id", "rooms"});

  check_body(wire::who(id, "lobby", {{"zed", "Bob", "amy"}, 7, true}),
             R"({"op":"who","id":"j","room":"lobby","members":["Bob","amy","zed"],"count":7,"more":true})",
             {"op", "id", "room", "members", "count", "more"});
}

TEST_CASE("wire: a presence summary") {
  wire::PresenceSummary summary{.joins = 3, .leaves = 1, .renames = 1, .joined = {"a", "b"}, .left = {"c"},
                                .renamed = {{"d", "e"}}};
  check_body(wire::presence_summary("big", summary, 1002),
             R"({"op":"presence","room":"big","event":"summary","joins":3,"leaves":1,"renames":1,)"
             R"("joined":["a","b"],"left":["c"],"renamed":[{"old":"d","nick":"e"}],"count":1002})",
             {"op", "room", "event", "joins", "leaves", "renames", "joined", "left", "renamed", "count"});
}

TEST_CASE("wire: history, as a body and as a line spliced from stored messages") {
  const std::vector<std::string> stored = {
      wire::message_line("store", 1, 10, "alice", "one \"1\"", nullptr),
      wire::message_line("store", 2, 11, "bob", std::nullopt, nlohmann::json{{"k", 1}}),
  };
  auto messages = ordered_json::array();
  for (const auto& line : stored) messages.push_back(ordered_json::parse(line));
  for (const wire::Id& id : {no_id, wire::Id(nlohmann::json(-7)), wire::Id(nlohmann::json("h\\"))}) {
    for (bool more : {false, true}) {
      auto body = wire::history(id, "store", messages, more);
      std::vector<std::string> fields{"op"};
      if (id) fields.push_back("id");
      for (const char* f : {"room", "messages", "more"}) fields.push_back(f);
      check_body(body, encode_json(body).substr(0, encode_json(body).size() - 1), fields);
      CHECK(wire::history_line(id, "store", stored, more) == encode_json(body));
    }
  }
  check_body(wire::history(nlohmann::json(1), "r", ordered_json::array(), false),
             R"({"op":"history","id":1,"room":"r","messages":[],"more":false})",
             {"op", "id", "room", "messages", "more"});
  CHECK(wire::history_line(no_id, "r", {}, true) ==
        "{\"op\":\"history\",\"room\":\"r\",\"messages\":[],\"more\":true}\n");
  // Line endings are cut; what is not a JSON object (not one of ours) is left out.
  const std::vector<std::string> messy = {"{\"a\":1}\r\n", "not ours\n", "", "{", "{\"b\":2}\n\n"};
  CHECK(wire::history_line(no_id, "r", messy, false) ==
        "{\"op\":\"history\",\"room\":\"r\",\"messages\":[{\"a\":1},{\"b\":2}],\"more\":false}\n");
}

TEST_CASE("wire: errors") {
  check_body(error_body(ErrorCode::no_such_room, "no room 'x'"),
             R"({"op":"error","code":"no_such_room","message":"no room 'x'"})", {"op", "code", "message"});
  check_body(wire::error_body(ErrorCode::bad_json, "x", nlohmann::json("id1")),
             R"({"op":"error","id":"id1","code":"bad_json","message":"x"})", {"op", "id", "code", "message"});
  check_body(wire::error_slow_consumer(),
             R"({"op":"error","code":"slow_consumer","message":"you are not reading fast enough; closing"})",
             {"op", "code", "message"});
}

TEST_CASE("wire: room traffic") {
  check_body(wire::message("lobby", 1, 5, "alice", "hi", nullptr),
             R"({"op":"message","room":"lobby","seq":1,"ts":5,"from":"alice","text":"hi"})",
             {"op", "room", "seq", "ts", "from", "text"});
  check_body(wire::message("lobby", 2, 6, "alice", "hi", 42),
             R"({"op":"message","room":"lobby","seq":2,"ts":6,"from":"alice","text":"hi","data":42})",
             {"op", "room", "seq", "ts", "from", "text", "data"});
  check_body(wire::message("lobby", 3, 7, "alice", std::nullopt, nlohmann::json::array({1})),
             R"({"op":"message","room":"lobby","seq":3,"ts":7,"from":"alice","data":[1]})",
             {"op", "room", "seq", "ts", "from", "data"});
  check_body(wire::whisper("alice", "bob", "psst", 9),
             R"({"op":"whisper","from":"alice","to":"bob","text":"psst","ts":9})",
             {"op", "from", "to", "text", "ts"});
  check_body(wire::presence_join("r", "bob"), R"({"op":"presence","room":"r","event":"join","nick":"bob"})",
             {"op", "room", "event", "nick"});
  check_body(wire::presence_leave("r", "bob"), R"({"op":"presence","room":"r","event":"leave","nick":"bob"})",
             {"op", "room", "event", "nick"});
  check_body(wire::presence_nick("r", "robert", "bob"),
             R"({"op":"presence","room":"r","event":"nick","nick":"robert","old":"bob"})",
             {"op", "room", "event", "nick", "old"});
  check_body(wire::presence_topic("r", "server", "new \"t\""),
             R"({"op":"presence","room":"r","event":"topic","nick":"server","topic":"new \"t\""})",
             {"op", "room", "event", "nick", "topic"});
  CHECK(render_text(wire::presence_nick("r", "robert", "bob")) == "* bob is now known as robert in r\n");
}

TEST_CASE("wire: notices from the server") {
  check_body(wire::system_shutdown(), R"({"op":"system","event":"shutdown"})", {"op", "event"});
  check_body(wire::system_reload("gone", "room removed"),
             R"({"op":"system","event":"reload","room":"gone","reason":"room removed"})",
             {"op", "event", "room", "reason"});
  check_body(wire::system_kicked("bye now"), R"({"op":"system","event":"kicked","reason":"bye now"})",
             {"op", "event", "reason"});
  check_body(wire::system_dropped("lobby", 12), R"({"op":"system","event":"dropped","room":"lobby","count":12})",
             {"op", "event", "room", "count"});
  check_body(wire::ping(), R"({"op":"ping"})", {"op"});
  CHECK(render_text(wire::system_dropped("lobby", 12)) == "! system: dropped lobby (12 messages skipped)\n");
  CHECK(render_text(wire::ping()).empty());
  check_body(wire::system_lame_duck(11500), R"({"op":"system","event":"lame_duck","reconnect_ms":11500})",
             {"op", "event", "reconnect_ms"});
  CHECK(render_text(wire::system_lame_duck(11500)) ==
        "! system: lame_duck: this server is going away; you will be disconnected in about 12 s, then connect again\n");
}

TEST_CASE("wire: the fast message line is the DOM dump of the same body") {
  const std::string texts[] = {
      "",
      "plain",
      "quote \" backslash \\ slash / both \\\"",
      std::string("ctl \x01\x1f\b\f\n\r\t del \x7f nul ") + std::string(1, '\0') + " end",
      "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \xe2\x80\xa8",
      std::string(300, 'x') + "\"" + std::string(300, '\\'),
  };
  const nlohmann::json datas[] = {
      nullptr,
      42,
      -1.25,
      "s \"q\" \x01 \xc3\xa9",
      nlohmann::json::parse(R"({"z":[1,2.5,"x\u0001",null,true],"a":{"y":{},"b":[]},"u":"\u00e9\ud83d\ude00"})"),
      nlohmann::json::array(),
      false,
  };
  const std::uint64_t big = std::numeric_limits<std::uint64_t>::max();
  int compared = 0;
  for (const auto& text : texts) {
    for (const auto& data : datas) {
      for (bool has_text : {true, false}) {
        if (!has_text && data.is_null()) continue;  // the router never publishes neither
        std::optional<std::string_view> t;
        if (has_text) t = text;
        for (const char* from : {"alice", "server", "a\"b"}) {
          auto body = wire::message("lobby.1-x_y", big - 1, big, from, t, data);
          auto line = wire::message_line("lobby.1-x_y", big - 1, big, from, t, data);
          CHECK(line == encode_json(body));
          CHECK(ordered_json::parse(line) == body);
          ++compared;
        }
      }
    }
  }
  CHECK(compared > 100);
  CHECK(wire::message_line("r", 1, 2, "a", "b", nullptr) ==
        "{\"op\":\"message\",\"room\":\"r\",\"seq\":1,\"ts\":2,\"from\":\"a\",\"text\":\"b\"}\n");
}

TEST_CASE("op table: every Op has one name, read the same both ways") {
  std::set<std::string_view> names;
  std::size_t i = 0;
  for (const auto& entry : op_table) {
    CHECK(static_cast<std::size_t>(entry.op) == i++);
    CHECK(op_name(entry.op) == entry.name);
    CHECK(names.insert(entry.name).second);
    if (entry.in_json) CHECK(op_from_name(entry.name) == entry.op);
    else CHECK_FALSE(op_from_name(entry.name).has_value());
  }
  CHECK(i == static_cast<std::size_t>(Op::stats) + 1);
  CHECK(op_name(Op::say) == "say");
  CHECK(op_from_name("whisper") == Op::whisper);
  // help is text mode's (/help); in JSON it is an unknown op, as it always was.
  CHECK_FALSE(op_from_name("help").has_value());
  auto help = parse_json_request(R"({"op":"help"})");
  REQUIRE(std::holds_alternative<RequestError>(help));
  CHECK(std::get<RequestError>(help).code == ErrorCode::unknown_op);
  CHECK(std::get<Request>(parse_text_line("/help")).op == Op::help);
  for (std::string_view bad : {"", "Say", "SAY", "say ", "sa", "message", "pong"})
    CHECK_FALSE(op_from_name(bad).has_value());
}

TEST_CASE("op table: request_json writes each op so the codec reads the same request back") {
  for (const auto& entry : op_table) {
    Request r;
    r.op = entry.op;
    r.id = nlohmann::json(5);
    r.nick = "alice";
    r.room = "lobby";
    r.key = "k";
    r.text = "hello";
    r.to = "bob";
    r.topic = "t";
    r.limit = 10;
    const ordered_json frame = request_json(r);
    CHECK(frame["op"] == entry.name);
    CHECK(keys(frame)[0] == "op");
    auto parsed = parse_json_request(encode_json(frame).substr(0, encode_json(frame).size() - 1));
    if (!entry.in_json) {
      REQUIRE(std::holds_alternative<RequestError>(parsed));
      CHECK(std::get<RequestError>(parsed).code == ErrorCode::unknown_op);
      continue;
    }
    REQUIRE_MESSAGE(std::holds_alternative<Request>(parsed), entry.name);
    const Request& back = std::get<Request>(parsed);
    CHECK(back.op == entry.op);
    CHECK(request_json(back) == frame);
  }
}

TEST_CASE("wire: joined_line splices message lines and is byte for byte joined()'s line") {
  const wire::Id id = nlohmann::json(7);
  std::vector<std::string> lines = {wire::message_line("lobby", 4, 9, "amy", "a \"q\"", nullptr),
                                    wire::message_line("lobby", 5, 10, "bob", std::nullopt, nlohmann::json{{"k", 1}})};
  std::vector<std::string_view> views(lines.begin(), lines.end());
  auto history = ordered_json::array();
  for (const auto& l : lines) history.push_back(ordered_json::parse(l));
  for (bool resumed : {false, true}) {
    wire::RoomPosition pos{5, "ab12", resumed};
    wire::MemberPage page{{"zed", "amy"}, 9, true};
    CHECK(wire::joined_line(id, "lobby", "T", page, pos, views) ==
          encode_json(wire::joined(id, "lobby", "T", page, pos, history)));
  }
  wire::RoomPosition none{0, "e", std::nullopt};
  CHECK(wire::joined_line(std::nullopt, "r", "", {}, none, {}) ==
        encode_json(wire::joined(std::nullopt, "r", "", {}, none, ordered_json::array())));
}
