#pragma once
// tessera-serve's metrics: counters, gauges and histograms, exposed in the Prometheus text
// format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/) for GET /metrics.
//
// A family (one name, one type, one help text) holds series told apart by their labels. Labels
// are kept in the order given and two orders of the same labels are two series: give them in
// one order. text() lists the families by name and each family's series sorted by labels, as
// Prometheus's Go client does:
//   # HELP tessera_requests_total Requests answered, by route and status.
//   # TYPE tessera_requests_total counter
//   tessera_requests_total{route="/v1/embed",status="200"} 12
//   # HELP tessera_request_seconds Time from request to response.
//   # TYPE tessera_request_seconds histogram
//   tessera_request_seconds_bucket{route="/v1/embed",le="0.0005"} 0
//   ...
//   tessera_request_seconds_bucket{route="/v1/embed",le="+Inf"} 12
//   tessera_request_seconds_sum{route="/v1/embed"} 0.731
//   tessera_request_seconds_count{route="/v1/embed"} 12
//
// Thread-safe: one mutex guards everything (an update is a map lookup and an addition; the
// server makes a few per request).

#include <tessera/core/error.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;  // in the order given

enum class MetricType { counter, gauge, histogram };

// The Content-Type of Metrics::text().
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

// `count` upper bounds start, start*factor, start*factor^2, ...
inline std::vector<double> exponential_buckets(double start, double factor, int count) {
  check(start > 0 && std::isfinite(start), "exponential_buckets: start must be positive, got ",
        start);
  check(factor > 1 && std::isfinite(factor), "exponential_buckets: factor must be > 1, got ",
        factor);
  check(count >= 1, "exponential_buckets: count must be at least 1, got ", count);
  std::vector<double> bounds(static_cast<std::size_t>(count));
  double bound = start;
  for (double& b : bounds) {
    b = bound;
    bound *= factor;
  }
  return bounds;
}

// Upper bounds for request and batch latencies, in seconds: 0.5 ms to 60 s in 1-2-5 steps
// (x2 or x2.5), then 30 and 60 s (the longest a client should wait).
inline std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60};
}

namespace detail {

// A metric name: [a-zA-Z_:][a-zA-Z0-9_:]*; a label name: [a-zA-Z_][a-zA-Z0-9_]*.
inline bool valid_metric_name(std::string_view name, bool colon_allowed) {
  const auto letter = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  if (name.empty() || !(letter(name[0]) || (colon_allowed && name[0] == ':'))) return false;
  return std::all_of(name.begin() + 1, name.end(), [&](char c) {
    return letter(c) || (c >= '0' && c <= '9') || (colon_allowed && c == ':');
  });
}

// A sample value as Go's strconv.ParseFloat reads it: the shortest text that reads back as the
// same double ("3", "0.25", "1e-05"), and +Inf, -Inf, NaN.
inline void append_number(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    out.append(buffer, result.ptr);
  }
}

// A label value between double quotes: backslash, double quote and line feed escaped.
inline void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// {a="x",b="y"} with `extra` (le="...") last; nothing for no labels at all.
inline void append_labels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                          std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  const auto one = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_label_value(out, value);
    out += '"';
  };
  for (const auto& [name, value] : labels) one(name, value);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out += '}';
}

}  // namespace detail

