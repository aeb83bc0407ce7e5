// Fuzz target: config.json (model/config.hpp), text to a validated Config, and the Config
// written back to JSON and read again (the round trip must be exact).

#include "fuzz.hpp"

#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto json = tessera::detail::ConfigReader::parse_text(fuzz::as_text(data, size), "fuzz");
    const tessera::Config config = tessera::parse_config(json, "fuzz");
    if (tessera::parse_config(tessera::to_json(config), "round trip") != config) std::abort();
  });
}
