// Fuzz target: the point-cloud text format of examples/point_cloud (read_xyz), the points
// then grouped into tokens.

#include "fuzz.hpp"

#include "point_cloud/point_cloud.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::as_file(data, size, ".xyz");
  return fuzz::refuse_with_error_only([&] {
    point_cloud::Options options;
    options.group_size = 4;
    options.num_groups = 8;
    const auto points = point_cloud::read_xyz(file, 10'000);
    (void)point_cloud::group_points(points, options);
  });
}