class Metrics {
 public:
  // Registers a family. name: [a-zA-Z_:][a-zA-Z0-9_:]*, not registered before. A histogram's
  // `buckets` are its finite upper bounds, strictly increasing, at least one (latency_buckets(),
  // exponential_buckets()); the exposition adds +Inf. Counters and gauges take no buckets.
  void describe(const std::string& name, MetricType type, const std::string& help,
                std::vector<double> buckets = {}) {
    check(detail::valid_metric_name(name, true), "metric name \"", name,
          "\" is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
    if (type == MetricType::histogram) {
      check(!buckets.empty(), "histogram ", name, ": needs at least one bucket upper bound");
      for (std::size_t i = 0; i < buckets.size(); ++i) {
        check(std::isfinite(buckets[i]), "histogram ", name, ": bucket bound ", i,
              " must be finite (+Inf is added by itself), got ", buckets[i]);
        if (i > 0) {  // (check's arguments are all evaluated: buckets[i - 1] only from i = 1)
          check(buckets[i - 1] < buckets[i], "histogram ", name,
                ": bucket bounds must be strictly increasing, got ", buckets[i - 1], " then ",
                buckets[i]);
        }
      }
    } else {
      check(buckets.empty(), "metric ", name, ": only a histogram takes buckets");
    }
    const std::lock_guard lock(mutex_);
    check(families_.find(name) == families_.end(), "metric ", name, " is registered twice");
    Family& family = families_[name];
    family.type = type;
    family.help = help;
    family.bounds = std::move(buckets);
  }

  // Adds `amount` (finite, >= 0) to a counter's series, creating it at 0.
  void add(const std::string& name, const Labels& labels, double amount = 1) {
    check(amount >= 0 && std::isfinite(amount), "counter ", name,
          ": can only go up, by a finite amount >= 0, got ", amount);
    const std::lock_guard lock(mutex_);
    series(family(name, MetricType::counter), name, labels).value += amount;
  }

  // Sets a gauge's series to `value`.
  void set(const std::string& name, const Labels& labels, double value) {
    const std::lock_guard lock(mutex_);
    series(family(name, MetricType::gauge), name, labels).value = value;
  }

  // Records one observation (not NaN) in a histogram's series: the first bucket whose upper
  // bound is >= value (buckets are "le", less or equal), its sum and its count.
  void observe(const std::string& name, const Labels& labels, double value) {
    check(!std::isnan(value), "histogram ", name, ": cannot observe NaN");
    const std::lock_guard lock(mutex_);
    Family& f = family(name, MetricType::histogram);
    Series& s = series(f, name, labels);
    const auto bucket =
        std::lower_bound(f.bounds.begin(), f.bounds.end(), value) - f.bounds.begin();
    ++s.buckets[static_cast<std::size_t>(bucket)];
    s.value += value;
    ++s.count;
  }

  // The exposition: every family by name (# HELP, # TYPE, then its series sorted by labels);
  // a histogram's series as cumulative _bucket{...,le="..."} lines ending at le="+Inf", then
  // _sum and _count. Ends with a line feed.
  std::string text() const {
    const std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& [name, f] : families_) {
      out += "# HELP ";
      out += name;
      out += ' ';
      for (char c : f.help) {  // HELP escapes backslash and line feed only
        if (c == '\\') {
          out += "\\\\";
        } else if (c == '\n') {
          out += "\\n";
        } else {
          out += c;
        }
      }
      out += "\n# TYPE ";
      out += name;
      out += f.type == MetricType::counter ? " counter\n"
             : f.type == MetricType::gauge ? " gauge\n"
                                           : " histogram\n";
      for (const auto& [labels, s] : f.series) {
        if (f.type != MetricType::histogram) {
          out += name;
          detail::append_labels(out, labels);
          out += ' ';
          detail::append_number(out, s.value);
          out += '\n';
          continue;
        }
        std::uint64_t cumulative = 0;
        std::string bound;
        for (std::size_t b = 0; b <= f.bounds.size(); ++b) {
          cumulative += s.buckets[b];
          bound.clear();
          if (b < f.bounds.size()) {
            detail::append_number(bound, f.bounds[b]);
          } else {
            bound = "+Inf";
          }
          out += name;
          out += "_bucket";
          detail::append_labels(out, labels, "le", bound);
          out += ' ';
          out += std::to_string(cumulative);
          out += '\n';
        }
        out += name;
        out += "_sum";
        detail::append_labels(out, labels);
        out += ' ';
        detail::append_number(out, s.value);
        out += '\n';
        out += name;
        out += "_count";
        detail::append_labels(out, labels);
        out += ' ';
        out += std::to_string(s.count);
        out += '\n';
      }
    }
    return out;
  }

  // A counter's or gauge's value; 0 for a series never updated.
  double value(const std::string& name, const Labels& labels) const {
    const std::lock_guard lock(mutex_);
    const Family& f = family(name);
    check(f.type != MetricType::histogram, "metric ", name,
          " is a histogram: read it with count() or quantile(), not value()");
    const auto found = f.series.find(labels);
    return found == f.series.end() ? 0 : found->second.value;
  }

