// Metrics: the Prometheus text exposition format (version 0.0.4) and the few figures roomd
// reads about its own process. Plain C++: the server renders its figures with it
// (server_metrics.cpp) and the unit tests check the format.
//
//   # HELP roomd_bytes_out_total Bytes written to clients.
//   # TYPE roomd_bytes_out_total counter
//   roomd_bytes_out_total 12345
//   roomd_connections_open{transport="tcp"} 3
//
// A family's HELP and TYPE come once, before its samples. Label values are escaped
// (backslash, double quote, newline), HELP text likewise (backslash, newline).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace roomd {

// Observations counted into fixed buckets: `bounds` are the upper bounds, ascending; one
// more bucket (+Inf) takes the rest.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Per bucket (not cumulative), bounds().size() + 1 of them; the last is +Inf.
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

class PrometheusWriter {
 public:
  using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

  // HELP and TYPE ("counter", "gauge", "histogram") of the samples that follow.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  void sample(std::string_view name, double value) { sample(name, {}, value); }

  // A family of one unlabelled sample.
  void counter(std::string_view name, std::string_view help, double value);
  void gauge(std::string_view name, std::string_view help, double value);
  // NAME_bucket{le=…} (cumulative), NAME_sum, NAME_count.
  void histogram(std::string_view name, std::string_view help, const Histogram& h);

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string escape_label_value(std::string_view value);
std::string escape_help(std::string_view text);
// Shortest text that reads back as the same double; +Inf, -Inf and NaN as Prometheus spells them.
std::string format_metric_value(double value);

// What /proc says about this process (0 where it cannot be read).
struct ProcessFigures {
  std::uint64_t resident_bytes = 0;  // /proc/self/statm
  std::uint64_t open_fds = 0;        // entries of /proc/self/fd
  double cpu_seconds = 0;            // user + system (getrusage)
};
ProcessFigures read_process_figures();

// The largest of the newest `n` samples of a ring whose next write goes to index `next`
// (`next` counts every write ever made, so fewer than the ring's size were written while it
// is smaller).
std::uint32_t newest_max(const std::vector<std::uint32_t>& ring, std::size_t next, std::size_t n);

}  // namespace roomd
