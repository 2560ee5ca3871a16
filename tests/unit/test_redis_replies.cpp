// What the cluster client makes of Redis' replies (cluster/redis_replies): replies built from
// RESP bytes by hiredis' own reader, well-formed and not: says, states, pushes (messages and
// presence), stream ranges, members, who pages, room counts, beats.
#include <hiredis/hiredis.h>

#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "roomd/cluster/redis_replies.hpp"

using namespace roomd::redis_replies;
using roomd::ClusterTopic;
using roomd::ClusterWhisper;

namespace {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// The one complete reply in `resp`, as hiredis reads it off a socket.
ReplyPtr reply(const std::string& resp) {
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(), redisReaderFree);
  REQUIRE(reader);
  REQUIRE(redisReaderFeed(reader.get(), resp.data(), resp.size()) == REDIS_OK);
  void* out = nullptr;
  REQUIRE(redisReaderGetReply(reader.get(), &out) == REDIS_OK);
  REQUIRE(out != nullptr);
  return ReplyPtr(static_cast<redisReply*>(out));
}

std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }

const std::string kLine = "{\"op\":\"message\",\"seq\":7}\n";

}  // namespace

TEST_CASE("redis replies: seqs are 1..2^63-1 in plain digits") {
  CHECK(parse_seq("1") == 1u);
  CHECK(parse_seq("9223372036854775807") == kMaxSeq);
  CHECK(parse_seq("007") == 7u);
  CHECK_FALSE(parse_seq("0"));
  CHECK_FALSE(parse_seq("9223372036854775808"));
  CHECK_FALSE(parse_seq("18446744073709551615"));  // its next would be 0
  CHECK_FALSE(parse_seq("99999999999999999999999"));
  CHECK_FALSE(parse_seq("-1"));
  CHECK_FALSE(parse_seq("+1"));
  CHECK_FALSE(parse_seq(""));
  CHECK_FALSE(parse_seq("12a"));
  CHECK_FALSE(parse_seq(" 12"));
}

TEST_CASE("redis replies: roomd_say's [seq, epoch] and a repeat's [seq, epoch, 1]") {
  auto ok = read_say(reply("*2\r\n:42\r\n" + bulk("00ff00ff00ff00ff")).get());
  REQUIRE(ok);
  CHECK(ok.value->seq == 42);
  CHECK(ok.value->epoch == "00ff00ff00ff00ff");
  CHECK_FALSE(ok.value->duplicate);

  auto repeat = read_say(reply("*3\r\n:41\r\n" + bulk("00ff00ff00ff00ff") + ":1\r\n").get());
  REQUIRE(repeat);
  CHECK(repeat.value->seq == 41);
  CHECK(repeat.value->duplicate);

  auto err = read_say(reply("-ERR Function not found\r\n").get());
  CHECK_FALSE(err);
  CHECK(err.error == "ERR Function not found");

  for (const std::string& odd : {
           std::string("*2\r\n:0\r\n") + bulk("e"),                      // seq 0 is never a message's
           std::string("*2\r\n:-5\r\n") + bulk("e"),                     // negative
           std::string("*2\r\n:-9223372036854775808\r\n") + bulk("e"),   // the most negative
           std::string("*2\r\n") + bulk("42") + bulk("e"),               // seq as a string
           std::string("*2\r\n:42\r\n$-1\r\n"),                          // nil epoch
           std::string("*2\r\n:42\r\n:7\r\n"),                           // integer epoch
           std::string("*2\r\n:42\r\n$0\r\n\r\n"),                       // empty epoch
           std::string("*2\r\n:42\r\n") + bulk("two words"),             // an epoch no message can carry
           std::string("*1\r\n:42\r\n"),                                 // one element
           std::string("*3\r\n:42\r\n") + bulk("e") + bulk("x"),         // a third that is no flag
           std::string("*3\r\n:42\r\n") + bulk("e") + ":0\r\n",         // a flag that is not 1
           std::string("*3\r\n:42\r\n") + bulk("e") + ":2\r\n",
           std::string("*4\r\n:42\r\n") + bulk("e") + ":1\r\n:1\r\n",  // four
           std::string("*0\r\n"), std::string("*-1\r\n"), std::string("$-1\r\n"), std::string(":42\r\n"),
           std::string("+OK\r\n"), std::string("*2\r\n*0\r\n") + bulk("e")}) {
    CAPTURE(odd);
    auto r = read_say(reply(odd).get());
    CHECK_FALSE(r);
    CHECK(r.error == "odd reply");
  }
  CHECK(read_say(nullptr).error == "no reply");
}

