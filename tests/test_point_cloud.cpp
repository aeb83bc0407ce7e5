// The point-cloud example (examples/point_cloud/point_cloud.hpp): a custom modality added from
// outside the library. read_xyz and each of its errors, group_points (farthest point sampling,
// kNN groups, normalization, grid positions) on small clouds worked out by hand, read_options,
// and the front end end to end through tessera::FrontEnds and the encoder.

#include <gtest/gtest.h>

#if !defined(TESSERA_HAS_ICU) || !defined(TESSERA_HAS_STB)
// The front-end registry lives in tokenize/files.hpp, which needs ICU and stb.
TEST(PointCloud, NeedsIcuAndStb) {
  GTEST_SKIP() << "tessera was configured without ICU or stb: the point-cloud example's front "
                  "end is not built or tested";
}
#else

#include "../examples/point_cloud/point_cloud.hpp"

#include "test_util.hpp"

#include <gmock/gmock.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace point_cloud {
namespace test_point_cloud {

using ::testing::HasSubstr;
using tessera::test::error_of;
using tessera::test::TempDir;

void write_file(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << file;
}

// The inputs of a sample with one point-cloud file.
tessera::SampleFiles cloud_file(const std::filesystem::path& file) {
  tessera::SampleFiles files;
  files.custom["point_cloud"] = file.string();
  return files;
}

void expect_error(const std::function<void()>& action, const std::string& message) {
  EXPECT_THAT(error_of(action), HasSubstr(message));
}

// n points, uniform in a box, reproducible.
PointsMatrix random_cloud(Eigen::Index n, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  PointsMatrix points(n, 3);
  for (Eigen::Index i = 0; i < n; ++i) {
    points.row(i) << 2 * uniform(random), uniform(random), 0.5 * uniform(random);
  }
  return points;
}

Options small_options() {
  Options options;
  options.group_size = 8;
  options.num_groups = 16;
  options.grid = 4;
  return options;
}

// ---- read_xyz ------------------------------------------------------------------------------

TEST(PointCloudRead, ParsesSeparatorsCrlfBlankLinesAndComments) {
  const TempDir dir;
  write_file(dir / "a.xyz",
             "# a comment\r\n"
             "1 2 3\n"
             "\n"
             "   \t\n"
             "  # an indented comment\n"
             "-4.5\t5e-1\t+6\r\n"
             "7,8,9\n"
             "  1.25 , -0 ,\t2.5e3  \n"
             "10 11 12");  // no final newline
  const PointsMatrix points = read_xyz(dir / "a.xyz", 100);
  PointsMatrix expected(5, 3);
  expected << 1, 2, 3, -4.5, 0.5, 6, 7, 8, 9, 1.25, -0.0, 2500, 10, 11, 12;
  EXPECT_TRUE(points == expected) << points;
}

TEST(PointCloudRead, TakesExactlyMaxPoints) {
  const TempDir dir;
  write_file(dir / "a.xyz", "0 0 0\n1 1 1\n");
  EXPECT_EQ(read_xyz(dir / "a.xyz", 2).rows(), 2);
}

TEST(PointCloudRead, EachProblemIsAnErrorNamingFileLineAndWhat) {
  const TempDir dir;
  const std::string file = (dir / "bad.xyz").string();
  const auto error_for = [&](const std::string& bytes, std::size_t max_points = 100) {
    write_file(file, bytes);
    return error_of([&] { read_xyz(file, max_points); });
  };
  EXPECT_THAT(error_of([&] { read_xyz(dir / "missing.xyz", 10); }),
              HasSubstr((dir / "missing.xyz").string() + ": cannot open: No such file"));
  EXPECT_THAT(error_of([&] { read_xyz(dir.path(), 10); }),
              HasSubstr(dir.path().string() + ": is a directory"));

  EXPECT_THAT(error_for("0 0 0\n1 abc 2\n"), HasSubstr(file + ":2: not a number: 'abc'"));
  EXPECT_THAT(error_for("# header\n1 2 3x\n"), HasSubstr(file + ":2: not a number: '3x'"));
  EXPECT_THAT(error_for("1 2 0x10\n"), HasSubstr(file + ":1: not a number: '0x10'"));
  EXPECT_THAT(error_for("1 2 ++3\n"), HasSubstr(file + ":1: not a number: '++3'"));
  EXPECT_THAT(error_for("1 2 3 # trailing comment\n"), HasSubstr(file + ":1: not a number: '#'"));
  EXPECT_THAT(error_for("0 0 0\r\n\r\n1 2\r\n"),
              HasSubstr(file + ":3: expected 3 values (x y z), got 2"));
  EXPECT_THAT(error_for("1 2 3 4\n"), HasSubstr(file + ":1: expected 3 values (x y z), got 4"));
  EXPECT_THAT(error_for("7\n"), HasSubstr(file + ":1: expected 3 values (x y z), got 1"));
  EXPECT_THAT(error_for("1,,2,3\n"), HasSubstr(file + ":1: empty value"));
  EXPECT_THAT(error_for("1,2,3,\n"), HasSubstr(file + ":1: empty value"));
  EXPECT_THAT(error_for(",1,2,3\n"), HasSubstr(file + ":1: empty value"));
  EXPECT_THAT(error_for("1 2 nan\n"), HasSubstr(file + ":1: non-finite value 'nan'"));
  EXPECT_THAT(error_for("0 0 0\n-inf 0 0\n"), HasSubstr(file + ":2: non-finite value '-inf'"));
  EXPECT_THAT(error_for("1 infinity 2\n"), HasSubstr(file + ":1: non-finite value 'infinity'"));
  EXPECT_THAT(error_for("1 2 1e999\n"), HasSubstr(file + ":1: value '1e999' is out of the range"));
  EXPECT_THAT(error_for(""), HasSubstr(file + ": no points"));
  EXPECT_THAT(error_for("# only a comment\n\n  \r\n"), HasSubstr(file + ": no points"));
  EXPECT_THAT(error_for("0 0 0\n1 1 1\n# c\n2 2 2\n", 2),
              HasSubstr(file + ":4: more than max_points = 2 points"));
  // bytes that are not text show escaped, and the message stays one line
  const std::string binary = error_for(std::string("1 2 \x01\xff\0z\r\n", 10));
  EXPECT_THAT(binary, HasSubstr(file + ":1: not a number: '\\x01\\xff\\x00z'"));
  EXPECT_EQ(binary.find('\n'), std::string::npos);
  EXPECT_THAT(error_for("1 2 " + std::string(100, '9') + "q\n"), HasSubstr("99'..."));
}

TEST(PointCloudRead, AnyBytesAreAnErrorOrPointsNeverACrash) {
  const TempDir dir;
  std::mt19937 random(7);
  const std::string alphabet = "0123456789 .,-+eE\t\r\n#naif";
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes(static_cast<std::size_t>(random() % 200), '\0');
    for (char& c : bytes) {
      c = trial % 2 == 0 ? alphabet[random() % alphabet.size()] : static_cast<char>(random() % 256);
    }
    write_file(dir / "fuzz.xyz", bytes);
    try {
      const PointsMatrix points = read_xyz(dir / "fuzz.xyz", 1000);
      EXPECT_GE(points.rows(), 1);
      EXPECT_TRUE(points.allFinite());
    } catch (const tessera::Error& e) {
      EXPECT_THAT(e.what(), HasSubstr((dir / "fuzz.xyz").string()));
    }
  }
}

