#pragma once
// Point clouds as a fifth modality, added from outside the library: a tessera::FrontEnd that
// reads a text file of points and groups them into tokens, Point-BERT style (Yu et al. 2022,
// "Point-BERT: Pre-training 3D Point Cloud Transformers with Masked Point Modeling").
//
// The file (read_xyz): one point per line, "x y z", the values separated by spaces, tabs or
// commas ("0.5, -1, 2" is fine). Blank lines and lines starting with '#' are skipped; CRLF line
// ends are fine. Any other line is an error naming file:line: a value that is not a number,
// nan or inf, more or fewer than 3 values; so is a file without points or with more than
// max_points of them.
//
// The grouping (group_points), for n points [n, 3], deterministic:
//   1. normalize: subtract the centroid, divide by the largest distance to it (by 1 when all
//      points are equal), so the cloud fits the unit ball whatever its position and size;
//   2. G = min(num_groups, n) centers by farthest point sampling: first the point nearest the
//      centroid, then each time the point farthest from every center chosen so far (ties:
//      the lowest index; a point is never chosen twice);
//   3. each center's group: its group_size nearest points (itself included), sorted by
//      (distance, index); with fewer than group_size points the sorted list repeats;
//   4. token g = [center xyz, (member - center) xyz for each of the k = group_size members],
//      3 + 3k values; its position = the center's (z, y, x) cell on a grid^3 lattice over
//      [-1, 1]^3, the (t, y, x) of the encoder's RoPE.
//
// How it plugs in (tokenize/front_end.hpp):
//   config.json   "custom_modalities": [{"name": "point_cloud", "input_dim": 99,
//                    "max_tokens": 64, "options": {"group_size": 32, "num_groups": 64}}]
//                 input_dim must be 3 + 3 * group_size; `options` is read by read_options.
//   program       point_cloud::register_front_end();   // before building tessera::FrontEnds
//                 tessera::FrontEnds front(model.config, model_dir);
//                 auto sample = front.load(tessera::SampleFiles{.custom = {{"point_cloud", "a.xyz"}}});
//   encoder       sample.custom["point_cloud"] = {features [G, 3 + 3k], positions [G, 3]}
//                 goes through `point_cloud.patch_embed` [D, 3 + 3k] like any other patch.

#if !defined(TESSERA_HAS_ICU) || !defined(TESSERA_HAS_STB)
#error "point_cloud.hpp registers its front end in tessera::front_end_registry(), which needs ICU and stb"
#endif

#include <tessera/tessera.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace point_cloud {

using PointsMatrix = Eigen::Matrix<double, Eigen::Dynamic, 3, Eigen::RowMajor>;  // [n, 3]

// The front end's settings: config.json's custom_modalities[k].options.
struct Options {
  int group_size = 32;                   // k: points per token
  int num_groups = 64;                   // tokens per cloud, at most (fewer when n is smaller)
  int grid = 16;                         // cells per axis of the position lattice
  std::size_t max_points = 1'000'000;    // larger files are an error
};

// The largest grid: cell indices stay within the position offsets the encoder accepts (2^24).
inline constexpr int max_grid = 1 << 24;

namespace detail {

// A short, printable excerpt of untrusted text for an error message: other bytes as \xNN.
inline std::string excerpt(std::string_view text, std::size_t limit = 24) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    }
  }
  return out + (text.size() > limit ? "'..." : "'");
}

// The positive JSON integer `value` (at most `max`), or an error naming options.<key>.
inline std::uint64_t positive_integer(const std::string& where, const std::string& key,
                                      const nlohmann::json& value, std::uint64_t max) {
  const bool positive = (value.is_number_unsigned() && value.get<std::uint64_t>() > 0) ||
                        (value.is_number_integer() && value.get<std::int64_t>() > 0);
  tessera::check(positive, where, ": options.", key, ": expected a positive integer, got ",
                 value.dump());
  const auto n = value.get<std::uint64_t>();
  tessera::check(n <= max, where, ": options.", key, ": ", n,
                 " is larger than the supported maximum ", max);
  return n;
}