TEST_CASE("redis replies: roomd_state's [seq, epoch, lines]") {
  auto ok = read_state(reply("*3\r\n:7\r\n" + bulk("abc") + "*2\r\n" + bulk(kLine) + "$-1\r\n").get());
  REQUIRE(ok);
  CHECK(ok.value->last_seq == 7);
  CHECK(ok.value->epoch == "abc");
  // Lines as they are, a nil one as empty: the router keeps those that lead up to the seq.
  CHECK(ok.value->recent == std::vector<std::string>{kLine, ""});

  auto fresh = read_state(reply("*3\r\n:0\r\n" + bulk("abc") + "*0\r\n").get());
  REQUIRE(fresh);  // a room nobody has said anything in yet
  CHECK(fresh.value->last_seq == 0);
  CHECK(fresh.value->recent.empty());

  CHECK(fresh.value->base == 0);  // a reply without a base (an older library): 0

  // Where the incarnation began: after a node's stored seq when Redis had lost the room.
  auto again = read_state(reply("*4\r\n:120\r\n" + bulk("abc") + "*0\r\n:100\r\n").get());
  REQUIRE(again);
  CHECK(again.value->last_seq == 120);
  CHECK(again.value->base == 100);
  auto seeded = read_state(reply("*4\r\n:100\r\n" + bulk("abc") + "*0\r\n:100\r\n").get());
  REQUIRE(seeded);  // nothing said since it began again
  CHECK(seeded.value->base == 100);

  CHECK(read_state(reply("-BUSY Redis is busy\r\n").get()).error == "BUSY Redis is busy");
  for (const std::string& odd : {
           std::string("*3\r\n:-1\r\n") + bulk("e") + "*0\r\n",
           std::string("*3\r\n") + bulk("7") + bulk("e") + "*0\r\n",
           std::string("*3\r\n:7\r\n$-1\r\n*0\r\n"),
           std::string("*3\r\n:7\r\n") + bulk("") + "*0\r\n",
           std::string("*3\r\n:7\r\n") + bulk("e") + "$-1\r\n",  // lines nil
           std::string("*3\r\n:7\r\n") + bulk("e") + "*-1\r\n",  // a nil array is nil
           std::string("*3\r\n:7\r\n") + bulk("e") + bulk(kLine),
           std::string("*2\r\n:7\r\n") + bulk("e"),
           std::string("*4\r\n:7\r\n") + bulk("e") + "*0\r\n:8\r\n",   // began after its own seq
           std::string("*4\r\n:7\r\n") + bulk("e") + "*0\r\n:-1\r\n",
           std::string("*4\r\n:7\r\n") + bulk("e") + "*0\r\n" + bulk("1"),  // base as a string
           std::string("*5\r\n:7\r\n") + bulk("e") + "*0\r\n:1\r\n:1\r\n",
           std::string("*0\r\n")}) {
    CAPTURE(odd);
    auto r = read_state(reply(odd).get());
    CHECK_FALSE(r);
    CHECK(r.error == "odd reply");
  }
}