// ---- group_points --------------------------------------------------------------------------

TEST(PointCloudGroup, ShapesFiniteFeaturesAndPositionsInTheGrid) {
  const PointsMatrix points = random_cloud(200, 1);
  const Options options = small_options();
  const tessera::CustomInput<float> tokens = group_points(points, options);
  ASSERT_EQ(tokens.features.rows(), 16);
  ASSERT_EQ(tokens.features.cols(), 3 + 3 * 8);
  ASSERT_EQ(tokens.positions.rows(), 16);
  EXPECT_TRUE(tokens.features.allFinite());
  EXPECT_GE(tokens.positions.minCoeff(), 0);
  EXPECT_LT(tokens.positions.maxCoeff(), options.grid);
  // normalized centers lie in the unit ball; each group's first member is its center
  for (Eigen::Index g = 0; g < tokens.features.rows(); ++g) {
    EXPECT_LE(tokens.features.row(g).head<3>().norm(), 1.0f + 1e-6f);
    EXPECT_EQ(tokens.features.row(g).segment<3>(3).norm(), 0.0f) << "group " << g;
  }
}

// Five points on a line, x = 0..4, worked out by hand: centroid 2, radius 2, so normalized
// x = (i - 2) / 2. FPS: 2 (at the centroid), then 0 and 4 (0 wins the tie), then 1 and 3.
TEST(PointCloudGroup, FarthestPointSamplingAndGroupsOnALine) {
  PointsMatrix points = PointsMatrix::Zero(5, 3);
  for (int i = 0; i < 5; ++i) points(i, 0) = i;
  Options options;
  options.group_size = 3;
  options.num_groups = 5;
  options.grid = 4;
  const tessera::CustomInput<float> tokens = group_points(points, options);
  ASSERT_EQ(tokens.features.rows(), 5);
  const std::vector<float> center_x = {0.0f, -1.0f, 1.0f, -0.5f, 0.5f};
  for (int g = 0; g < 5; ++g) {
    EXPECT_FLOAT_EQ(tokens.features(g, 0), center_x[static_cast<std::size_t>(g)]) << "group " << g;
    EXPECT_EQ(tokens.features(g, 1), 0.0f);
    EXPECT_EQ(tokens.features(g, 2), 0.0f);
  }
  // Center 2's group: itself, then 1 and 3 at the same distance (index order).
  Eigen::RowVectorXf first(12);
  first << 0, 0, 0, 0, 0, 0, -0.5f, 0, 0, 0.5f, 0, 0;
  EXPECT_TRUE(tokens.features.row(0) == first) << tokens.features.row(0);
  // Center 0 (x = -1): itself, then x = -0.5 and x = 0 relative to it.
  Eigen::RowVectorXf second(12);
  second << -1, 0, 0, 0, 0, 0, 0.5f, 0, 0, 1, 0, 0;
  EXPECT_TRUE(tokens.features.row(1) == second) << tokens.features.row(1);
  // Cells on a 4-grid over [-1, 1]: x -> 2, 0, 3 (clamped from 4), 1, 3; y = z = 0 -> 2.
  tessera::Positions expected(5, 3);
  expected << 2, 2, 2, 2, 2, 0, 2, 2, 3, 2, 2, 1, 2, 2, 3;
  EXPECT_TRUE(tokens.positions == expected) << tokens.positions;
}