inline bool is_blank(char c) { return c == ' ' || c == '\t'; }
inline bool is_separator(char c) { return is_blank(c) || c == ','; }

// The number `field` (the whole of it), or an error naming `where` and the problem.
inline double parse_value(std::string_view field, const std::string& where) {
  std::string_view digits = field;
  // from_chars takes no leading '+'; a sign is allowed once
  if (digits.size() > 1 && digits[0] == '+' && digits[1] != '-' && digits[1] != '+') {
    digits.remove_prefix(1);
  }
  double value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error == std::errc::result_out_of_range && end == digits.data() + digits.size()) {
    tessera::fail(where, ": value ", excerpt(field), " is out of the range of a double");
  }
  tessera::check(error == std::errc() && end == digits.data() + digits.size(), where,
                 ": not a number: ", excerpt(field));
  tessera::check(std::isfinite(value), where, ": non-finite value ", excerpt(field),
                 " (expected a finite number)");
  return value;
}

// The index of the smallest (largest) entry of `values`, the lowest index on ties.
inline Eigen::Index arg_min(const Eigen::VectorXd& values) {
  Eigen::Index best = 0;
  for (Eigen::Index i = 1; i < values.size(); ++i) {
    if (values[i] < values[best]) best = i;
  }
  return best;
}
inline Eigen::Index arg_max(const Eigen::VectorXd& values) {
  Eigen::Index best = 0;
  for (Eigen::Index i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

// The squared distance from each point to `c`, [n]. Symmetric clouds (a cube's grid, say) hold
// many points at the same distance, so ties decide which points are chosen; the explicit fma
// pins the rounding, where a compiler free to contract x*x + y*y + z*z into fma's or not
// would let two builds break a tie differently.
inline Eigen::VectorXd squared_distances(const PointsMatrix& points,  // [n, 3]
                                         const Eigen::RowVector3d& c) {
  Eigen::VectorXd out(points.rows());
  for (Eigen::Index i = 0; i < points.rows(); ++i) {
    const double dx = points(i, 0) - c.x(), dy = points(i, 1) - c.y(), dz = points(i, 2) - c.z();
    out[i] = std::fma(dx, dx, std::fma(dy, dy, dz * dz));
  }
  return out;
}

// The mean of the points, [3], summed in index order.
inline Eigen::RowVector3d centroid(const PointsMatrix& points) {  // [n, 3]
  Eigen::RowVector3d sum = Eigen::RowVector3d::Zero();
  for (Eigen::Index i = 0; i < points.rows(); ++i) sum += points.row(i);
  return sum / static_cast<double>(points.rows());
}

// The cell of coordinate v in [-1, 1] on `grid` cells: floor((v + 1) / 2 * grid), clamped.
inline std::int64_t grid_cell(double v, int grid) {
  const double cell = std::floor((v + 1) / 2 * grid);
  return static_cast<std::int64_t>(std::clamp(cell, 0.0, static_cast<double>(grid - 1)));
}

}  // namespace detail

// The options of a point-cloud modality, checked against its config entry: each key a
// positive integer, no other keys, and input_dim == 3 + 3 * group_size.
inline Options read_options(const tessera::CustomModalityConfig& config) {
  const std::string where = "custom_modalities \"" + config.name + "\"";
  tessera::check(config.options.is_object(), where, ": options: expected a JSON object, got ",
                 config.options.dump());
  constexpr auto int_max = static_cast<std::uint64_t>(std::numeric_limits<int>::max());
  Options options;
  for (const auto& [key, value] : config.options.items()) {
    if (key == "group_size") {
      options.group_size = static_cast<int>(detail::positive_integer(where, key, value, int_max));
    } else if (key == "num_groups") {
      options.num_groups = static_cast<int>(detail::positive_integer(where, key, value, int_max));
    } else if (key == "grid") {
      options.grid = static_cast<int>(detail::positive_integer(where, key, value, max_grid));
    } else if (key == "max_points") {
      options.max_points = static_cast<std::size_t>(detail::positive_integer(
          where, key, value, std::numeric_limits<std::size_t>::max()));
    } else {
      tessera::fail(where, ": options: unknown key \"", key,
                    "\" (known: group_size, num_groups, grid, max_points)");
    }
  }
  const std::int64_t expected_dim = 3 + 3 * std::int64_t{options.group_size};
  tessera::check(config.input_dim == expected_dim, where, ": input_dim is ", config.input_dim,
                 ", but group_size ", options.group_size, " makes tokens of 3 + 3 * ",
                 options.group_size, " = ", expected_dim, " values");
  tessera::check(options.num_groups <= config.max_tokens, where, ": options.num_groups ",
                 options.num_groups, " is more than max_tokens = ", config.max_tokens);
  return options;
}

// The points of a text file, [n, 3] with 1 <= n <= max_points (format at the top).
inline PointsMatrix read_xyz(const std::filesystem::path& file, std::size_t max_points) {
  const std::string name = file.string();
  std::error_code ignored;
  tessera::check(!std::filesystem::is_directory(file, ignored), name,
                 ": is a directory, expected a text file of points");
  std::ifstream in(file, std::ios::binary);
  tessera::check(in.is_open(), name, ": cannot open: ", std::strerror(errno));

  std::vector<double> values;  // [n * 3]
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    const std::string where = name + ":" + std::to_string(number);
    std::string_view rest = line;
    if (!rest.empty() && rest.back() == '\r') rest.remove_suffix(1);
    while (!rest.empty() && detail::is_blank(rest.front())) rest.remove_prefix(1);
    if (rest.empty() || rest.front() == '#') continue;

    // fields: runs of other characters; between two of them blanks and at most one comma
    double point[3];
    std::size_t count = 0;
    for (;;) {
      std::size_t end = 0;
      while (end < rest.size() && !detail::is_separator(rest[end])) ++end;
      tessera::check(end > 0, where, ": empty value (a comma with no value before or after it)");
      const double value = detail::parse_value(rest.substr(0, end), where);
      if (count < 3) point[count] = value;
      ++count;
      rest.remove_prefix(end);
      while (!rest.empty() && detail::is_blank(rest.front())) rest.remove_prefix(1);
      if (rest.empty()) break;
      if (rest.front() == ',') {
        rest.remove_prefix(1);
        while (!rest.empty() && detail::is_blank(rest.front())) rest.remove_prefix(1);
      }
    }
    tessera::check(count == 3, where, ": expected 3 values (x y z), got ", count);
    tessera::check(values.size() / 3 < max_points, where, ": more than max_points = ", max_points,
                   " points");
    values.insert(values.end(), point, point + 3);
  }
  tessera::check(!in.bad(), name, ": cannot read: ", std::strerror(errno));
  tessera::check(!values.empty(), name, ": no points (expected lines \"x y z\")");
  return Eigen::Map<const PointsMatrix>(values.data(), static_cast<Eigen::Index>(values.size() / 3), 3);
}

