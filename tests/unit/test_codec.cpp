#include <doctest/doctest.h>

#include <string>

#include "roomd/protocol/codec.hpp"
#include "roomd/protocol/event.hpp"
#include "roomd/protocol/wire.hpp"
#include "roomd/base/names.hpp"

using namespace roomd;
using wire::error_body;

namespace {
Request ok(const ParseResult& r) {
  REQUIRE(std::holds_alternative<Request>(r));
  return std::get<Request>(r);
}
ErrorCode code(const ParseResult& r) {
  REQUIRE(std::holds_alternative<RequestError>(r));
  return std::get<RequestError>(r).code;
}
}  // namespace

TEST_CASE("utf8 validation") {
  CHECK(valid_utf8("plain"));
  CHECK(valid_utf8("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"));
  CHECK_FALSE(valid_utf8("\xff"));
  CHECK_FALSE(valid_utf8("\xc3\x28"));          // bad continuation
  CHECK_FALSE(valid_utf8("\xc0\xaf"));          // overlong
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(valid_utf8("\xe2\x9c"));          // truncated
}

TEST_CASE("mode detection") {
  CHECK(detect_mode("{\"op\":\"ping\"}") == Mode::json);
  CHECK(detect_mode("  {") == Mode::json);
  CHECK(detect_mode("/join x") == Mode::text);
  CHECK(detect_mode("hello") == Mode::text);
}

TEST_CASE("json requests: every op parses") {
  CHECK(ok(parse_json_request(R"({"op":"nick","nick":"a"})")).nick == "a");
  CHECK(ok(parse_json_request(R"({"op":"rooms"})")).op == Op::rooms);
  auto j = ok(parse_json_request(R"({"op":"join","room":"r","key":"k","id":1})"));
  CHECK(j.room == "r");
  CHECK(*j.key == "k");
  CHECK(*j.id == 1);
  CHECK(ok(parse_json_request(R"({"op":"leave","room":"r"})")).op == Op::leave);
  auto s = ok(parse_json_request(R"({"op":"say","room":"r","data":[1,{"a":null}]})"));
  CHECK_FALSE(s.text);
  CHECK(s.data.dump() == R"([1,{"a":null}])");
  CHECK_FALSE(s.current_room);
  CHECK(*ok(parse_json_request(R"({"op":"whisper","to":"b","text":"t"})")).text == "t");
  CHECK(ok(parse_json_request(R"({"op":"who","room":"r"})")).op == Op::who);
  CHECK(ok(parse_json_request(R"({"op":"topic","room":"r","topic":"t"})")).topic == "t");
  auto h = ok(parse_json_request(R"({"op":"history","room":"r","before":10,"limit":900,"search":"w"})"));
  CHECK(*h.before == 10);
  CHECK(*h.limit == 500);  // capped
  CHECK(*h.search == "w");
  CHECK(ok(parse_json_request(R"({"op":"ping","id":"x"})")).id->get<std::string>() == "x");
  CHECK(*ok(parse_json_request(R"({"op":"echo","text":"e"})")).text == "e");
  CHECK(ok(parse_json_request(R"({"op":"bye"})")).op == Op::bye);
}

TEST_CASE("json requests: every parse error code") {
  CHECK(code(parse_json_request("{nope")) == ErrorCode::bad_json);
  CHECK(code(parse_json_request("Bye")) == ErrorCode::bad_json);
  CHECK(code(parse_json_request("\"str\"")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request("[]")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request("{}")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":1})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"ping","id":{}})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"warp"})")) == ErrorCode::unknown_op);
  CHECK(code(parse_json_request("{\"op\":\"echo\",\"text\":\"\xff\"}")) == ErrorCode::bad_utf8);
  CHECK(code(parse_json_request(R"({"op":"say","room":"r"})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"say","room":"r","data":null})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"say","room":1,"text":"x"})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"nick"})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"history","room":"r","limit":0})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"history","room":"r","before":-1})")) == ErrorCode::bad_request);
  CHECK(code(parse_json_request(R"({"op":"history","room":"r","limit":1.5})")) == ErrorCode::bad_request);
  // The id survives into the error when it could be read.
  auto e = std::get<RequestError>(parse_json_request(R"({"op":"warp","id":7})"));
  CHECK(*e.id == 7);
}

