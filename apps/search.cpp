// tessera-search: a folder's images, audio and videos embedded once into an index file, and
// the files most similar to a text (or to a file) printed with their scores
// (search_index.hpp).
//
//   tessera-search --model DIR --index DIR_OF_FILES (--query "..." | --query-file F)
//                  [--top K] [--index-file PATH] [--max-files N] [--threads N]
//
// The index (DIR_OF_FILES/.tessera-index.safetensors unless --index-file says otherwise) is
// reused while the model's files are unchanged: only new and changed files are embedded, files
// gone are dropped. A file that cannot be decoded is reported on stderr and skipped, and not
// tried again until it changes. Prints what happened to the index, then the top K files:
//
//   index photos/.tessera-index.safetensors: 120 files: 118 reused, 2 embedded, 0 dropped, 0 failed
//     1  0.3121  beach/dog.png (image)
//
// Exit statuses and errors as every program's (cli.hpp, docs/programs.md).

#include <tessera/pipeline.hpp>
#include <tessera/search_index.hpp>
#include <tessera/tokenize/utf8.hpp>

#include "cli.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace apps = tessera::apps;
namespace fs = std::filesystem;

constexpr std::size_t search_batch_size = 8;  // files per encode_batch (see main)

struct Options {
  std::string model;
  std::string index_dir;
  std::optional<std::string> query, query_file;
  std::string index_file;  // "": index_dir/.tessera-index.safetensors
  std::size_t top = 10;
  std::size_t max_files = tessera::SearchIndexLimits{}.max_files;
  int threads = 0;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--model", o.model, "the model directory (a tessera model or a pretrained one)")
      ->required()->type_name("DIR");
  app.add_option("--index", o.index_dir, "the folder whose images, audio (.wav) and videos are "
                                         "searched (its subfolders too; names starting with '.' "
                                         "are skipped)")
      ->required()->type_name("DIR_OF_FILES");
  app.add_option("--query", o.query, "the text to search for")->type_name("TEXT");
  app.add_option("--query-file", o.query_file,
                 "a file to search for things like: an image, a .wav, a video, or a .txt whose "
                 "text is the query")
      ->type_name("FILE");
  app.add_option("--top", o.top, "the files printed, the most similar first")
      ->check(apps::integer_in<std::size_t>(1, tessera::SearchIndexLimits{}.max_files))
      ->type_name("K");
  app.add_option("--index-file", o.index_file,
                 std::string("the index file (default: DIR_OF_FILES/") + tessera::default_index_name + ")")
      ->type_name("PATH");
  app.add_option("--max-files", o.max_files,
                 "refuse a folder with more files to index than this (at most " +
                     std::to_string(tessera::SearchIndexLimits{}.max_files) +
                     ": the index's file table must fit a safetensors header)")
      ->check(apps::integer_in<std::size_t>(1, tessera::SearchIndexLimits{}.max_files))
      ->type_name("N");
  apps::add_threads_option(app, o.threads);
}

// The query's embedding [E]: a text, or a file by its kind.
tessera::Vector<float> embed_query(const tessera::Pipeline<float>& model, const Options& o) {
  if (o.query) {
    apps::Processing now("--query");
    return model.encode_texts({*o.query}).row(0).transpose();
  }
  const std::string& file = *o.query_file;
  apps::Processing now("--query-file " + file, file);
  const fs::path path(file);
  std::string extension = path.extension().string();
  for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  tessera::RawInput input;
  if (extension == ".txt") {
    std::string text = tessera::read_utf8_file(path);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    input = {"text", std::move(text), {}};
  } else {
    const auto modality = tessera::file_modality(path);
    tessera::check(modality.has_value(), file, ": not a kind of file tessera-search reads (an "
                   "image, a .wav, a video, or a .txt holding the query's text)");
    input = {tessera::modality_name(*modality), file, {}};
  }
  try {
    return model.encode({{input}}).row(0).transpose();
  } catch (const tessera::Error& e) {  // "sample 0: ...": there is one sample, the query
    const std::string_view message = e.what();
    tessera::fail(message.starts_with("sample 0: ") ? message.substr(10) : message);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Search a folder of images, audio and videos for a text or a file: the folder "
               "is embedded once into an index file, brought up to date on each run (only new "
               "and changed files are embedded), and the most similar files are printed with "
               "their cosine similarity.",
               "tessera-search");
  apps::set_conventions(app);
  Options o;
  add_options(app, o);
  return apps::run(app, argc, argv, [&] {
    apps::require(o.query.has_value() != o.query_file.has_value(),
                  o.query ? "give --query or --query-file, not both"
                          : "no query: give --query TEXT or --query-file FILE");
    const fs::path index_file =
        o.index_file.empty() ? fs::path(o.index_dir) / tessera::default_index_name : fs::path(o.index_file);
    std::vector<fs::path> inputs = {o.model};
    if (o.query_file) inputs.emplace_back(*o.query_file);
    apps::refuse_output_over_inputs(index_file, "--index-file", inputs);
    {
      std::error_code error;
      tessera::check(fs::is_directory(o.index_dir, error), "--index ", o.index_dir, ": ",
                     fs::exists(o.index_dir, error) ? "not a directory" : "no such directory");
    }
    if (o.threads > 0) tessera::set_num_threads(o.threads);
    std::optional<apps::Processing> loading(std::in_place, "--model " + o.model, o.model);
    // Files are embedded 8 at a time: a batch holds its inputs preprocessed (an ImageBind
    // video is 30 frames of 224 x 224, 18 MB) and their activations (one video is 15 clips
    // through the image tower), so memory is bounded by 8 files, not 32.
    tessera::PipelineOptions pipeline_options;
    pipeline_options.batch_size = search_batch_size;
    const auto model = tessera::Pipeline<float>::open(o.model, pipeline_options);
    loading.reset();

    const tessera::Vector<float> query = embed_query(model, o);  // a bad query fails before the index

    tessera::SearchIndexLimits limits;
    limits.max_files = o.max_files;
    tessera::SearchIndexUpdate update;
    const auto start = std::chrono::steady_clock::now();
    tessera::SearchIndex index;
    {
      apps::Processing now("--index " + o.index_dir, o.index_dir);
      index = tessera::update_search_index(
          model, o.index_dir, index_file, &update, limits, [](const tessera::FailedFile& f) {
            std::cerr << "tessera-search: warning: " << f.error
                      << " (skipped until the file changes)\n";
          });
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!update.rebuilt.empty()) std::printf("index rebuilt: %s\n", update.rebuilt.c_str());
    std::printf("index %s: %zu files: %zu reused, %zu embedded, %zu dropped, %zu failed",
                index_file.string().c_str(), update.files, update.reused, update.embedded,
                update.dropped, update.failed);
    if (update.failed_before > 0) std::printf(", %zu failed before (not retried)", update.failed_before);
    if (update.skipped > 0) std::printf(", %zu other files skipped", update.skipped);
    std::printf("%s (%.2f s)\n", update.written ? "" : "; unchanged", seconds);
    const std::vector<tessera::SearchHit> hits = tessera::search(index, query, o.top);
    for (std::size_t i = 0; i < hits.size(); ++i) {
      std::printf("%3zu  %7.4f  %s (%s)\n", i + 1, static_cast<double>(hits[i].score),
                  hits[i].path.c_str(), tessera::modality_name(hits[i].modality));
    }
  });
}