// A cube's corners, index = 4x + 2y + z for x, y, z in {-1, 1}: all tie as nearest to the
// centroid (so corner 0), corner 7 is farthest from it, then the other six tie at one edge.
TEST(PointCloudGroup, TiesGoToTheLowestIndex) {
  PointsMatrix corners(8, 3);
  for (int i = 0; i < 8; ++i) corners.row(i) << (i & 4 ? 1 : -1), (i & 2 ? 1 : -1), (i & 1 ? 1 : -1);
  Options options;
  options.group_size = 4;
  options.num_groups = 8;
  const tessera::CustomInput<float> tokens = group_points(corners, options);
  const std::vector<int> order = {0, 7, 1, 2, 3, 4, 5, 6};
  const float c = static_cast<float>(1 / std::sqrt(3.0));
  for (int g = 0; g < 8; ++g) {
    const Eigen::RowVector3f expected = corners.row(order[static_cast<std::size_t>(g)]).cast<float>() * c;
    EXPECT_TRUE(tessera::test::all_close(tokens.features.block(g, 0, 1, 3), expected, 1e-7, 1e-6))
        << "token " << g << " should be corner " << order[static_cast<std::size_t>(g)];
  }
  // corner 0's group: itself, then its neighbours 1, 2, 4 (one edge away), in index order
  const float edge = 2 * c;
  Eigen::RowVectorXf first(15);
  first << -c, -c, -c, 0, 0, 0, 0, 0, edge, 0, edge, 0, edge, 0, 0;
  EXPECT_TRUE(tessera::test::all_close(tokens.features.row(0), first, 1e-7, 1e-6));
}

TEST(PointCloudGroup, PositionsAreZYXCells) {
  PointsMatrix points(2, 3);
  points << -1, 0, 1, 1, 0, -1;  // normalized: (-s, 0, s) and (s, 0, -s), s = 1/sqrt(2)
  Options options;
  options.group_size = 2;
  options.grid = 10;
  const tessera::CustomInput<float> tokens = group_points(points, options);
  tessera::Positions expected(2, 3);
  expected << 8, 5, 1, 1, 5, 8;  // (t, y, x) = (z, y, x) cells: floor((v + 1) / 2 * 10)
  EXPECT_TRUE(tokens.positions == expected) << tokens.positions;
}