TEST_CASE("text mode commands") {
  auto say = ok(parse_text_line("hello there"));
  CHECK(say.op == Op::say);
  CHECK(say.current_room);
  CHECK(*say.text == "hello there");
  CHECK(ok(parse_text_line("Bye")).op == Op::bye);
  CHECK(ok(parse_text_line("/quit")).op == Op::bye);
  CHECK(ok(parse_text_line("/nick bob")).nick == "bob");
  auto join = ok(parse_text_line("/join  vault  s3cret"));
  CHECK(join.room == "vault");
  CHECK(*join.key == "s3cret");
  CHECK(ok(parse_text_line("/leave")).current_room);
  CHECK(ok(parse_text_line("/leave x")).room == "x");
  CHECK(ok(parse_text_line("/rooms")).op == Op::rooms);
  CHECK(ok(parse_text_line("/who")).current_room);
  auto msg = ok(parse_text_line("/msg bob hi  there"));
  CHECK(msg.to == "bob");
  CHECK(*msg.text == "hi  there");
  auto topic = ok(parse_text_line("/topic lobby New topic"));
  CHECK(topic.room == "lobby");
  CHECK(topic.topic == "New topic");
  auto h = ok(parse_text_line("/history 20"));
  CHECK(h.current_room);
  CHECK(*h.limit == 20);
  auto h2 = ok(parse_text_line("/history lobby 5"));
  CHECK(h2.room == "lobby");
  CHECK(*h2.limit == 5);
  auto search = ok(parse_text_line("/search lobby apple pie"));
  CHECK(*search.search == "apple pie");
  CHECK(ok(parse_text_line("/help")).op == Op::help);
  CHECK(code(parse_text_line("/fly")) == ErrorCode::unknown_op);
  CHECK(code(parse_text_line("/join")) == ErrorCode::bad_request);
  CHECK(code(parse_text_line("/msg bob")) == ErrorCode::bad_request);
  CHECK(code(parse_text_line("/history lobby x")) == ErrorCode::bad_request);
  CHECK(code(parse_text_line("/search lobby")) == ErrorCode::bad_request);
  CHECK(code(parse_text_line("caf\xc3")) == ErrorCode::bad_utf8);
}

TEST_CASE("rendering") {
  ordered_json m{{"op", "message"}, {"room", "lobby"}, {"seq", 1}, {"ts", 5}, {"from", "alice"}, {"text", "hi"}};
  CHECK(encode_json(m) == "{\"op\":\"message\",\"room\":\"lobby\",\"seq\":1,\"ts\":5,\"from\":\"alice\",\"text\":\"hi\"}\n");
  CHECK(render_text(m) == "[lobby] alice: hi\n");
  CHECK(render_text(error_body(ErrorCode::no_such_room, "no room 'x'")) == "! no_such_room: no room 'x'\n");
  CHECK(render_text({{"op", "presence"}, {"room", "r"}, {"event", "join"}, {"nick", "b"}}) == "* b joined r\n");
  CHECK(render_text({{"op", "presence"}, {"room", "r"}, {"event", "leave"}, {"nick", "b"}}) == "* b left r\n");
  CHECK(render_text({{"op", "ping"}}).empty());  // a person cannot answer it
  CHECK(encode_json(error_body(ErrorCode::bad_json, "x", nlohmann::json("id1"))) ==
        "{\"op\":\"error\",\"id\":\"id1\",\"code\":\"bad_json\",\"message\":\"x\"}\n");
}

TEST_CASE("an event is serialized once per mode and shared") {
  auto e = make_event(ordered_json{{"op", "pong"}});
  const Bytes& a = e->bytes(Mode::json);
  const Bytes& b = e->bytes(Mode::json);
  CHECK(a.get() == b.get());
  CHECK(*e->bytes(Mode::text) == "* pong\n");
}