TEST_CASE("redis replies: a subscriber's pushes") {
  auto message = read_push(reply("*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("12 ep " + kLine)).get());
  REQUIRE(message);
  CHECK(message->kind == Push::Kind::message);
  CHECK(message->room == "lobby");
  CHECK(message->message == Message{12, "ep", kLine});

  auto subscribed = read_push(reply("*3\r\n" + bulk("subscribe") + bulk("roomd:{a b}") + ":1\r\n").get());
  REQUIRE(subscribed);
  CHECK(subscribed->kind == Push::Kind::subscribed);
  CHECK(subscribed->room == "a b");

  // A room whose name has braces is still the part between the first "{" and the last "}".
  auto braces = read_push(reply("*3\r\n" + bulk("subscribe") + bulk("roomd:{x}y}") + ":1\r\n").get());
  REQUIRE(braces);
  CHECK(braces->room == "x}y");

  for (const std::string& ignored : {
           "*3\r\n" + bulk("unsubscribe") + bulk("roomd:{lobby}") + ":0\r\n",
           "*4\r\n" + bulk("pmessage") + bulk("roomd:*") + bulk("roomd:{lobby}") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("other:{lobby}") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby") + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + ":5\r\n",
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + "$-1\r\n",
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + "*1\r\n" + bulk("1 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("0 e " + kLine),
           "*3\r\n" + bulk("message") + bulk("roomd:{lobby}") + bulk("x e " + kLine),
           "*3\r\n" + bulk("message") + "$-1\r\n" + bulk("1 e " + kLine),
           "*3\r\n:1\r\n" + bulk("roomd:{lobby}") + bulk("1 e " + kLine),
           "*2\r\n" + bulk("message") + bulk("roomd:{lobby}"),
           std::string("*-1\r\n"), std::string("*0\r\n"), bulk("message"), std::string("-ERR no\r\n")}) {
    CAPTURE(ignored);
    CHECK_FALSE(read_push(reply(ignored).get()));
  }
  CHECK_FALSE(read_push(nullptr));
}

TEST_CASE("redis replies: a message's payload \"SEQ EPOCH LINE\"") {
  CHECK(read_message("3 ep " + kLine) == Message{3, "ep", kLine});
  // The line may hold spaces; only the first two separate.
  CHECK(read_message("3 ep {\"a\": 1}\n") == Message{3, "ep", "{\"a\": 1}\n"});
  CHECK_FALSE(read_message(""));
  CHECK_FALSE(read_message("3"));
  CHECK_FALSE(read_message("3 ep"));
  CHECK_FALSE(read_message("3 ep "));                // no line
  CHECK_FALSE(read_message("3  " + kLine));          // no epoch
  CHECK_FALSE(read_message(" ep " + kLine));         // no seq
  CHECK_FALSE(read_message("0 ep " + kLine));
  CHECK_FALSE(read_message("-3 ep " + kLine));
  CHECK_FALSE(read_message("3x ep " + kLine));
  CHECK_FALSE(read_message("18446744073709551615 ep " + kLine));
  CHECK_FALSE(read_message("3 ep {\"a\":1}"));       // no newline
  CHECK_FALSE(read_message("3 ep [1]\n"));           // not an object
  CHECK_FALSE(read_message("3 ep {}\n\n"));
}

TEST_CASE("redis replies: roomd_say_batch's [epoch, [seq, flag, ...]]") {
  auto ok = read_say_batch(reply("*2\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n:3\r\n:1\r\n:8\r\n:0\r\n").get(), 3);
  REQUIRE(ok);
  CHECK(*ok.value == std::vector<SayResult>{{7, "ep", false}, {3, "ep", true}, {8, "ep", false}});

  auto err = read_say_batch(reply("-ERR Function not found\r\n").get(), 1);
  CHECK_FALSE(err);
  CHECK(err.error == "ERR Function not found");
  CHECK(read_say_batch(nullptr, 1).error == "no reply");

  for (const std::string& odd : {
           "*2\r\n" + bulk("ep") + "*4\r\n:7\r\n:0\r\n:8\r\n:0\r\n",  // two answers for three says
           "*2\r\n" + bulk("ep") + "*7\r\n:7\r\n:0\r\n:8\r\n:0\r\n:9\r\n:0\r\n:1\r\n",  // one too many
           "*2\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n:0\r\n:0\r\n:8\r\n:0\r\n",  // seq 0
           "*2\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n:-3\r\n:0\r\n:8\r\n:0\r\n",  // negative
           "*2\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n:3\r\n:2\r\n:8\r\n:0\r\n",  // a flag not 0 or 1
           "*2\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n" + bulk("3") + ":0\r\n:8\r\n:0\r\n",  // a seq as a string
           "*2\r\n" + bulk("two words") + "*6\r\n:7\r\n:0\r\n:3\r\n:1\r\n:8\r\n:0\r\n",
           std::string("*2\r\n$0\r\n\r\n*6\r\n:7\r\n:0\r\n:3\r\n:1\r\n:8\r\n:0\r\n"),  // empty epoch
           std::string("*2\r\n:5\r\n*6\r\n:7\r\n:0\r\n:3\r\n:1\r\n:8\r\n:0\r\n"),      // an integer epoch
           "*3\r\n" + bulk("ep") + "*6\r\n:7\r\n:0\r\n:3\r\n:1\r\n:8\r\n:0\r\n:1\r\n",
           "*2\r\n:7\r\n" + bulk("ep"),  // roomd_say's shape
           std::string("*0\r\n"), std::string("$-1\r\n"), std::string("+OK\r\n")}) {
    CAPTURE(odd);
    auto r = read_say_batch(reply(odd).get(), 3);
    CHECK_FALSE(r);
    CHECK(r.error == "odd reply");
  }
  CHECK_FALSE(read_say_batch(reply("*2\r\n" + bulk("ep") + "*0\r\n").get(), 0));  // no say: never sent
}

TEST_CASE("redis replies: a batch's payload \"b EPOCH\\n\" and \"SEQ LEN LINE\" entries") {
  const std::string other = "{\"op\":\"message\",\"text\":\"a 3 b\\n\"}\n";
  auto entry = [](std::uint64_t seq, const std::string& line) {
    return std::to_string(seq) + " " + std::to_string(line.size()) + " " + line;
  };
  auto batch = read_batch("b ep\n" + entry(4, kLine) + entry(5, other) + entry(9, kLine));
  REQUIRE(batch);
  CHECK(*batch == std::vector<Message>{{4, "ep", kLine}, {5, "ep", other}, {9, "ep", kLine}});
  CHECK(read_batch("b ep\n" + entry(1, kLine)) == std::vector<Message>{{1, "ep", kLine}});

  auto push = read_push(reply("*3\r\n" + bulk("message") + bulk("roomd:{hall}") + bulk("b ep\n" + entry(4, kLine) +
                                                                                        entry(5, other))).get());
  REQUIRE(push);
  CHECK(push->kind == Push::Kind::batch);
  CHECK(push->room == "hall");
  CHECK(push->batch == std::vector<Message>{{4, "ep", kLine}, {5, "ep", other}});

  for (const std::string& odd : {
           std::string("b ep\n"),                                  // no message
           "b ep" + entry(4, kLine),                               // no newline after the epoch
           "b \n" + entry(4, kLine),                               // no epoch
           "b e p\n" + entry(4, kLine),                            // two words
           "b ep\n" + entry(5, kLine) + entry(4, kLine),           // seqs going back
           "b ep\n" + entry(5, kLine) + entry(5, kLine),           // a seq twice
           "b ep\n" + entry(0, kLine),                             // seq 0
           "b ep\n4 999 " + kLine,                                 // longer than what is there
           "b ep\n4 3 " + kLine,                                   // shorter: the rest is no entry
           "b ep\n4  " + kLine,                                    // no length
           "b ep\n4 -1 " + kLine,
           "b ep\n4 x " + kLine,
           std::string("b ep\n4 2 {}"),                            // no newline: not a line
           "b ep\n" + entry(4, "[1]\n"),                           // not an object
           "b ep\n" + entry(4, kLine) + "5",                       // a torn entry after
           "c ep\n" + entry(4, kLine)}) {
    CAPTURE(odd);
    CHECK_FALSE(read_batch(odd));
    CHECK_FALSE(read_push(reply("*3\r\n" + bulk("message") + bulk("roomd:{hall}") + bulk(odd)).get()));
  }
}

TEST_CASE("redis replies: XRANGE entries for a gap fill") {
  auto entry = [](const std::string& id, const std::string& line) {
    return "*2\r\n" + bulk(id) + "*2\r\n" + bulk("m") + bulk(line);
  };
  auto ok = read_range(reply("*3\r\n" + entry("5-0", kLine) + entry("6-0", kLine) + entry("9", kLine)).get());
  REQUIRE(ok);
  CHECK(ok.value->held == 3);
  CHECK(ok.value->entries == std::vector<StreamEntry>{{5, kLine}, {6, kLine}, {9, kLine}});

  auto empty = read_range(reply("*0\r\n").get());
  REQUIRE(empty);
  CHECK(empty.value->held == 0);
  CHECK(empty.value->entries.empty());

  // Malformed entries are skipped, but counted as held (a full batch means read on).
  auto skipped = read_range(reply("*12\r\n" + entry("0-1", kLine) + entry("-1-0", kLine) + entry("x-0", kLine) +
                                  entry("18446744073709551615-0", kLine) + entry("7-0", "not json\n") +
                                  "*2\r\n:8\r\n*2\r\n" + bulk("m") + bulk(kLine) +  // an integer id
                                  "*2\r\n" + bulk("8-0") + "$-1\r\n" +              // nil fields
                                  "*2\r\n" + bulk("8-0") + "*1\r\n" + bulk("m") +    // a field without value
                                  "*3\r\n" + bulk("8-0") + "*2\r\n" + bulk("m") + bulk(kLine) + ":1\r\n" +
                                  "$-1\r\n" + ":8\r\n" + entry("8-0", kLine))
                                .get());
  REQUIRE(skipped);
  CHECK(skipped.value->held == 12);
  CHECK(skipped.value->entries == std::vector<StreamEntry>{{8, kLine}});

  auto err = read_range(reply("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n").get());
  CHECK_FALSE(err);
  CHECK(err.error.starts_with("WRONGTYPE"));
  CHECK(read_range(reply("$-1\r\n").get()).error == "odd reply");
  CHECK(read_range(reply(":3\r\n").get()).error == "odd reply");
  CHECK(read_range(nullptr).error == "no reply");
}

namespace {
std::string array(std::initializer_list<std::string> items) {
  std::string out = "*" + std::to_string(items.size()) + "\r\n";
  for (const auto& i : items) out += i;
  return out;
}
}  // namespace

TEST_CASE("redis replies: presence \"p VERSION NODE KIND NICK...\" on a room's channel") {
  using K = roomd::ClusterPresence::Kind;
  CHECK(read_presence("p 4 n1:ab join ann") == Presence{4, "n1:ab", K::join, {"ann"}, ""});
  CHECK(read_presence("p 5 n1:ab leave ann bob") == Presence{5, "n1:ab", K::leave, {"ann", "bob"}, ""});
  CHECK(read_presence("p 6 n1:ab nick ann Bob") == Presence{6, "n1:ab", K::nick, {"ann", "Bob"}, ""});
  for (const char* odd : {"", "p", "p ", "p 4", "p 4 n1", "p 4 n1 join", "p 4 n1 join ",  // no nick
                          "p 4 n1 join ann ", "p 4 n1 join  ann", "p  4 n1 join ann",      // empty words
                          "p 0 n1 join ann", "p x n1 join ann", "p -4 n1 join ann",        // versions
                          "p 18446744073709551615 n1 join ann", "p 4 n1 part ann",         // a kind unknown
                          "p 4 n1 nick ann", "p 4 n1 nick a b c",                          // nick: two nicks
                          "p 4 n1 join 9ann", "p 4 n1 join a{b", "q 4 n1 join ann", "4 n1 join ann"}) {
    CAPTURE(odd);
    CHECK_FALSE(read_presence(odd));
  }
  auto push = read_push(reply(array({bulk("message"), bulk("roomd:{hall}"), bulk("p 9 n2:cd leave x")})).get());
  REQUIRE(push);
  CHECK(push->kind == Push::Kind::presence);
  CHECK(push->room == "hall");
  CHECK(push->presence == Presence{9, "n2:cd", K::leave, {"x"}, ""});
  // A malformed presence is not taken for a message either.
  CHECK_FALSE(read_push(reply(array({bulk("message"), bulk("roomd:{hall}"), bulk("p 9 n2 leave")})).get()));
}

TEST_CASE("redis replies: a topic is presence \"p VERSION NODE topic NICK TEXT\", the text as it is") {
  using K = roomd::ClusterPresence::Kind;
  CHECK(read_presence("p 7 n1:ab topic ann  two  spaces ") == Presence{7, "n1:ab", K::topic, {"ann"}, " two  spaces "});
  CHECK(read_presence("p 7 n1:ab topic ann ") == Presence{7, "n1:ab", K::topic, {"ann"}, ""});
  CHECK(read_presence("p 7 n1:ab topic ann") == Presence{7, "n1:ab", K::topic, {"ann"}, ""});
  for (const char* odd : {"p 7 n1 topic", "p 7 n1 topic ", "p 7 n1 topic 9ann text", "p 7 n1 topic  text"}) {
    CAPTURE(odd);
    CHECK_FALSE(read_presence(odd));
  }
}

TEST_CASE("redis replies: a whisper \"FROM TS TO TEXT\" on a node's own channel") {
  auto push = read_push(reply(array({bulk("message"), bulk("roomd:node:n3:ab"), bulk("Ann 1700 carol hi  there ")})).get());
  REQUIRE(push);
  CHECK(push->kind == Push::Kind::whisper);
  CHECK(push->whisper == ClusterWhisper{"carol", "Ann", "hi  there ", 1700, ""});
  CHECK(read_whisper("ann 5 bob ") == ClusterWhisper{"bob", "ann", "", 5, ""});
  // With a msg_id, hex after the target (it may hold spaces).
  CHECK(hex("a b\xff") == "612062ff");
  CHECK(read_whisper("ann 5 bob:612062ff hi") == ClusterWhisper{"bob", "ann", "hi", 5, "a b\xff"});
  for (const char* odd : {"ann 5 bob: hi", "ann 5 bob:6 hi", "ann 5 bob:6g hi", "ann 5 bob:6A hi", "ann 5 :61 hi"}) {
    CAPTURE(odd);
    CHECK_FALSE(read_whisper(odd));
  }
  for (const char* odd : {"", "ann", "ann 5 bob", "ann x bob hi", "ann -5 bob hi", "ann 5 Bob hi", "9ann 5 bob hi",
                          "ann 5 9bob hi", " ann 5 bob hi", "ann  5 bob hi"}) {
    CAPTURE(odd);
    CHECK_FALSE(read_whisper(odd));
  }
  // Its subscribe needs no answer; a malformed one is nothing.
  CHECK_FALSE(read_push(reply(array({bulk("subscribe"), bulk("roomd:node:n3:ab"), ":1\r\n"})).get()));
  CHECK_FALSE(read_push(reply(array({bulk("message"), bulk("roomd:node:n3:ab"), bulk("ann 5 bob")})).get()));
}

TEST_CASE("redis replies: roomd_members' [version, [[node, nick...]...]], this node's left out") {
  auto ok = read_members(reply(array({":12\r\n", array({array({bulk("me:1"), bulk("ann")}),
                                                         array({bulk("n2:x"), bulk("bob"), bulk("9bad"), ":3\r\n", bulk("cy")}),
                                                         array({}), ":4\r\n", array({":1\r\n", bulk("zed")})})}))
                             .get(),
                         "me:1");
  REQUIRE(ok);
  CHECK(ok.value->version == 12);
  CHECK(ok.value->others == std::vector<std::string>{"bob", "cy"});
  auto none = read_members(reply(array({":0\r\n", array({})})).get(), "me");
  REQUIRE(none);
  CHECK(none.value->others.empty());
  for (const std::string& odd : {array({":-1\r\n", array({})}), array({bulk("3"), array({})}), array({":3\r\n", ":1\r\n"}),
                                 array({":3\r\n"}), std::string("*0\r\n"), std::string(":3\r\n")}) {
    CAPTURE(odd);
    CHECK(read_members(reply(odd).get(), "me").error == "odd reply");
  }
  CHECK(read_members(reply("-ERR Function not found\r\n").get(), "me").error == "ERR Function not found");
  CHECK(read_members(nullptr, "me").error == "no reply");
}

TEST_CASE("redis replies: roomd_topic_of's [version, text, by], nil and nil for none") {
  const std::string nil = "$-1\r\n";
  auto topic = read_topic(reply(array({":3\r\n", bulk("hello  there "), bulk("ann")})).get());
  REQUIRE(topic);
  CHECK(*topic.value == TopicRead{3, ClusterTopic{"hello  there ", "ann"}});
  auto none = read_topic(reply(array({":0\r\n", nil, nil})).get());
  REQUIRE(none);
  CHECK(*none.value == TopicRead{0, std::nullopt});
  for (const std::string& odd : {array({":3\r\n", bulk("t"), bulk("9bad")}), array({":3\r\n", bulk("t"), nil}),
                                 array({":3\r\n", nil, bulk("ann")}), array({":-1\r\n", nil, nil}),
                                 array({":3\r\n", bulk("t")}), array({bulk("3"), bulk("t"), bulk("ann")})}) {
    CAPTURE(odd);
    CHECK(read_topic(reply(odd).get()).error == "odd reply");
  }
  CHECK(read_topic(reply("-ERR Function not found\r\n").get()).error == "ERR Function not found");
  CHECK(read_topic(nullptr).error == "no reply");
}

TEST_CASE("redis replies: roomd_who's [count, [nick...], more]") {
  auto ok = read_who(reply(array({":5\r\n", array({bulk("ann"), bulk("bob"), bulk("no good")}), ":1\r\n"})).get());
  REQUIRE(ok);
  CHECK(ok.value->count == 5);
  CHECK(ok.value->nicks == std::vector<std::string>{"ann", "bob"});
  CHECK(ok.value->more);
  auto last = read_who(reply(array({":2\r\n", array({bulk("ann")}), ":0\r\n"})).get());
  REQUIRE(last);
  CHECK_FALSE(last.value->more);
  for (const std::string& odd : {array({":1\r\n", array({bulk("a"), bulk("b")}), ":0\r\n"}),  // more listed than counted
                                 array({":-1\r\n", array({}), ":0\r\n"}), array({":1\r\n", bulk("a"), ":0\r\n"}),
                                 array({":1\r\n", array({}), bulk("0")}), array({":1\r\n", array({})})}) {
    CAPTURE(odd);
    CHECK(read_who(reply(odd).get()).error == "odd reply");
  }
}

TEST_CASE("redis replies: roomd_rooms' [room, count...], roomd_beat, nick lists and integers") {
  const std::string nil = "$-1\r\n";
  auto rooms = read_room_counts(
      reply(array({bulk("hall"), ":3\r\n", bulk("hall"), bulk("a topic"), bulk("bad name"), ":1\r\n", bulk("x"), nil,
                   bulk("lost"), bulk("a topic of no room counted"), bulk("y"), ":-1\r\n", bulk("side"), ":0\r\n",
                   bulk("odd")}))
          .get());
  REQUIRE(rooms);
  REQUIRE(rooms.value->size() == 2);
  CHECK((*rooms.value)[0].room == "hall");
  CHECK((*rooms.value)[0].members == 3);
  CHECK((*rooms.value)[0].topic == std::optional<std::string>("a topic"));
  CHECK((*rooms.value)[1].room == "side");
  CHECK_FALSE((*rooms.value)[1].topic);
  CHECK(read_room_counts(reply(":1\r\n").get()).error == "odd reply");

  auto beat = read_beat(reply(array({":1\r\n", array({bulk("ann"), bulk("x y")}), array({bulk("n1:a"), bulk(""), ":2\r\n"})})).get());
  REQUIRE(beat);
  CHECK(beat.value->fresh);
  CHECK(beat.value->lost == std::vector<std::string>{"ann"});
  CHECK(beat.value->expired == std::vector<std::string>{"n1:a"});
  auto quiet = read_beat(reply(array({":0\r\n", array({}), array({})})).get());
  REQUIRE(quiet);
  CHECK_FALSE(quiet.value->fresh);
  for (const std::string& odd : {array({":2\r\n", array({}), array({})}), array({":0\r\n", array({})}),
                                 array({":0\r\n", bulk("a"), array({})}), array({bulk("1"), array({}), array({})})}) {
    CAPTURE(odd);
    CHECK(read_beat(reply(odd).get()).error == "odd reply");
  }

  auto nicks = read_nicks(reply(array({bulk("ann"), ":1\r\n", bulk("b c")})).get());
  REQUIRE(nicks);
  CHECK(*nicks.value == std::vector<std::string>{"ann"});
  CHECK(read_nicks(reply("$-1\r\n").get()).error == "odd reply");

  CHECK(*read_integer(reply(":-1\r\n").get()).value == -1);
  CHECK(read_integer(reply(bulk("1")).get()).error == "odd reply");
  CHECK(read_integer(reply("-ERR x\r\n").get()).error == "ERR x");
  CHECK(read_integer(nullptr).error == "no reply");
}

TEST_CASE("redis replies: CONFIG GET appendonly appendfsync says whether Redis' answers are on disk") {
  auto always = read_durability(reply("*4\r\n" + bulk("appendonly") + bulk("yes") + bulk("appendfsync") + bulk("always")).get());
  REQUIRE(always);
  CHECK(always.value->durable());
  // In either order (Redis lists them as it likes).
  auto swapped = read_durability(reply("*4\r\n" + bulk("appendfsync") + bulk("always") + bulk("appendonly") + bulk("yes")).get());
  REQUIRE(swapped);
  CHECK(*swapped.value == *always.value);
  for (const std::string& weak : {
           std::string("*4\r\n") + bulk("appendonly") + bulk("yes") + bulk("appendfsync") + bulk("everysec"),
           std::string("*4\r\n") + bulk("appendonly") + bulk("no") + bulk("appendfsync") + bulk("always"),
           std::string("*4\r\n") + bulk("appendonly") + bulk("no") + bulk("appendfsync") + bulk("no")}) {
    CAPTURE(weak);
    auto r = read_durability(reply(weak).get());
    REQUIRE(r);
    CHECK_FALSE(r.value->durable());
  }
  // A Redis that hides CONFIG (renamed, or an ACL): why, never taken for durable.
  CHECK(read_durability(reply("-ERR unknown command 'CONFIG'\r\n").get()).error == "ERR unknown command 'CONFIG'");
  for (const std::string& odd : {
           std::string("*2\r\n") + bulk("appendonly") + bulk("yes"),  // one of the two
           std::string("*0\r\n"),
           std::string("*3\r\n") + bulk("appendonly") + bulk("yes") + bulk("appendfsync"),
           std::string("*4\r\n") + bulk("appendonly") + ":1\r\n" + bulk("appendfsync") + bulk("always"),
           std::string("$-1\r\n")}) {
    CAPTURE(odd);
    CHECK_FALSE(read_durability(reply(odd).get()));
  }
  CHECK_FALSE(read_durability(nullptr));
}