TEST(PointCloudGroup, TheFirstCenterIsThePointNearestTheCentroid) {
  const PointsMatrix points = random_cloud(300, 2);
  const Eigen::RowVector3d centroid = points.colwise().mean();
  const Eigen::VectorXd distance = (points.rowwise() - centroid).rowwise().norm();
  Eigen::Index nearest = 0;
  distance.minCoeff(&nearest);
  const tessera::CustomInput<float> tokens = group_points(points, small_options());
  const Eigen::RowVector3d expected = (points.row(nearest) - centroid) / distance.maxCoeff();
  EXPECT_TRUE(tessera::test::all_close(tokens.features.block(0, 0, 1, 3),
                                       expected.cast<float>(), 1e-6, 1e-5));
}

TEST(PointCloudGroup, IsDeterministic) {
  const PointsMatrix points = random_cloud(500, 3);
  const tessera::CustomInput<float> a = group_points(points, small_options());
  const tessera::CustomInput<float> b = group_points(points, small_options());
  EXPECT_TRUE(a.features == b.features);
  EXPECT_TRUE(a.positions == b.positions);
}

TEST(PointCloudGroup, FeaturesIgnoreTranslationAndScale) {
  const PointsMatrix points = random_cloud(150, 4);
  const Eigen::RowVector3d shift(10.0, -4.0, 2.5);
  const PointsMatrix moved = (points * 3.7).rowwise() + shift;
  const PointsMatrix tiny = points * 1e-200;  // normalization keeps extreme scales exact enough
  const PointsMatrix huge = points * 1e300;
  const tessera::CustomInput<float> reference = group_points(points, small_options());
  for (const PointsMatrix* cloud : {&moved, &tiny, &huge}) {
    const tessera::CustomInput<float> tokens = group_points(*cloud, small_options());
    EXPECT_TRUE(tessera::test::all_close(tokens.features, reference.features, 1e-5, 1e-5));
    EXPECT_TRUE(tokens.positions == reference.positions);
  }
}

TEST(PointCloudGroup, FewerPointsThanGroupSizeRepeatTheSortedGroup) {
  const PointsMatrix points = random_cloud(5, 5);
  Options options;
  options.group_size = 12;
  options.num_groups = 2;
  const tessera::CustomInput<float> tokens = group_points(points, options);
  ASSERT_EQ(tokens.features.rows(), 2);
  ASSERT_EQ(tokens.features.cols(), 3 + 3 * 12);
  for (Eigen::Index g = 0; g < 2; ++g) {
    for (Eigen::Index j = 5; j < 12; ++j) {  // member j is member j - 5
      EXPECT_TRUE(tokens.features.row(g).segment<3>(3 + 3 * j) ==
                  tokens.features.row(g).segment<3>(3 + 3 * (j - 5)))
          << "group " << g << ", member " << j;
    }
    // the first five members are the five points, nearest first
    for (Eigen::Index j = 1; j < 5; ++j) {
      EXPECT_LE(tokens.features.row(g).segment<3>(3 + 3 * (j - 1)).norm(),
                tokens.features.row(g).segment<3>(3 + 3 * j).norm());
    }
  }
}

TEST(PointCloudGroup, FewerPointsThanNumGroupsMakeOneTokenPerPoint) {
  const PointsMatrix points = random_cloud(6, 6);
  const tessera::CustomInput<float> tokens = group_points(points, small_options());  // 16 groups
  ASSERT_EQ(tokens.features.rows(), 6);
  // every point is a center once
  for (Eigen::Index a = 0; a < 6; ++a) {
    for (Eigen::Index b = a + 1; b < 6; ++b) {
      EXPECT_NE(tokens.features.row(a).head<3>(), tokens.features.row(b).head<3>());
    }
  }
}

TEST(PointCloudGroup, ASinglePointIsOneTokenAtTheCenterCell) {
  PointsMatrix points(1, 3);
  points << 3.0, -7.0, 1e5;
  const tessera::CustomInput<float> tokens = group_points(points, small_options());
  ASSERT_EQ(tokens.features.rows(), 1);
  EXPECT_TRUE(tokens.features.isZero(0)) << tokens.features;
  tessera::Positions expected(1, 3);
  expected << 2, 2, 2;
  EXPECT_TRUE(tokens.positions == expected) << tokens.positions;
}