TEST_CASE("names") {
  CHECK(valid_nick("a"));
  CHECK(valid_nick("Alice_-9"));
  CHECK(valid_nick(std::string(32, 'a')));
  CHECK_FALSE(valid_nick(std::string(33, 'a')));
  CHECK_FALSE(valid_nick(""));
  CHECK_FALSE(valid_nick("9a"));
  CHECK_FALSE(valid_nick("_a"));
  CHECK_FALSE(valid_nick("a b"));
  CHECK(valid_room_name("9"));
  CHECK(valid_room_name("a.b-c_d"));
  CHECK(valid_room_name(std::string(64, 'r')));
  CHECK_FALSE(valid_room_name(std::string(65, 'r')));
  CHECK_FALSE(valid_room_name(".a"));
  CHECK_FALSE(valid_room_name("a/b"));
  CHECK(fold_case("AbC") == "abc");
  auto a = parse_listen_address("[::1]:7000");
  REQUIRE(a);
  CHECK(a->kind == ListenAddress::Kind::ipv6);
  CHECK(a->port == 7000);
  CHECK(parse_listen_address("unix:/run/x.sock")->host == "/run/x.sock");
  CHECK(parse_listen_address("127.0.0.1:0")->port == 0);
  CHECK_FALSE(parse_listen_address("localhost:7000"));
  CHECK_FALSE(parse_listen_address("127.0.0.1"));
  CHECK_FALSE(parse_listen_address("127.0.0.1:x"));
  CHECK_FALSE(parse_listen_address("[::1]7000"));
  CHECK_FALSE(parse_listen_address("unix:"));
}

TEST_CASE("a message line written by hand reads like one nlohmann wrote") {
  for (std::string s : {std::string("plain"), std::string("quote \" backslash \\ slash /"),
                        std::string("ctl \x01\x1f\b\f\n\r\t del \x7f"), std::string("h\xc3\xa9 \xe2\x9c\x93")}) {
    std::string mine;
    append_json_string(mine, s);
    CHECK(mine == ordered_json(s).dump());
  }
  auto e = Event::from_json_line("{\"op\":\"message\",\"seq\":3}\n");
  CHECK(e->body()["seq"] == 3);
  CHECK(*e->bytes(Mode::json) == "{\"op\":\"message\",\"seq\":3}\n");
  CHECK(*e->bytes(Mode::text) == "[] : \n");
}

namespace {
// The fast path must agree with the general parser whenever it answers at all.
void check_same_as_dom(std::string_view frame) {
  auto fast = parse_plain_say(frame);
  if (!fast) return;
  auto dom = parse_json_request_dom(frame);
  const Request* slow = std::get_if<Request>(&dom);
  REQUIRE_MESSAGE(slow, frame);
  CHECK_MESSAGE(slow->op == fast->op, frame);
  CHECK_MESSAGE(slow->room == fast->room, frame);
  CHECK_MESSAGE(slow->text == fast->text, frame);
  CHECK_MESSAGE(slow->msg_id == fast->msg_id, frame);
  CHECK_MESSAGE(slow->data.is_null(), frame);
  CHECK_MESSAGE(slow->id.has_value() == fast->id.has_value(), frame);
  if (slow->id && fast->id) {
    CHECK_MESSAGE(*slow->id == *fast->id, frame);
    CHECK_MESSAGE(slow->id->type() == fast->id->type(), frame);
    CHECK_MESSAGE(slow->id->dump() == fast->id->dump(), frame);
  }
}
}  // namespace