// The tokens of a cloud [n, 3], n >= 1 (grouping at the top): features [G, 3 + 3k] and
// positions [G, 3], G = min(num_groups, n), k = group_size, in farthest-point-sampling order.
inline tessera::CustomInput<float> group_points(const PointsMatrix& points,  // [n, 3]
                                                const Options& options) {
  using Eigen::Index;
  const Index n = points.rows();
  tessera::check(n >= 1, "group_points: no points");
  tessera::check(points.allFinite(), "group_points: the points hold a non-finite value");
  tessera::check(options.group_size >= 1 && options.num_groups >= 1 && options.grid >= 1,
                 "group_points: group_size, num_groups and grid must be positive, got ",
                 options.group_size, ", ", options.num_groups, ", ", options.grid);
  const Index k = options.group_size;
  const Index groups = std::min<Index>(options.num_groups, n);  // G

  // 1. Normalize. Two steps keep it exact where it matters: dividing by the largest
  // |coordinate| keeps sums and squares finite for coordinates near the double limits, and
  // subtracting the first point makes equal points exactly 0 (so their radius is exactly 0).
  // Both are undone by the centering and scaling that follow.
  const double magnitude = points.cwiseAbs().maxCoeff();
  PointsMatrix p = points / (magnitude > 0 ? magnitude : 1.0);  // [n, 3]
  const Eigen::RowVector3d first = p.row(0);
  p.rowwise() -= first;
  p.rowwise() -= detail::centroid(p);
  const Eigen::RowVector3d origin = Eigen::RowVector3d::Zero();
  const double radius = std::sqrt(detail::squared_distances(p, origin).maxCoeff());
  if (radius > 0) p /= radius;

  // 2. Farthest point sampling. nearest[i]: squared distance from point i to the nearest
  // chosen center; -1 once i is a center, so it is never chosen again.
  std::vector<Index> centers;  // [G]
  centers.push_back(detail::arg_min(detail::squared_distances(p, origin)));
  Eigen::VectorXd nearest = detail::squared_distances(p, p.row(centers[0]));  // [n]
  nearest[centers[0]] = -1;
  while (static_cast<Index>(centers.size()) < groups) {
    const Index next = detail::arg_max(nearest);
    nearest = nearest.cwiseMin(detail::squared_distances(p, p.row(next)));  // centers stay -1
    nearest[next] = -1;
    centers.push_back(next);
  }

  // 3-4. Each center's k nearest points, and its token.
  tessera::CustomInput<float> out;
  out.features.resize(groups, 3 + 3 * k);  // [G, 3 + 3k]
  out.positions.resize(groups, 3);          // [G, 3] (t, y, x) = (z, y, x) cells
  std::vector<Index> order(static_cast<std::size_t>(n));
  const auto members = std::min<std::size_t>(static_cast<std::size_t>(k), order.size());
  for (Index g = 0; g < groups; ++g) {
    const Eigen::RowVector3d center = p.row(centers[static_cast<std::size_t>(g)]);
    const Eigen::VectorXd distance = detail::squared_distances(p, center);  // [n]
    std::iota(order.begin(), order.end(), Index{0});
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(members),
                      order.end(), [&](Index a, Index b) {
                        return distance[a] != distance[b] ? distance[a] < distance[b] : a < b;
                      });
    out.features.block<1, 3>(g, 0) = center.cast<float>();
    for (Index j = 0; j < k; ++j) {
      const Index member = order[static_cast<std::size_t>(j) % members];
      out.features.block<1, 3>(g, 3 + 3 * j) = (p.row(member) - center).cast<float>();
    }
    out.positions.row(g) << detail::grid_cell(center.z(), options.grid),
        detail::grid_cell(center.y(), options.grid), detail::grid_cell(center.x(), options.grid);
  }
  return out;
}

