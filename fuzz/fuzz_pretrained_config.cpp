// Fuzz target: the configuration files of pretrained model directories (model/pretrained.hpp,
// tokenize/image_processor.hpp). The first byte picks the parser, the rest is the file:
//   0 transformers' CLIP config.json       1 open_clip_config.json
//   2 ImageBind's config.json              3 tessera_towers' config.json
//   4 preprocessor_config.json             5 open_clip_config.json's preprocess_cfg
// A parsed model config is then validated and its weights counted (what a loader does before
// allocating), which must never divide by zero or overflow.

#include "fuzz.hpp"

#include <tessera/model/pretrained.hpp>
#include <tessera/tokenize/image_processor.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int kind = data[0] % 6;
  const std::filesystem::path file = fuzz::as_file(data + 1, size - 1, ".json");
  return fuzz::refuse_with_error_only([&] {
    if (kind == 4) {
      (void)tessera::image_processing_from_hf(file);
      return;
    }
    if (kind == 5) {
      (void)tessera::image_processing_from_open_clip_config(file);
      return;
    }
    const nlohmann::json json = tessera::detail::read_json_file(file);
    const std::string where = file.string();
    tessera::TowerModelConfig config;
    switch (kind) {
      case 0: config = tessera::detail::hf_clip_config(json, where); break;
      case 1: config = tessera::detail::open_clip_config(json, where); break;
      case 2: config = tessera::detail::imagebind_config(json, where); break;
      default: config = tessera::detail::towers_config(json, where); break;
    }
    tessera::validate(config, where);
    (void)tessera::parameter_count(config);
  });
}
