#include <doctest/doctest.h>

#include <limits>
#include <string>
#include <vector>

#include "roomd/app/metrics.hpp"

using roomd::Histogram;
using roomd::PrometheusWriter;

TEST_CASE("metrics: label values escape backslash, double quote and newline, nothing else") {
  CHECK(roomd::escape_label_value("plain") == "plain");
  CHECK(roomd::escape_label_value(R"(a\b)") == R"(a\\b)");
  CHECK(roomd::escape_label_value(R"(say "hi")") == R"(say \"hi\")");
  CHECK(roomd::escape_label_value("two\nlines") == R"(two\nlines)");
  CHECK(roomd::escape_label_value("tab\there, ünïcode") == "tab\there, ünïcode");
  // HELP text escapes backslash and newline; a double quote stays as it is.
  CHECK(roomd::escape_help("a \"b\" \\ c\nd") == "a \"b\" \\\\ c\\nd");
}

TEST_CASE("metrics: a family is HELP, TYPE, then its samples with labels in order") {
  PrometheusWriter w;
  w.family("roomd_x_total", "counter", "Things.\nCounted.");
  w.sample("roomd_x_total", {{"transport", "tcp"}, {"path", "C:\\\"q\"\n"}}, 3);
  w.sample("roomd_x_total", {{"transport", "ws"}}, 0);
  w.gauge("roomd_g", "A gauge.", 1.5);
  CHECK(w.text() ==
        "# HELP roomd_x_total Things.\\nCounted.\n"
        "# TYPE roomd_x_total counter\n"
        "roomd_x_total{transport=\"tcp\",path=\"C:\\\\\\\"q\\\"\\n\"} 3\n"
        "roomd_x_total{transport=\"ws\"} 0\n"
        "# HELP roomd_g A gauge.\n"
        "# TYPE roomd_g gauge\n"
        "roomd_g 1.5\n");
}

TEST_CASE("metrics: values are integers when whole, shortest round-trip otherwise, and Prometheus' infinities") {
  CHECK(roomd::format_metric_value(0) == "0");
  CHECK(roomd::format_metric_value(18446744073709551616.0) == "18446744073709551616");
  CHECK(roomd::format_metric_value(1e300) == "1e+300");
  CHECK(roomd::format_metric_value(123456789) == "123456789");
  CHECK(roomd::format_metric_value(0.1) == "0.1");
  CHECK(roomd::format_metric_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(roomd::format_metric_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(roomd::format_metric_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
}

TEST_CASE("metrics: a histogram's buckets are cumulative, le is inclusive, +Inf holds every observation") {
  Histogram h({0.01, 0.1, 1});
  h.observe(0.005);
  h.observe(0.01);  // on the bound: in the 0.01 bucket
  h.observe(0.5);
  h.observe(7);     // over every bound: only in +Inf
  CHECK(h.counts() == std::vector<std::uint64_t>{2, 0, 1, 1});
  CHECK(h.count() == 4);
  CHECK(h.sum() == doctest::Approx(7.515));
  PrometheusWriter w;
  w.histogram("roomd_lag_seconds", "Lag.", h);
  CHECK(w.text() ==
        "# HELP roomd_lag_seconds Lag.\n"
        "# TYPE roomd_lag_seconds histogram\n"
        "roomd_lag_seconds_bucket{le=\"0.01\"} 2\n"
        "roomd_lag_seconds_bucket{le=\"0.1\"} 2\n"
        "roomd_lag_seconds_bucket{le=\"1\"} 3\n"
        "roomd_lag_seconds_bucket{le=\"+Inf\"} 4\n"
        "roomd_lag_seconds_sum 7.515\n"
        "roomd_lag_seconds_count 4\n");
}

TEST_CASE("metrics: an empty histogram still has every bucket, at 0") {
  Histogram h({1, 2});
  PrometheusWriter w;
  w.histogram("roomd_h", "H.", h);
  CHECK(w.text().find("roomd_h_bucket{le=\"+Inf\"} 0\nroomd_h_sum 0\nroomd_h_count 0\n") != std::string::npos);
}

TEST_CASE("metrics: newest_max looks at the newest n samples of the ring only") {
  std::vector<std::uint32_t> ring(5, 0);
  CHECK(roomd::newest_max(ring, 0, 3) == 0);  // nothing written yet
  std::size_t next = 0;
  for (std::uint32_t v : {900u, 1u, 2u, 3u}) ring[next++ % ring.size()] = v;
  CHECK(roomd::newest_max(ring, next, 3) == 3);
  CHECK(roomd::newest_max(ring, next, 4) == 900);
  CHECK(roomd::newest_max(ring, next, 100) == 900);  // only what was written
  for (std::uint32_t v : {4u, 5u}) ring[next++ % ring.size()] = v;  // wraps: 900 overwritten
  CHECK(roomd::newest_max(ring, next, 5) == 5);
  CHECK(roomd::newest_max(std::vector<std::uint32_t>{}, 7, 3) == 0);
}

TEST_CASE("metrics: the process figures are read from /proc") {
  auto f = roomd::read_process_figures();
  CHECK(f.resident_bytes > 0);
  CHECK(f.open_fds >= 3);  // stdin, stdout, stderr at least
}