TEST(PointCloudGroup, EqualPointsAreDistinctCentersWithZeroFeatures) {
  // 0.1, 0.3, 0.7: a mean of ten of them is not exactly the value, yet every feature is 0
  PointsMatrix points(10, 3);
  points.rowwise() = Eigen::RowVector3d(0.1, 0.3, 0.7);
  const tessera::CustomInput<float> tokens = group_points(points, small_options());
  ASSERT_EQ(tokens.features.rows(), 10);
  EXPECT_TRUE(tokens.features.isZero(0));
  EXPECT_TRUE((tokens.positions.array() == 2).all());
}

TEST(PointCloudGroup, RejectsNoPointsAndNonFiniteOnes) {
  expect_error([] { group_points(PointsMatrix(0, 3), Options{}); }, "group_points: no points");
  PointsMatrix points = PointsMatrix::Zero(3, 3);
  points(1, 2) = std::nan("");
  expect_error([&] { group_points(points, Options{}); }, "non-finite");
  Options zero;
  zero.grid = 0;
  expect_error([&] { group_points(PointsMatrix::Zero(3, 3), zero); }, "must be positive");
}

// ---- read_options --------------------------------------------------------------------------

tessera::CustomModalityConfig entry(tessera::Index input_dim, const std::string& options) {
  tessera::CustomModalityConfig c;
  c.name = "point_cloud";
  c.input_dim = input_dim;
  c.max_tokens = 64;
  c.options = nlohmann::json::parse(options);
  return c;
}

TEST(PointCloudOptions, ReadsEachKeyAndDefaultsTheRest) {
  const Options defaults = read_options(entry(99, "{}"));
  EXPECT_EQ(defaults.group_size, 32);
  EXPECT_EQ(defaults.num_groups, 64);
  EXPECT_EQ(defaults.grid, 16);
  EXPECT_EQ(defaults.max_points, 1'000'000u);
  const Options o =
      read_options(entry(51, R"({"group_size": 16, "num_groups": 32, "grid": 8, "max_points": 500})"));
  EXPECT_EQ(o.group_size, 16);
  EXPECT_EQ(o.num_groups, 32);
  EXPECT_EQ(o.grid, 8);
  EXPECT_EQ(o.max_points, 500u);
}

TEST(PointCloudOptions, BadOptionsAreErrorsNamingTheKey) {
  const std::string where = "custom_modalities \"point_cloud\": ";
  expect_error([&] { read_options(entry(99, R"({"group_size": "32"})")); },
               where + "options.group_size: expected a positive integer, got \"32\"");
  expect_error([&] { read_options(entry(99, R"({"num_groups": 16.0})")); },
               where + "options.num_groups: expected a positive integer, got 16.0");
  expect_error([&] { read_options(entry(99, R"({"grid": 0})")); },
               where + "options.grid: expected a positive integer, got 0");
  expect_error([&] { read_options(entry(99, R"({"max_points": -5})")); },
               where + "options.max_points: expected a positive integer, got -5");
  expect_error([&] { read_options(entry(99, R"({"grid": true})")); },
               where + "options.grid: expected a positive integer, got true");
  expect_error([&] { read_options(entry(99, R"({"grid": null})")); },
               where + "options.grid: expected a positive integer, got null");
  expect_error([&] { read_options(entry(99, R"({"grid": 100000000})")); },
               where + "options.grid: 100000000 is larger than the supported maximum 16777216");
  expect_error([&] { read_options(entry(99, R"({"group_size": 4294967296})")); },
               where + "options.group_size: 4294967296 is larger than the supported maximum");
  expect_error([&] { read_options(entry(99, R"({"groupsize": 32})")); },
               where + "options: unknown key \"groupsize\" (known: group_size, num_groups, grid, "
                       "max_points)");
  expect_error([&] { read_options(entry(99, R"({"group_size": 16})")); },
               where + "input_dim is 99, but group_size 16 makes tokens of 3 + 3 * 16 = 51 values");
  expect_error([&] { read_options(entry(99, R"({"num_groups": 65})")); },
               where + "options.num_groups 65 is more than max_tokens = 64");
  expect_error([&] { read_options(entry(99, "[1, 2]")); }, where + "options: expected a JSON object");
}

// ---- The front end, end to end ---------------------------------------------------------------