TEST_CASE("plain say: the fast path takes the common frame and agrees with the DOM parser") {
  for (std::string_view frame : {
           R"({"op":"say","room":"lobby","text":"hello"})",
           R"({"room":"lobby","text":"héllo ✓","op":"say"})",
           R"({"op":"say","room":"lobby","text":"","id":0})",
           R"({"id":-42,"op":"say","room":"a.b-c","text":"x"})",
           R"({"op":"say","room":"lobby","text":"t=123;xxxx","id":999999999999999999})",
           R"({"op":"say","room":"lobby","text":"x","id":3,"msg_id":"0b7c-41"})",
           R"({"msg_id":"é","op":"say","room":"lobby","text":"x"})",
       }) {
    CHECK_MESSAGE(parse_plain_say(frame).has_value(), frame);
    check_same_as_dom(frame);
  }
  auto r = parse_plain_say(R"({"op":"say","room":"lobby","text":"hi","id":7})");
  REQUIRE(r);
  CHECK(r->room == "lobby");
  CHECK(r->text == "hi");
  CHECK(r->id == nlohmann::json(7));

  // Everything else goes to the general parser, which gives the same answers as before.
  for (std::string_view frame : {
           R"({"op":"say","room":"lobby","text":"a\"b"})",        // an escape
           R"({"op":"say","room":"lobby","text":"a\u0041"})",
           R"({"op": "say","room":"lobby","text":"x"})",           // a blank
           R"( {"op":"say","room":"lobby","text":"x"})",
           R"({"op":"say","room":"lobby","text":"x"} )",
           R"({"op":"say","room":"lobby","room":"b","text":"x"})",  // a repeated key
           R"({"op":"say","room":"lobby","text":"x","data":1})",    // data
           R"({"op":"say","room":"lobby","text":"x","extra":"y"})",
           R"({"op":"say","room":"lobby"})",                        // no text
           R"({"op":"join","room":"lobby","text":"x"})",            // another op
           R"({"op":"say","room":"lobby","text":"x","id":1.5})",    // ids that are not plain integers
           R"({"op":"say","room":"lobby","text":"x","id":01})",
           R"({"op":"say","room":"lobby","text":"x","id":"a"})",
           R"({"op":"say","room":"lobby","text":"x","id":1234567890123456789})",
           R"({"op":"say","room":"lobby","text":"x","id":-})",
           R"({"op":"say","room":"lobby","text":"x",})",            // not JSON
           R"({"op":"say","room":"lobby","text":"x"}})",
           R"({"op":"say","room":"lobby","text":"x")",
           R"({"op":"say","room":["lobby"],"text":"x"})",
           R"({"op":"say","room":"lobby","text":"x","msg_id":""})",  // msg_ids the general parser refuses
           R"({"op":"say","room":"lobby","text":"x","msg_id":"0123456789012345678901234567890123456789012345678901234567890123x"})",
           R"({"op":"say","room":"lobby","text":"x","msg_id":7})",
           R"({"op":"say","room":"lobby","text":"x","msg_id":"a","msg_id":"b"})",
           "{\"op\":\"say\",\"room\":\"lobby\",\"text\":\"a\tb\"}",  // a raw control character
       }) {
    CHECK_MESSAGE(!parse_plain_say(frame).has_value(), frame);
  }
  CHECK(std::get<RequestError>(parse_json_request(R"({"op":"say","room":"lobby"})")).code == ErrorCode::bad_request);
  CHECK(std::get<RequestError>(parse_json_request(R"({"op":"say","room":"lobby","text":"x",})")).code ==
        ErrorCode::bad_json);
  CHECK(std::get<Request>(parse_json_request(R"({"op":"say","room":"lobby","text":"a\"b"})")).text == "a\"b");
}