  // A histogram's number of observations; 0 for a series never observed.
  std::uint64_t count(const std::string& name, const Labels& labels) const {
    const std::lock_guard lock(mutex_);
    const Family& f = family(name, MetricType::histogram);
    const auto found = f.series.find(labels);
    return found == f.series.end() ? 0 : found->second.count;
  }

  // The q-quantile (q in [0, 1]) that a histogram's buckets imply, as PromQL's
  // histogram_quantile computes it: rank = q * count; the first bucket whose cumulative count
  // reaches rank; linear interpolation between its lower bound (the previous bound, 0 for the
  // first bucket) and its upper bound. A rank in the +Inf bucket gives the highest finite
  // bound; a first bucket whose bound is <= 0 gives that bound. NaN with no observations.
  // One difference: PromQL divides 0 by 0 for q = 0 when the first bucket is empty (NaN); here
  // empty leading buckets are skipped, so q = 0 gives the lower bound of the first bucket that
  // holds an observation.
  double quantile(const std::string& name, const Labels& labels, double q) const {
    check(q >= 0 && q <= 1, "histogram ", name, ": quantile must be in [0, 1], got ", q);
    const std::lock_guard lock(mutex_);
    const Family& f = family(name, MetricType::histogram);
    const auto found = f.series.find(labels);
    if (found == f.series.end() || found->second.count == 0) {
      return std::numeric_limits<double>::quiet_NaN();
    }
    const Series& s = found->second;
    const double rank = q * static_cast<double>(s.count);
    std::uint64_t before = 0;  // observations in the buckets below b
    for (std::size_t b = 0; b < f.bounds.size(); ++b) {
      const std::uint64_t cumulative = before + s.buckets[b];
      if (cumulative > 0 && static_cast<double>(cumulative) >= rank) {
        if (b == 0 && f.bounds[0] <= 0) return f.bounds[0];
        const double start = b == 0 ? 0 : f.bounds[b - 1];
        return start + (f.bounds[b] - start) * (rank - static_cast<double>(before)) /
                           static_cast<double>(s.buckets[b]);
      }
      before = cumulative;
    }
    return f.bounds.back();  // the rank falls in the +Inf bucket
  }

 private:
  // A counter's or gauge's value, or a histogram's sum, count and per-bucket counts (not
  // cumulative; the last one is the +Inf bucket).
  struct Series {
    double value = 0;
    std::uint64_t count = 0;
    std::vector<std::uint64_t> buckets;
  };
  struct Family {
    MetricType type = MetricType::counter;
    std::string help;
    std::vector<double> bounds;  // a histogram's finite upper bounds
    std::map<Labels, Series> series;
  };

  static const char* type_name(MetricType type) {
    return type == MetricType::counter ? "counter"
           : type == MetricType::gauge ? "gauge"
                                       : "histogram";
  }

  const Family& family(const std::string& name) const {
    const auto found = families_.find(name);
    check(found != families_.end(), "metric ", name, " was not described (Metrics::describe)");
    return found->second;
  }
  const Family& family(const std::string& name, MetricType type) const {
    const Family& f = family(name);
    check(f.type == type, "metric ", name, " is a ", type_name(f.type), ", not a ",
          type_name(type));
    return f;
  }
  Family& family(const std::string& name, MetricType type) {
    return const_cast<Family&>(std::as_const(*this).family(name, type));
  }

  // The series of `labels`, made on first use once its label names are checked: each a label
  // name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with the reserved "__"), none twice, and no "le"
  // on a histogram (its buckets use it).
  static Series& series(Family& f, const std::string& name, const Labels& labels) {
    const auto found = f.series.find(labels);
    if (found != f.series.end()) return found->second;
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const std::string& label = labels[i].first;
      check(detail::valid_metric_name(label, false) && label.rfind("__", 0) != 0, "metric ", name,
            ": label name \"", label,
            "\" is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)");
      check(!(f.type == MetricType::histogram && label == "le"), "histogram ", name,
            ": the label name \"le\" is reserved for its buckets");
      for (std::size_t j = 0; j < i; ++j) {
        check(labels[j].first != label, "metric ", name, ": label \"", label, "\" given twice");
      }
    }
    Series& s = f.series[labels];
    if (f.type == MetricType::histogram) s.buckets.assign(f.bounds.size() + 1, 0);
    return s;
  }

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

}  // namespace tessera::serve