// A model whose only modality is point clouds: 4 points per token, at most 8 tokens.
tessera::Config point_cloud_config(const std::string& options = R"({"group_size": 4, "num_groups": 8, "grid": 4})") {
  return tessera::parse_config(nlohmann::json::parse(R"({
    "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
    "custom_modalities": [{"name": "point_cloud", "input_dim": 15, "max_tokens": 8,
                           "options": )" + options + "}]}"));
}

TEST(PointCloudFrontEnd, LoadsAFileThatTheEncoderEncodes) {
  const TempDir dir;
  write_file(dir / "cloud.xyz", "# a tetrahedron and its center\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n1 1 1\n"
                                "0.5 0.5 0.5\n0.2 0.1 0.9\n0.9 0.3 0.3\n0.4 0.8 0.1\n0.7 0.7 0.2\n");
  tessera::MultiModalEncoder<float> model(point_cloud_config());
  model.init_random(5);
  register_front_end();
  const tessera::FrontEnds front(model.config, dir.path());
  EXPECT_TRUE(front.can_load("point_cloud"));

  tessera::StageTimes times;
  const tessera::Sample<float> sample =
      front.load(cloud_file(dir / "cloud.xyz"), &times);
  ASSERT_EQ(sample.custom.count("point_cloud"), 1u);
  const tessera::CustomInput<float>& tokens = sample.custom.at("point_cloud");
  EXPECT_EQ(tokens.features.rows(), 8);
  EXPECT_EQ(tokens.features.cols(), 15);
  EXPECT_GE(times.decode, 0.0);
  EXPECT_GE(times.preprocess, 0.0);
  // the same tokens as grouping the file's points directly
  const tessera::CustomInput<float> direct = group_points(read_xyz(dir / "cloud.xyz", 100),
                                                          read_options(model.config.custom[0]));
  EXPECT_TRUE(tokens.features == direct.features);
  EXPECT_TRUE(tokens.positions == direct.positions);

  const tessera::Encoding<float> encoding = model.encode(sample);
  EXPECT_NEAR(encoding.embedding.norm(), 1.0f, 1e-5f);
  EXPECT_EQ(encoding.modality, std::vector<tessera::ModalityId>(8, tessera::ModalityId::custom(0)));
}

TEST(PointCloudFrontEnd, ErrorsNameTheInput) {
  const TempDir dir;
  write_file(dir / "bad.xyz", "0 0 0\n1 2\n");
  register_front_end();
  const tessera::FrontEnds front(point_cloud_config(), dir.path());
  expect_error([&] { front.load(cloud_file(dir / "bad.xyz")); },
               (dir / "bad.xyz").string() + ":2: expected 3 values (x y z), got 2");
  const std::vector<tessera::RawInput> with_option = {
      {"point_cloud", (dir / "bad.xyz").string(), {{"density", 2.0}}}};
  expect_error([&] { front.load(with_option); },
               "unknown option 'density' (this front end takes no options)");
}

TEST(PointCloudFrontEnd, BadOptionsFailWhenTheFrontEndsAreMade) {
  register_front_end();
  expect_error([] { tessera::FrontEnds front(point_cloud_config(R"({"group_size": 5})"), "."); },
               "input_dim is 15, but group_size 5 makes tokens of 3 + 3 * 5 = 18 values");
}

TEST(PointCloudFrontEnd, NeedsTheModalityInTheConfig) {
  const tessera::Config config = point_cloud_config();
  const std::string lidar = "lidar";
  const std::filesystem::path dir = ".";
  expect_error([&] { FrontEnd front(tessera::FrontEndContext{lidar, config, dir}); },
               "cannot make the point-cloud front end of 'lidar': the model has no custom "
               "modality of that name");
}

TEST(PointCloudFrontEnd, NoRegisteredFrontEndIsAnError) {
  const TempDir dir;
  write_file(dir / "cloud.xyz", "0 0 0\n");
  const tessera::FrontEndRegistry empty;
  const tessera::FrontEnds front(point_cloud_config(), dir.path(), empty);
  EXPECT_FALSE(front.can_load("point_cloud"));
  expect_error([&] { front.load(cloud_file(dir / "cloud.xyz")); },
               "no front end is registered for the model's modality 'point_cloud'");
}

}  // namespace
}  // namespace point_cloud

#endif  // TESSERA_HAS_ICU && TESSERA_HAS_STB