// The point-cloud front end of one model: reads a file, groups its points into
// sample.custom[<modality>]. Its options come from the modality's config entry.
class FrontEnd : public tessera::FrontEnd {
 public:
  explicit FrontEnd(const tessera::FrontEndContext& context)
      : options_(read_options(config_of(context))) {}

  const Options& options() const { return options_; }

  void load(const tessera::RawInput& input, tessera::Sample<float>& sample,
            tessera::StageTimes& times) const override {
    tessera::check_options(input, {});
    const PointsMatrix points =
        tessera::timed(times.decode, [&] { return read_xyz(input.value, options_.max_points); });
    sample.custom[input.modality] =
        tessera::timed(times.preprocess, [&] { return group_points(points, options_); });
  }

 private:
  static const tessera::CustomModalityConfig& config_of(const tessera::FrontEndContext& context) {
    const tessera::CustomModalityConfig* config = context.config.find_custom(context.modality);
    tessera::check(config != nullptr, "cannot make the point-cloud front end of '",
                   context.modality, "': the model has no custom modality of that name "
                   "(config.json custom_modalities)");
    return *config;
  }

  Options options_;
};

// Registers the point-cloud front end under `name` in tessera::front_end_registry(); call it
// before building the FrontEnds of a model whose config lists that custom modality.
inline void register_front_end(const std::string& name = "point_cloud") {
  tessera::front_end_registry().add(name, [](const tessera::FrontEndContext& context) {
    return std::make_unique<FrontEnd>(context);
  });
}

}  // namespace point_cloud