TEST_CASE("say: msg_id is a string of 1 to 64 bytes; anything else is a bad_request") {
  auto with = [](std::string msg_id_json) {
    return parse_json_request(R"({"op":"say","room":"lobby","text":"x","id":1,"msg_id":)" + msg_id_json + "}");
  };
  CHECK(std::get<Request>(with(R"("a")")).msg_id == "a");
  CHECK(std::get<Request>(with('"' + std::string(64, 'z') + '"')).msg_id == std::string(64, 'z'));
  CHECK(std::get<Request>(with(R"("a\"b")")).msg_id == "a\"b");  // the general parser's way
  CHECK_FALSE(std::get<Request>(with("null")).msg_id);          // null is absent, as elsewhere
  CHECK_FALSE(std::get<Request>(parse_json_request(R"({"op":"say","room":"lobby","text":"x"})")).msg_id);
  for (const std::string& bad : {std::string(R"("")"), '"' + std::string(65, 'z') + '"', std::string("7"),
                                 std::string("[\"a\"]"), std::string("true")}) {
    CAPTURE(bad);
    auto r = with(bad);
    REQUIRE(std::holds_alternative<RequestError>(r));
    CHECK(std::get<RequestError>(r).code == ErrorCode::bad_request);
    CHECK(std::get<RequestError>(r).id == nlohmann::json(1));
    CHECK(std::get<RequestError>(r).message.find("msg_id") != std::string::npos);
  }
  // Written back as roomcat writes requests, it reads the same.
  Request r = std::get<Request>(with(R"("k-1")"));
  CHECK(std::get<Request>(parse_json_request(request_json(r).dump())).msg_id == "k-1");
}

TEST_CASE("whisper: msg_id as the say's (a string of 1 to 64 bytes), written back the same") {
  auto with = [](std::string msg_id_json) {
    return parse_json_request(R"({"op":"whisper","to":"bob","text":"x","id":1,"msg_id":)" + msg_id_json + "}");
  };
  CHECK(std::get<Request>(with(R"("w 1")")).msg_id == "w 1");
  CHECK_FALSE(std::get<Request>(with("null")).msg_id);
  for (const std::string& bad : {std::string(R"("")"), '"' + std::string(65, 'z') + '"', std::string("7")}) {
    CAPTURE(bad);
    auto r = with(bad);
    REQUIRE(std::holds_alternative<RequestError>(r));
    CHECK(std::get<RequestError>(r).code == ErrorCode::bad_request);
    CHECK(std::get<RequestError>(r).message.find("msg_id") != std::string::npos);
  }
  Request r = std::get<Request>(with(R"("k-1")"));
  CHECK(std::get<Request>(parse_json_request(request_json(r).dump())).msg_id == "k-1");
}

TEST_CASE("plain say: random mutations never make the two paths disagree") {
  const std::string seeds[] = {R"({"op":"say","room":"lobby","text":"hello","id":12})",
                               R"({"text":"t=1;xx","room":"r","op":"say"})"};
  const char alphabet[] = "{}[]\":,\\ 0123456789-.abcdeiopstxy\x01\xc3\xa9";
  std::uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string f = seeds[next() % 2];
    int edits = 1 + static_cast<int>(next() % 3);
    for (int e = 0; e < edits; ++e) {
      std::size_t at = next() % f.size();
      char c = alphabet[next() % (sizeof alphabet - 1)];
      switch (next() % 3) {
        case 0: f[at] = c; break;
        case 1: f = f.substr(0, at) + c + f.substr(at); break;
        default: f.erase(at, 1); break;
      }
      if (f.empty()) f = "{";
    }
    if (!valid_utf8(f)) continue;  // parse_json_request answers bad_utf8 before either path
    if (parse_plain_say(f)) ++accepted;
    check_same_as_dom(f);
  }
  CHECK(accepted > 100);  // the mutations did exercise the fast path
}

TEST_CASE("render_text: a body missing its lists or with flags of another type renders, never crashes") {
  // Found by tests/fuzz (wire_render): a const operator[] on a missing key is undefined
  // behaviour (nlohmann's assertion aborted), and value() threw on a field of another type.
  CHECK(render_text(ordered_json::parse(R"({"op":"rooms","codes":[{"name":"lobby"}]})")) == "* rooms:\n");
  CHECK(render_text(ordered_json::parse(R"({"op":"joined","room":"r"})")) == "* you joined r; members: \n");
  CHECK(render_text(ordered_json::parse(R"({"op":"who","room":"r","members":["a"],"more":1})")) == "* r: a\n");
  CHECK(render_text(ordered_json::parse(R"({"op":"history","room":"r"})")) == "* no messages\n");
  CHECK(render_text(ordered_json::parse(R"({"op":"rooms","rooms":[1,{"name":"x","members":2,"keyed":"yes"}]})")) ==
        "* rooms:\n   ( members)\n  x (2 members)\n");
  CHECK(render_text(ordered_json::parse(R"({"op":"presence","event":"summary","room":"r","joins":"x","count":3})")) ==
        "* r:; 3 members\n");
  // Found by the fuzzer in CI: a count too big for an integer is parsed as a float, and its
  // conversion to an integer was undefined (UBSan). Counts that are not unsigned integers read 0.
  CHECK(render_text(ordered_json::parse(
            R"({"op":"presence","event":"summary","room":"r","joins":6999999999999999999999999999999999999999999999,"count":7009})")) ==
        render_text(ordered_json::parse(R"({"op":"presence","event":"summary","room":"r","count":7009})")));
  CHECK(render_text(ordered_json::parse(R"({"op":"presence","event":"summary","room":"r","leaves":-3,"renames":2.5,"count":3})")) ==
        render_text(ordered_json::parse(R"({"op":"presence","event":"summary","room":"r","count":3})")));
}
