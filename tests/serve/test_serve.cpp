// tessera-serve end to end (docs/serving.md): the real program started on a free port, asked
// over HTTP, stopped with SIGTERM. Each test starts the servers it needs, so each runs alone
// (ctest runs them as apps.serve.<Suite>.<test>).
//
// Models: the ImageBind fixture (text, image, audio and video towers, E 16) with OpenAI's
// tokenizer beside it, for single inputs; tessera's own four-modality model of
// tests/pipeline_fixture.hpp (seeded random weights, a BPE tokenizer trained on a few
// captions), for samples holding several inputs (partial inference); the image-only encoder
// fixture image_cls_learned, for a model without text; the ImageBind fixture quantized to int8
// (as tessera-quantize writes it), for a quantized model.

#include "../pipeline_fixture.hpp"
#include "../pretrained_fixture.hpp"
#include "serve_client.hpp"

#include <tessera/io/read_file.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/pretrained_save.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/pipeline.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <numeric>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifndef TESSERA_ENCODE_PROGRAM
#error "TESSERA_ENCODE_PROGRAM must name the tessera-encode executable"
#endif

namespace tessera::test {
namespace {

namespace fs = std::filesystem;

// Embeddings of one input in batches of different shapes differ by rounding only (the batch's
// matrix products round by shape): this bound on a unit vector's components is far above
// float rounding and far below any real difference.
constexpr double batch_rounding = 1e-5;
// A cosine of an embedding with itself, from the server's float32 products.
constexpr double self_cosine_tolerance = 1e-5;

// The files every test reads, written once per test process.
struct Fixtures {
  TempDir dir;
  fs::path imagebind, own, image_only, video, imagebind_int8;
  fs::path image = data_dir() / "image" / "sources" / "chelsea.png";
  fs::path other_image = data_dir() / "image" / "sources" / "coffee.png";
  fs::path audio = data_dir() / "audio" / "imagebind" / "short_0p7s_16k.wav";

  Fixtures() {
    imagebind = imagebind_with_tokenizer(dir / "imagebind");
    own = dir / "own";
    write_pipeline_fixture(own, dir.path());  // also a.y4m (8 frames) and b.y4m
    video = dir / "a.y4m";
    image_only = data_dir() / "encoder" / "image_cls_learned";
    imagebind_int8 = dir / "imagebind-int8";
    TowerModel<float> quantized = load_tower_model<float>(imagebind);
    quantize_model(quantized, {nn::WeightFormat::int8, {}});
    save_towers_model(quantized, imagebind_int8, imagebind);  // with the tokenizer
  }
};

const Fixtures& fixtures() {
  static const Fixtures f;
  return f;
}

std::string base64_file(const fs::path& file) { return serve::base64_encode(read_file(file)); }

// A PNG cut after its first 64 bytes: its kind is known, its pixels are not there.
std::string broken_png() { return serve::base64_encode(read_file(fixtures().image).substr(0, 64)); }

// The embeddings of /embed's answer, read from base64.
std::vector<std::vector<float>> embeddings_of(const Answer& a) {
  std::vector<std::vector<float>> out;
  json body = a.body_json();
  if (!body.contains("embeddings")) {
    ADD_FAILURE() << "no embeddings: " << a.body.substr(0, 300);
    return out;
  }
  for (const auto& e : body["embeddings"]) out.push_back(floats_of_base64(e.get<std::string>()));
  return out;
}

json embed_request(json samples) { return {{"samples", std::move(samples)}, {"encoding_format", "base64"}}; }

// tessera-encode --model <model> <args> --out <dir>/encoded.safetensors: its `embeddings`
// rows.
std::vector<std::vector<float>> tessera_encode(const fs::path& model, std::vector<std::string> args,
                                               const TempDir& dir) {
  const fs::path out = dir / "encoded.safetensors";
  args.insert(args.begin(), {"--model", model.string()});
  args.insert(args.end(), {"--out", out.string()});
  ChildProcess encode(TESSERA_ENCODE_PROGRAM, args);
  const std::optional<int> status = encode.wait(60s);
  EXPECT_EQ(status, std::optional<int>(0)) << "tessera-encode: " << encode.output();
  const SafetensorsFile file = SafetensorsFile::open(out);
  const Matrix<float> e = file.read_matrix<float>("embeddings");  // [N, E]
  std::vector<std::vector<float>> rows;
  for (Index i = 0; i < e.rows(); ++i) rows.emplace_back(e.row(i).data(), e.row(i).data() + e.cols());
  return rows;
}

// tessera-encode's embeddings of the ImageBind fixture's four inputs in one batch: the caption
// "a photo of a cat", the image, the WAV and the video, in that order.
std::vector<std::vector<float>> four_modalities_encoded(const TempDir& dir) {
  const Fixtures& f = fixtures();
  return tessera_encode(f.imagebind,
                        {"--text", "a photo of a cat", "--next", "--image", f.image.string(), "--next", "--audio",
                         f.audio.string(), "--next", "--video", f.video.string()},
                        dir);
}

// Waits until the server's queue holds at least `jobs` requests (its /metrics gauge);
// false after `timeout`.
bool wait_for_queue(const ServeProcess& server, double jobs, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (metric(server.metrics(), "tessera_queue_depth") >= jobs) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

void expect_clean_exit(ServeProcess& server) {
  const std::optional<int> status = server.stop();
  EXPECT_EQ(status, std::optional<int>(0)) << "after SIGTERM; its output:\n" << server.process().output();
}

// ---- GET routes -------------------------------------------------------------------------------

TEST(Routes, health_info_metrics) {
  ServeProcess server(fixtures().imagebind, {"--max-samples", "7", "--max-queue", "9", "--cache-mb", "3"});
  const Answer health = server.get("/health");
  ASSERT_EQ(health.status, 200) << describe(health);
  EXPECT_EQ(health.body_json(), json({{"status", "ok"}}));

  const Answer info = server.get("/info");
  ASSERT_EQ(info.status, 200) << describe(info);
  json i = info.body_json();
  EXPECT_EQ(i["model"]["kind"], "imagebind");
  EXPECT_EQ(i["model"]["modalities"], json({"text", "image", "audio", "video"}));
  EXPECT_EQ(i["model"]["embedding_size"], 16);
  EXPECT_EQ(i["limits"]["max_samples"], 7);
  EXPECT_EQ(i["limits"]["max_queue"], 9);
  EXPECT_EQ(i["limits"]["cache_mb"], 3.0);
  EXPECT_EQ(i["limits"]["max_payload_mb"], 64.0);

  const Answer metrics = server.get("/metrics");
  ASSERT_EQ(metrics.status, 200) << describe(metrics);
  EXPECT_EQ(metrics.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  for (const char* line : {"# TYPE tessera_requests_total counter", "# TYPE tessera_request_duration_seconds histogram",
                           "# TYPE tessera_batch_size histogram", "# TYPE tessera_queue_depth gauge",
                           "# TYPE tessera_cache_hits_total counter", "# TYPE tessera_cache_bytes gauge"}) {
    EXPECT_NE(metrics.body.find(line), std::string::npos) << "no \"" << line << "\" in\n" << metrics.body;
  }
  EXPECT_EQ(metric(metrics.body, R"(tessera_requests_total{route="/health",code="200"})"), 1);
  EXPECT_EQ(metric(metrics.body, R"(tessera_requests_total{route="/info",code="200"})"), 1);
  EXPECT_EQ(metric(metrics.body, "tessera_batch_size_count"), 1) << "the warm-up batch";
  expect_clean_exit(server);
}

// Every answer is counted once in tessera_requests_total, whoever made it: a route (200, 400),
// httplib (404), the 405 refusal.
TEST(Routes, each_request_counted_once) {
  ServeProcess server(fixtures().imagebind);
  EXPECT_EQ(server.post("/embed", {{"samples", {{{"text", "a cat"}}}}}).status, 200);
  EXPECT_EQ(server.request("POST", "/embed", "not json").status, 400);
  EXPECT_EQ(server.get("/nowhere").status, 404);
  EXPECT_EQ(server.get("/embed").status, 405);
  const std::string text = server.metrics();
  EXPECT_EQ(metric(text, R"(tessera_requests_total{route="/embed",code="200"})"), 1) << text;
  EXPECT_EQ(metric(text, R"(tessera_requests_total{route="/embed",code="400"})"), 1) << text;
  EXPECT_EQ(metric(text, R"(tessera_requests_total{route="other",code="404"})"), 1) << text;
  EXPECT_EQ(metric(text, R"(tessera_requests_total{route="/embed",code="405"})"), 1) << text;
  expect_clean_exit(server);
}

// ---- /embed: the embeddings of tessera-encode -------------------------------------------------

// A text, an image, a WAV and a video in one request are one batch of four samples, as
// tessera-encode makes them: equal bit for bit, in base64 and in JSON numbers alike.
TEST(Embed, four_modalities_equal_tessera_encode) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const auto expected = four_modalities_encoded(dir);
  ASSERT_EQ(expected.size(), 4u);

  ServeProcess server(f.imagebind);
  const json samples = {{{"text", "a photo of a cat"}},
                        {{"image", base64_file(f.image)}},
                        {{"audio", base64_file(f.audio)}},
                        {{"video", base64_file(f.video)}}};
  const Answer a = server.post("/embed", embed_request(samples));
  ASSERT_EQ(a.status, 200) << describe(a);
  const auto got = embeddings_of(a);
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(bitwise_equal(got[i], expected[i])) << "sample " << i;

  json body = a.body_json();
  const std::vector<std::string> names = {"text", "image", "audio", "video"};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(body["samples"][i]["modalities"], json({names[i]})) << "sample " << i;
    EXPECT_EQ(body["samples"][i]["cache"], "miss");
    EXPECT_EQ(body["samples"][i]["dropped"], json::array());
  }
  EXPECT_GT(body["usage"]["tokens"].get<int>(), 0);
  EXPECT_EQ(a.header("X-Cache"), "miss");

  // the same from the cache, as JSON numbers: a float's value survives the text exactly
  const Answer numbers = server.post("/embed", {{"samples", samples}});
  ASSERT_EQ(numbers.status, 200) << describe(numbers);
  json n = numbers.body_json();
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(bitwise_equal(n["embeddings"][i].get<std::vector<float>>(), expected[i])) << "sample " << i;
  }
  expect_clean_exit(server);
}

// A quantized model (int8, as tessera-quantize writes it) is served as any other: its
// embeddings are tessera-encode's of the same directory, bit for bit.
TEST(Embed, quantized_model_equals_tessera_encode) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const auto expected = tessera_encode(f.imagebind_int8,
                                       {"--text", "a photo of a cat", "--next", "--image", f.image.string(), "--next",
                                        "--audio", f.audio.string()},
                                       dir);
  ASSERT_EQ(expected.size(), 3u);
  ServeProcess server(f.imagebind_int8);
  const Answer info = server.get("/info");
  ASSERT_EQ(info.status, 200) << describe(info);
  const Answer a = server.post("/embed", embed_request({{{"text", "a photo of a cat"}},
                                                        {{"image", base64_file(f.image)}},
                                                        {{"audio", base64_file(f.audio)}}}));
  ASSERT_EQ(a.status, 200) << describe(a);
  const auto got = embeddings_of(a);
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_TRUE(bitwise_equal(got[i], expected[i])) << "sample " << i;
  expect_clean_exit(server);
}

// curl -d sends a form-encoded Content-Type; httplib reads such a body only up to 8 KiB by
// itself, so the routes read theirs: a 30 KB body of that type is answered.
TEST(Embed, large_form_encoded_body) {
  ServeProcess server(fixtures().imagebind);
  const std::string body = embed_request({{{"image", base64_file(fixtures().image)}}}).dump();
  ASSERT_GT(body.size(), 16u * 1024);
  const Answer a = server.request("POST", "/embed", body, {}, "application/x-www-form-urlencoded");
  EXPECT_EQ(a.status, 200) << describe(a);
  expect_clean_exit(server);
}

// ---- multipart/form-data bodies (apps/serve/form.hpp) ------------------------------------------

// A form's file field: its bytes as they are, as curl -F name=@file sends them.
httplib::MultipartFormData form_file(const std::string& name, const fs::path& file) {
  return {name, read_file(file), file.filename().string(), "application/octet-stream"};
}
httplib::MultipartFormData form_text(const std::string& name, const std::string& value) { return {name, value, "", ""}; }

Answer post_form(const ServeProcess& server, const std::string& path, const httplib::MultipartFormDataItems& form) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(30, 0);
  return answer_of(client.Post(path, form));
}

// The four modalities as a form's files (no base64) are /embed's JSON samples: tessera-encode's
// embeddings bit for bit; one sample's inputs at the top level (curl -F image=@cat.png, or
// {"text": ...} in JSON) are that sample.
TEST(Forms, files_equal_tessera_encode) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const auto expected = four_modalities_encoded(dir);
  ASSERT_EQ(expected.size(), 4u);
  ServeProcess server(f.imagebind);
  const Answer a = post_form(server, "/embed",
                             {form_text("samples[0].text", "a photo of a cat"), form_file("samples[1].image", f.image),
                              form_file("samples[2].audio", f.audio), form_file("samples[3].video", f.video),
                              form_text("encoding_format", "base64")});
  ASSERT_EQ(a.status, 200) << describe(a);
  const auto got = embeddings_of(a);
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(bitwise_equal(got[i], expected[i])) << "sample " << i;
  const std::vector<std::string> names = {"text", "image", "audio", "video"};
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(a.body_json()["samples"][i]["modalities"], json({names[i]}));

  const Answer one = post_form(server, "/embed", {form_file("image", f.image), form_text("encoding_format", "base64")});
  ASSERT_EQ(one.status, 200) << describe(one);
  const auto single = embeddings_of(one);
  ASSERT_EQ(single.size(), 1u);
  EXPECT_TRUE(bitwise_equal(single[0], expected[1]));
  const Answer text = server.post("/embed", {{"text", "a photo of a cat"}, {"encoding_format", "base64"}});  // JSON too
  ASSERT_EQ(text.status, 200) << describe(text);
  EXPECT_TRUE(bitwise_equal(embeddings_of(text).at(0), expected[0]));
  expect_clean_exit(server);
}

// /similarity and /classify take forms as /embed does: the answers of their JSON requests.
TEST(Forms, similarity_and_classify) {
  const Fixtures& f = fixtures();
  ServeProcess server(f.imagebind);
  const Answer by_json = server.post("/similarity", {{"a", {{{"text", "a cat"}}}},
                                                     {"b", {{{"image", base64_file(f.image)}}, {{"text", "a dog"}}}}});
  const Answer by_form = post_form(server, "/similarity",
                                   {form_text("a[0].text", "a cat"), form_file("b[0].image", f.image),
                                    form_text("b[1].text", "a dog")});
  ASSERT_EQ(by_json.status, 200) << describe(by_json);
  ASSERT_EQ(by_form.status, 200) << describe(by_form);
  EXPECT_EQ(by_form.body_json()["scores"], by_json.body_json()["scores"]);

  const Answer classified = post_form(server, "/classify",
                                      {form_file("samples[0].image", f.image), form_text("labels[0]", "cat"),
                                       form_text("labels[1]", "dog"), form_text("top", "1")});
  const Answer classified_json = server.post("/classify", {{"samples", {{{"image", base64_file(f.image)}}}},
                                                           {"labels", {"cat", "dog"}}, {"top", 1}});
  ASSERT_EQ(classified.status, 200) << describe(classified);
  EXPECT_EQ(classified.body_json()["results"], classified_json.body_json()["results"]);
  expect_clean_exit(server);
}

// A form that cannot be a request: one clear answer each, and a keep-alive connection serves
// on after it.
TEST(Forms, errors) {
  const Fixtures& f = fixtures();
  ServeProcess server(f.imagebind, {"--max-samples", "4", "--max-payload-mb", "0.5"});
  httplib::Client client("127.0.0.1", server.port());
  client.set_keep_alive(true);
  client.set_read_timeout(30, 0);
  const auto form = [&](const httplib::MultipartFormDataItems& items) { return answer_of(client.Post("/embed", items)); };
  expect_error(form({form_text("samples[1].text", "a")}), 400, "samples[0] is missing");
  expect_error(form({form_text("samples[4].text", "a")}), 413, "--max-samples 4");
  expect_error(form({form_text("text", "a"), form_text("text", "b")}), 400, "\"text\": given twice");
  expect_error(form({form_text("samples[0]image", "a")}), 400, "form field \"samples[0]image\"");
  expect_error(form({form_text("samples[0].wings", "a")}), 400, "unknown key \"wings\"");
  expect_error(form({form_file("image", f.image), form_text("samples[0].text", "a")}), 400, "both in \"samples\"");
  expect_error(form({form_text("samples[0].image", read_file(f.image).substr(0, 64))}), 422, "samples[0].image");
  expect_error(form({form_text("image", "")}), 422, "samples[0].image: empty");
  expect_error(form({form_text("samples[0].text", std::string(600 * 1024, 'a'))}), 413, "--max-payload-mb 0.5 MB");
  httplib::MultipartFormDataItems many;
  for (int i = 0; i < 60; ++i) many.push_back(form_text("field_" + std::to_string(i), "1"));
  expect_error(form(many), 413, "fields");
  // A body the form parser stops reading midway leaves its rest unread: that connection is
  // closed after the answer (Connection: close), and the client's next request goes on a new
  // one. A form that parses to a refusal was read whole: its connection serves on.
  struct Malformed {
    std::string type, body;
    bool closes;
  };
  const Malformed malformed[] = {
      {"multipart/form-data; boundary=xx", "--xx\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nno end", true},
      {"multipart/form-data; boundary=xx", "no boundary at all" + std::string(64 * 1024, '-'), true},
      {"multipart/form-data", "--xx\r\n\r\n--xx--\r\n", true},
      {"multipart/form-data; boundary=xx", "--xx\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xx--\r\n", false}};
  for (const auto& m : malformed) {
    const Answer refused = answer_of(client.Post("/embed", m.body, m.type));
    expect_error(refused, 400, "");
    EXPECT_EQ(refused.header("Connection") == "close", m.closes) << m.body.substr(0, 40);
    const Answer after = answer_of(client.Post("/embed", json{{"samples", {{{"text", "a cat"}}}}}.dump(), "application/json"));
    EXPECT_EQ(after.status, 200) << describe(after) << " after " << m.body.substr(0, 40);
  }
  expect_clean_exit(server);
}

// ---- the cache ----------------------------------------------------------------------------------

TEST(Cache, repeated_request_hits) {
  ServeProcess server(fixtures().imagebind);
  const json request = embed_request({{{"text", "a photo of a dog"}}, {{"image", base64_file(fixtures().image)}}});
  const Answer first = server.post("/embed", request);
  ASSERT_EQ(first.status, 200) << describe(first);
  EXPECT_EQ(first.header("X-Cache"), "miss");
  const double hits = metric(server.metrics(), "tessera_cache_hits_total");

  const Answer second = server.post("/embed", request);
  ASSERT_EQ(second.status, 200) << describe(second);
  EXPECT_EQ(second.header("X-Cache"), "hit");
  json body = second.body_json();
  for (const auto& s : body["samples"]) EXPECT_EQ(s["cache"], "hit");
  const auto a = embeddings_of(first), b = embeddings_of(second);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_TRUE(bitwise_equal(a[i], b[i])) << "sample " << i;
  const std::string text = server.metrics();
  EXPECT_EQ(metric(text, "tessera_cache_hits_total"), hits + 2);
  EXPECT_EQ(metric(text, "tessera_cache_entries"), 2);
  expect_clean_exit(server);
}

TEST(Cache, off_with_cache_mb_0) {
  ServeProcess server(fixtures().imagebind, {"--cache-mb", "0"});
  const json request = embed_request({{{"text", "a photo of a dog"}}});
  for (int i = 0; i < 2; ++i) {
    const Answer a = server.post("/embed", request);
    ASSERT_EQ(a.status, 200) << describe(a);
    EXPECT_EQ(a.header("X-Cache"), "miss") << "request " << i;
    EXPECT_EQ(a.body_json()["samples"][0]["cache"], "miss") << "request " << i;
  }
  const std::string text = server.metrics();
  EXPECT_EQ(metric(text, "tessera_cache_hits_total"), 0);
  EXPECT_EQ(metric(text, "tessera_cache_entries"), 0);
  expect_clean_exit(server);
}

// ---- tessera's own model: samples of several inputs --------------------------------------------

TEST(OwnModel, text_and_image_sample_equals_tessera_encode) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const auto expected = tessera_encode(
      f.own, {"--text", "a red square moving left", "--image", f.image.string(), "--next", "--video", f.video.string()},
      dir);
  ASSERT_EQ(expected.size(), 2u);
  ServeProcess server(f.own);
  const Answer a = server.post(
      "/embed", embed_request({{{"text", "a red square moving left"}, {"image", base64_file(f.image)}},
                               {{"video", base64_file(f.video)}}}));
  ASSERT_EQ(a.status, 200) << describe(a);
  EXPECT_EQ(a.body_json()["samples"][0]["modalities"], json({"text", "image"}));
  const auto got = embeddings_of(a);
  ASSERT_EQ(got.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_TRUE(bitwise_equal(got[i], expected[i])) << "sample " << i;
  expect_clean_exit(server);
}

// Audio longer than the model's audio.max_tokens chunks is split into clips by the encoder
// (tessera-encode takes it): the server takes it too.
TEST(OwnModel, long_audio_equals_tessera_encode) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const auto expected = tessera_encode(f.own, {"--audio", f.audio.string()}, dir);
  ASSERT_EQ(expected.size(), 1u);
  ServeProcess server(f.own);
  const Answer a = server.post("/embed", embed_request({{{"audio", base64_file(f.audio)}}}));
  ASSERT_EQ(a.status, 200) << describe(a);
  const auto got = embeddings_of(a);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(bitwise_equal(got[0], expected[0]));
  expect_clean_exit(server);
}

// A text and a broken image: with allow_partial the image is dropped (and said why) and the
// sample is its text's; each request alone in its batch (no cache), so bit for bit.
TEST(Partial, allowed_drops_the_broken_input) {
  ServeProcess server(fixtures().own, {"--cache-mb", "0"});
  json request = embed_request({{{"text", "a red square moving left"}, {"image", broken_png()}}});
  request["allow_partial"] = true;
  const Answer partial = server.post("/embed", request);
  ASSERT_EQ(partial.status, 200) << describe(partial);
  json sample = partial.body_json()["samples"][0];
  EXPECT_EQ(sample["modalities"], json({"text"}));
  ASSERT_EQ(sample["dropped"].size(), 1u) << sample;
  EXPECT_EQ(sample["dropped"][0]["modality"], "image");
  const std::string reason = sample["dropped"][0].value("reason", "");
  EXPECT_NE(reason.find("samples[0].image"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("tessera-serve-"), std::string::npos) << "the scratch file shows: " << reason;

  const Answer text_only = server.post("/embed", embed_request({{{"text", "a red square moving left"}}}));
  ASSERT_EQ(text_only.status, 200) << describe(text_only);
  const auto a = embeddings_of(partial), b = embeddings_of(text_only);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_TRUE(bitwise_equal(a[0], b[0]));
  expect_clean_exit(server);
}

TEST(Partial, refused_without_allow_partial) {
  ServeProcess server(fixtures().own);
  const Answer a = server.post("/embed", embed_request({{{"text", "a red square"}, {"image", broken_png()}}}));
  expect_error(a, 422, "samples[0].image");
  // every input broken: nothing to encode even with allow_partial
  json request = embed_request({{{"image", broken_png()}}});
  request["allow_partial"] = true;
  expect_error(server.post("/embed", request), 422, "samples[0]");
  expect_clean_exit(server);
}

// ---- errors ---------------------------------------------------------------------------------------

TEST(Errors, not_json_400) {
  ServeProcess server(fixtures().imagebind);
  expect_error(server.request("POST", "/embed", "{\"samples\": ["), 400, "not JSON");
  expect_error(server.request("POST", "/embed", "[1, 2]"), 400, "JSON object");
  expect_error(server.request("POST", "/v1/embeddings", ""), 400, "not JSON");
  expect_error(server.request("POST", "/similarity", "a=1&b=2", {}, "application/x-www-form-urlencoded"), 400,
               "not JSON");
  expect_clean_exit(server);
}

TEST(Errors, unknown_key_400) {
  ServeProcess server(fixtures().imagebind);
  expect_error(server.post("/embed", {{"samples", {{{"text", "a"}}}}, {"sample", 1}}), 400, "\"sample\"");
  expect_error(server.post("/embed", {{"samples", {{{"txt", "a"}}}}}), 400, "samples[0]: unknown key \"txt\"");
  expect_error(server.post("/v1/embeddings", {{"input", "a"}, {"inputs", "b"}}), 400, "\"inputs\"");
  expect_error(server.post("/classify", {{"samples", {{{"text", "a"}}}}, {"labels", {"x"}}, {"label", "y"}}), 400,
               "\"label\"");
  expect_clean_exit(server);
}

TEST(Errors, wrong_types_400) {
  ServeProcess server(fixtures().imagebind);
  expect_error(server.post("/embed", {{"samples", "a cat"}}), 400, "\"samples\": expected a list");
  expect_error(server.post("/embed", {{"samples", json::array()}}), 400, "empty");
  expect_error(server.post("/embed", {{"samples", {5}}}), 400, "samples[0]: expected an object");
  expect_error(server.post("/embed", {{"samples", {json::object()}}}), 400, "samples[0]: no input");
  expect_error(server.post("/embed", {{"samples", {{{"text", 5}}}}}), 400, "samples[0].text: expected a string");
  expect_error(server.post("/embed", {{"samples", {{{"image", {1, 2}}}}}}), 400, "samples[0].image");
  expect_error(server.post("/embed", {{"samples", {{{"text", "a"}}}}, {"allow_partial", "yes"}}), 400,
               "\"allow_partial\"");
  expect_error(server.post("/embed", {{"samples", {{{"text", "a"}}}}, {"encoding_format", "hex"}}), 400,
               "\"encoding_format\"");
  expect_error(server.post("/v1/embeddings", {{"input", 5}}), 400, "\"input\"");
  expect_error(server.post("/v1/embeddings", {{"input", json::array()}}), 400, "\"input\"");
  expect_error(server.post("/v1/embeddings", {{"input", {1, 2}}}), 400, "\"input\"");
  expect_error(server.post("/similarity", {{"a", {{{"text", "a"}}}}}), 400, "\"b\"");
  expect_error(server.post("/classify", {{"samples", {{{"text", "a"}}}}, {"labels", "x"}}), 400, "\"labels\"");
  expect_error(server.post("/classify", {{"samples", {{{"text", "a"}}}}, {"labels", {"x"}}, {"top", "2"}}), 400,
               "\"top\"");
  expect_clean_exit(server);
}

TEST(Errors, unknown_route_404) {
  ServeProcess server(fixtures().imagebind);
  expect_error(server.get("/nowhere"), 404, "/nowhere");
  expect_error(server.post("/v1/embed", {{"input", "a"}}), 404, "/v1/embed");
  expect_clean_exit(server);
}

TEST(Errors, wrong_method_405) {
  ServeProcess server(fixtures().imagebind);
  struct Case {
    const char* method;
    const char* path;
    const char* allow;
  };
  for (const Case& c : {Case{"GET", "/embed", "POST"}, Case{"POST", "/health", "GET"},
                        Case{"PUT", "/v1/embeddings", "POST"}, Case{"DELETE", "/info", "GET"},
                        Case{"PATCH", "/metrics", "GET"}}) {
    SCOPED_TRACE(std::string(c.method) + " " + c.path);
    const Answer a = server.request(c.method, c.path, "{}");
    expect_error(a, 405, c.path);
    EXPECT_EQ(a.header("Allow"), c.allow);
  }
  expect_clean_exit(server);
}

// A body over --max-payload-mb: 413, with Content-Length (refused unread) or without (sent
// in chunks: refused once it passes the limit). Either way the body is read to its end: the
// next request on the same keep-alive connection is answered.
TEST(Errors, body_over_max_payload_413) {
  ServeProcess server(fixtures().imagebind, {"--max-payload-mb", "1"});
  const std::string body = json{{"samples", {{{"text", std::string(2 * 1024 * 1024, 'a')}}}}}.dump();
  const json small = {{"samples", {{{"text", "a cat"}}}}};
  httplib::Client client("127.0.0.1", server.port());
  client.set_keep_alive(true);
  client.set_read_timeout(30, 0);
  expect_error(answer_of(client.Post("/embed", body, "application/json")), 413, "--max-payload-mb 1 MB");
  const Answer after_sized = answer_of(client.Post("/embed", small.dump(), "application/json"));
  EXPECT_EQ(after_sized.status, 200) << describe(after_sized);

  std::size_t sent = 0;
  const auto in_chunks = [&](std::size_t, httplib::DataSink& sink) {
    if (sent == body.size()) {
      sink.done();
      return true;
    }
    const std::size_t n = std::min<std::size_t>(64 * 1024, body.size() - sent);
    const bool written = sink.write(body.data() + sent, n);
    sent += n;
    return written;
  };
  expect_error(answer_of(client.Post("/embed", in_chunks, "application/json")), 413, "--max-payload-mb 1 MB");
  const Answer after_chunked = answer_of(client.Post("/embed", small.dump(), "application/json"));
  EXPECT_EQ(after_chunked.status, 200) << describe(after_chunked);
  expect_clean_exit(server);
}

TEST(Errors, over_max_samples_413) {
  ServeProcess server(fixtures().imagebind, {"--max-samples", "3"});
  const json four = {{{"text", "a"}}, {{"text", "b"}}, {{"text", "c"}}, {{"text", "d"}}};
  expect_error(server.post("/embed", {{"samples", four}}), 413, "--max-samples 3");
  expect_error(server.post("/v1/embeddings", {{"input", {"a", "b", "c", "d"}}}), 413, "--max-samples 3");
  expect_error(server.post("/similarity", {{"a", four}, {"b", {{{"text", "a"}}}}}), 413, "--max-samples 3");
  expect_error(server.post("/classify", {{"samples", {{{"text", "a"}}}}, {"labels", {"a", "b", "c", "d"}}}), 413,
               "--max-samples 3");
  const Answer three = server.post("/embed", {{"samples", {{{"text", "a"}}, {{"text", "b"}}, {{"text", "c"}}}}});
  EXPECT_EQ(three.status, 200) << describe(three);
  expect_clean_exit(server);
}

TEST(Errors, over_max_batch_tokens_413) {
  ServeProcess server(fixtures().imagebind, {"--max-batch-tokens", "8"});
  expect_error(server.post("/embed", {{"samples", {{{"image", base64_file(fixtures().image)}}}}}), 413,
               "--max-batch-tokens 8");
  expect_clean_exit(server);
}

TEST(Errors, undecodable_input_422) {
  ServeProcess server(fixtures().imagebind);
  expect_error(server.post("/embed", {{"samples", {{{"image", broken_png()}}}}}), 422, "samples[0].image");
  const std::string garbage = serve::base64_encode("this is not an image at all");
  expect_error(server.post("/embed", {{"samples", {{{"text", "a"}}, {{"image", garbage}}}}}), 422,
               "samples[1].image");
  expect_error(server.post("/embed", {{"samples", {{{"image", "not base64!"}}}}}), 422, "samples[0].image");
  expect_error(server.post("/embed", {{"samples", {{{"audio", garbage}}}}}), 422, "samples[0].audio");
  expect_error(server.post("/embed", {{"samples", {{{"video", garbage}}}}}), 422, "samples[0].video");
  expect_error(server.post("/embed", {{"samples", {{{"text", "a"}}}}, {"normalize", false}}), 422, "normalize");
  expect_error(server.post("/v1/embeddings", {{"input", "a"}, {"dimensions", 8}}), 422, "dimensions");
  // the scratch file's name never reaches the client
  const Answer a = server.post("/embed", {{"samples", {{{"image", broken_png()}}}}});
  EXPECT_EQ(a.body.find("tessera-serve-"), std::string::npos) << a.body;
  expect_clean_exit(server);
}

TEST(Errors, modality_the_model_lacks_422) {
  ServeProcess server(fixtures().image_only);
  const Answer info = server.get("/info");
  ASSERT_EQ(info.status, 200) << describe(info);
  EXPECT_EQ(info.body_json()["model"]["modalities"], json({"image"}));
  expect_error(server.post("/embed", {{"samples", {{{"text", "a cat"}}}}}), 422, "samples[0].text");
  expect_error(server.post("/v1/embeddings", {{"input", "a cat"}}), 422, "text");
  const json image_sample = {{"image", base64_file(fixtures().image)}};
  expect_error(server.post("/classify", {{"samples", {image_sample}}, {"labels", {"cat"}}}), 422, "text");
  const Answer image = server.post("/embed", {{"samples", {image_sample}}});
  EXPECT_EQ(image.status, 200) << describe(image);
  expect_clean_exit(server);
}

TEST(Errors, api_key_401) {
  TempDir dir;
  {
    std::ofstream key(dir / "key.txt");
    key << "  s3cret-key \n";
  }
  ServeProcess server(fixtures().imagebind, {"--api-key-file", (dir / "key.txt").string()});
  const json request = {{"samples", {{{"text", "a cat"}}}}};
  const Answer none = server.post("/embed", request);
  expect_error(none, 401, "API key");
  EXPECT_EQ(none.header("WWW-Authenticate"), "Bearer");
  expect_error(server.post("/embed", request, {{"Authorization", "Bearer s3cret-kex"}}), 401, "wrong");
  expect_error(server.post("/embed", request, {{"Authorization", "s3cret-key"}}), 401, "wrong");
  expect_error(server.get("/metrics"), 401, "API key");
  expect_error(server.get("/info"), 401, "API key");
  const Answer right = server.post("/embed", request, {{"Authorization", "Bearer s3cret-key"}});
  EXPECT_EQ(right.status, 200) << describe(right);
  const Answer health = server.get("/health");
  EXPECT_EQ(health.status, 200) << describe(health);
  expect_clean_exit(server);
}

// --max-queue 1: a request waits in the queue for company (--max-wait-ms 1500); a second one,
// sent once the queue holds the first, is refused with Retry-After; the first is answered.
TEST(Errors, queue_full_429) {
  ServeProcess server(fixtures().imagebind, {"--max-queue", "1", "--max-wait-ms", "1500"});
  Answer first;
  std::thread waiting([&] { first = server.post("/embed", {{"samples", {{{"text", "the first request"}}}}}); });
  const bool queued = wait_for_queue(server, 1, 5s);
  Answer second;
  if (queued) second = server.post("/embed", {{"samples", {{{"text", "the second request"}}}}});
  waiting.join();
  ASSERT_TRUE(queued) << "the first request never showed in tessera_queue_depth";
  expect_error(second, 429, "--max-queue");
  EXPECT_FALSE(second.header("Retry-After").empty());
  EXPECT_EQ(first.status, 200) << describe(first);
  EXPECT_EQ(metric(server.metrics(), R"(tessera_requests_total{route="/embed",code="429"})"), 1);
  expect_clean_exit(server);
}

// ---- /v1/embeddings, /similarity, /classify ----------------------------------------------------

TEST(OpenAI, embeddings_shape) {
  ServeProcess server(fixtures().imagebind);
  const Answer one = server.post("/v1/embeddings", {{"input", "a photo of a dog"}, {"model", "whatever"}});
  ASSERT_EQ(one.status, 200) << describe(one);
  json a = one.body_json();
  EXPECT_EQ(a["object"], "list");
  EXPECT_EQ(a["model"], "whatever");
  ASSERT_EQ(a["data"].size(), 1u);
  EXPECT_EQ(a["data"][0]["object"], "embedding");
  EXPECT_EQ(a["data"][0]["index"], 0);
  EXPECT_EQ(a["data"][0]["embedding"].size(), 16u);
  EXPECT_GT(a["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(a["usage"]["total_tokens"], a["usage"]["prompt_tokens"]);

  const Answer two = server.post("/v1/embeddings", {{"input", {"a photo of a dog", "a photo of a car"}}});
  ASSERT_EQ(two.status, 200) << describe(two);
  json b = two.body_json();
  ASSERT_EQ(b["data"].size(), 2u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(b["data"][i]["index"], i);
  // the first text came from the cache: the same floats
  EXPECT_TRUE(bitwise_equal(b["data"][0]["embedding"].get<std::vector<float>>(),
                            a["data"][0]["embedding"].get<std::vector<float>>()));
  expect_clean_exit(server);
}

// The same texts in one request through both routes (no cache: each its own batch of the same
// shape): base64 is the little-endian float32 bytes of /embed's embeddings, and of the floats.
TEST(OpenAI, base64_equals_embed) {
  ServeProcess server(fixtures().imagebind, {"--cache-mb", "0"});
  const std::vector<std::string> texts = {"a photo of a dog", "a photo of a car"};
  const Answer openai = server.post("/v1/embeddings", {{"input", texts}, {"encoding_format", "base64"}});
  const Answer floats = server.post("/v1/embeddings", {{"input", texts}});
  const Answer embed = server.post("/embed", embed_request({{{"text", texts[0]}}, {{"text", texts[1]}}}));
  ASSERT_EQ(openai.status, 200) << describe(openai);
  ASSERT_EQ(floats.status, 200) << describe(floats);
  ASSERT_EQ(embed.status, 200) << describe(embed);
  const auto expected = embeddings_of(embed);
  json o = openai.body_json(), f = floats.body_json();
  ASSERT_EQ(expected.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(bitwise_equal(floats_of_base64(o["data"][i]["embedding"].get<std::string>()), expected[i])) << i;
    EXPECT_TRUE(bitwise_equal(f["data"][i]["embedding"].get<std::vector<float>>(), expected[i])) << i;
  }
  expect_clean_exit(server);
}

TEST(Similarity, scores_are_cosines) {
  const Fixtures& fx = fixtures();
  ServeProcess server(fx.imagebind);
  const json a = {{{"text", "a photo of a cat"}}, {{"image", base64_file(fx.image)}}};
  const json b = {{{"text", "a photo of a cat"}},
                  {{"image", base64_file(fx.image)}},
                  {{"audio", base64_file(fx.audio)}}};
  const Answer s = server.post("/similarity", {{"a", a}, {"b", b}});
  ASSERT_EQ(s.status, 200) << describe(s);
  json scores = s.body_json()["scores"];
  ASSERT_EQ(scores.size(), 2u);
  for (const auto& row : scores) ASSERT_EQ(row.size(), 3u);
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(scores[i][i].get<double>(), 1.0, self_cosine_tolerance) << i;

  // the scores are the dot products of /embed's (unit) embeddings
  const Answer e = server.post("/embed", embed_request(b));
  ASSERT_EQ(e.status, 200) << describe(e);
  const auto emb = embeddings_of(e);
  ASSERT_EQ(emb.size(), 3u);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      const double dot = std::inner_product(emb[i].begin(), emb[i].end(), emb[j].begin(), 0.0);
      EXPECT_NEAR(scores[i][j].get<double>(), dot, self_cosine_tolerance) << i << ", " << j;
    }
  }
  expect_clean_exit(server);
}

TEST(Classify, ranked_probabilities) {
  ServeProcess server(fixtures().imagebind);
  const std::vector<std::string> labels = {"cat", "dog", "car", "tree"};
  const json samples = {{{"image", base64_file(fixtures().image)}}, {{"text", "a dog"}}};
  const Answer c = server.post("/classify", {{"samples", samples}, {"labels", labels}});
  ASSERT_EQ(c.status, 200) << describe(c);
  json results = c.body_json()["results"];
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    ASSERT_EQ(r["labels"].size(), labels.size()) << r;
    double sum = 0, previous = 2;
    std::vector<std::string> seen;
    for (const auto& l : r["labels"]) {
      const double p = l["probability"].get<double>();
      EXPECT_LE(p, previous) << "not ranked: " << r;
      EXPECT_GE(p, 0);
      previous = p;
      sum += p;
      seen.push_back(l["label"].get<std::string>());
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    std::sort(seen.begin(), seen.end());
    std::vector<std::string> sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(seen, sorted);
  }
  EXPECT_EQ(results[0]["modalities"], json({"image"}));
  const Answer top = server.post("/classify", {{"samples", {{{"text", "a dog"}}}}, {"labels", labels}, {"top", 2}});
  ASSERT_EQ(top.status, 200) << describe(top);
  EXPECT_EQ(top.body_json()["results"][0]["labels"].size(), 2u);
  expect_clean_exit(server);
}

// ---- shutdown -------------------------------------------------------------------------------------

// SIGTERM while requests wait in the queue (--max-wait-ms 300): each is answered whole, the
// listening socket is closed at once (a new connection is refused), and the exit status is 0.
TEST(Shutdown, answers_accepted_requests) {
  ServeProcess server(fixtures().imagebind, {"--max-wait-ms", "300"});
  constexpr int requests = 4;
  std::vector<Answer> answers(requests);
  std::vector<std::thread> clients;
  for (int i = 0; i < requests; ++i) {
    clients.emplace_back([&, i] {
      answers[i] = server.post("/embed", {{"samples", {{{"text", "request number " + std::to_string(i)}}}}});
    });
  }
  const bool queued = wait_for_queue(server, requests, 5s);
  if (queued) server.process().signal(SIGTERM);
  const bool stopping = queued && server.process().wait_for_output("SIGTERM: stopping", 5s);
  const Answer refused = stopping ? server.get("/health") : Answer{};
  for (auto& c : clients) c.join();
  ASSERT_TRUE(queued) << "the requests never showed in tessera_queue_depth together";
  ASSERT_TRUE(stopping) << server.process().output();
  EXPECT_EQ(refused.status, 0) << "a new connection after SIGTERM was answered: " << describe(refused);
  EXPECT_EQ(refused.error, httplib::Error::Connection) << httplib::to_string(refused.error);
  for (int i = 0; i < requests; ++i) {
    ASSERT_EQ(answers[i].status, 200) << "request " << i << ": " << describe(answers[i]);
    json body = answers[i].body_json();
    ASSERT_EQ(body["embeddings"].size(), 1u);
    EXPECT_EQ(body["embeddings"][0].size(), 16u);
  }
  const std::optional<int> status = server.process().wait(exit_timeout);
  EXPECT_EQ(status, std::optional<int>(0)) << server.process().output();
  EXPECT_NE(server.process().output().find("stopped"), std::string::npos) << server.process().output();
}

// SIGTERM as soon as the server says it listens (before its accept loop may have started):
// it still stops, with status 0.
TEST(Shutdown, right_after_start) {
  for (int i = 0; i < 3; ++i) {
    ServeProcess server(fixtures().imagebind);
    const std::optional<int> status = server.stop();
    EXPECT_EQ(status, std::optional<int>(0)) << "round " << i << ": " << server.process().output();
  }
}

// Connections that hold no request at SIGTERM (a keep-alive one after its answer; one that
// never sent anything) are closed: the server exits within the second it gives a connection
// accepted just before the stop, not after the keep-alive or request timeouts (5 and 30 s).
TEST(Shutdown, idle_connections_do_not_hold_it) {
  ServeProcess server(fixtures().imagebind);
  httplib::Client keep_alive("127.0.0.1", server.port());
  keep_alive.set_keep_alive(true);
  const Answer first = answer_of(keep_alive.Get("/health"));
  ASSERT_EQ(first.status, 200) << describe(first);

  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(server.port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(silent, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);

  const auto start = std::chrono::steady_clock::now();
  const std::optional<int> status = server.stop();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(silent);
  EXPECT_EQ(status, std::optional<int>(0)) << server.process().output();
  EXPECT_LT(seconds, 3.0) << "idle connections held the server";
}

// ---- concurrency ----------------------------------------------------------------------------------

// 8 clients x 10 requests of texts and images, one or two samples each: all answered; an
// input's embeddings agree within batch rounding, and one from the cache is bitwise one that
// was computed.
TEST(Concurrency, mixed_requests) {
  const Fixtures& f = fixtures();
  ServeProcess server(f.imagebind);
  const std::vector<json> inputs = {{{"text", "a photo of a cat"}},  {{"text", "a photo of a dog"}},
                                    {{"text", "a red car"}},         {{"text", "a tree in the park"}},
                                    {{"image", base64_file(f.image)}}, {{"image", base64_file(f.other_image)}}};
  constexpr int threads = 8, per_thread = 10;
  struct Seen {
    std::size_t input;
    bool hit;
    std::vector<float> embedding;
  };
  std::mutex mutex;
  std::vector<Seen> seen;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int t = 0; t < threads; ++t) {
    clients.emplace_back([&, t] {
      for (int r = 0; r < per_thread; ++r) {
        std::vector<std::size_t> chosen = {static_cast<std::size_t>(t * per_thread + r) % inputs.size()};
        if (r % 3 == 0) chosen.push_back((chosen[0] + 1 + static_cast<std::size_t>(t)) % inputs.size());
        json samples = json::array();
        for (const std::size_t k : chosen) samples.push_back(inputs[k]);
        const Answer a = server.post("/embed", embed_request(samples));
        std::lock_guard lock(mutex);
        if (a.status != 200) {
          failures.push_back("thread " + std::to_string(t) + " request " + std::to_string(r) + ": " + describe(a));
          continue;
        }
        json body = json::parse(a.body, nullptr, false);
        if (!body.is_object() || body["embeddings"].size() != chosen.size()) {
          failures.push_back("thread " + std::to_string(t) + " request " + std::to_string(r) + ": " + a.body);
          continue;
        }
        for (std::size_t j = 0; j < chosen.size(); ++j) {
          seen.push_back({chosen[j], body["samples"][j]["cache"] == "hit",
                          floats_of_base64(body["embeddings"][j].get<std::string>())});
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, the first: " << failures.front();
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    std::vector<const Seen*> computed, cached;
    for (const Seen& s : seen) {
      if (s.input == k) (s.hit ? cached : computed).push_back(&s);
    }
    ASSERT_FALSE(computed.empty()) << "input " << k << " was never computed";
    for (const Seen* s : computed) {
      EXPECT_TRUE(all_close(s->embedding, computed[0]->embedding, batch_rounding)) << "input " << k;
    }
    for (const Seen* s : cached) {
      EXPECT_TRUE(std::any_of(computed.begin(), computed.end(),
                              [&](const Seen* c) { return bitwise_equal(s->embedding, c->embedding); }))
          << "input " << k << ": a cached embedding equals none computed";
    }
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(threads * per_thread + threads * ((per_thread + 2) / 3)));
  expect_clean_exit(server);
}

// ---- faults ---------------------------------------------------------------------------------------

// A raw loopback connection to the server, closed when it goes (with a reset when asked: the
// client vanishes without the orderly goodbye).
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd_);
      throw std::runtime_error("connect: " + why);
    }
  }
  RawConnection(RawConnection&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  RawConnection& operator=(RawConnection&&) = delete;
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }

  void send(const std::string& bytes) const {
    for (std::size_t at = 0; at < bytes.size();) {
      const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close first: what it answered is read after
      at += static_cast<std::size_t>(n);
    }
  }
  // What the server sends until it closes the connection or `timeout` passes.
  std::string read_until_closed(std::chrono::milliseconds timeout) const {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<std::size_t>(n));
    }
    return got;
  }
  // One answer: until its headers and Content-Length bytes of body have arrived, or the
  // server closes, or `timeout` passes.
  std::string read_answer(std::chrono::milliseconds timeout) const {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::size_t end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::smatch m;
        const std::string head = got.substr(0, end);
        const std::size_t length =
            std::regex_search(head, m, std::regex("Content-Length: ([0-9]+)", std::regex::icase)) ? std::stoul(m[1]) : 0;
        if (got.size() >= end + 4 + length) break;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<std::size_t>(n));
    }
    return got;
  }
  // The first `count` bytes the server sends (fewer if it closes or `timeout` passes).
  std::string read_some(std::size_t count, std::chrono::milliseconds timeout) const {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buffer[256];
      const ssize_t n = ::recv(fd_, buffer, std::min(sizeof buffer, count - got.size()), 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<std::size_t>(n));
    }
    return got;
  }
  // Closes with a reset (SO_LINGER 0) rather than a FIN.
  void reset() {
    const linger hard{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    ::close(std::exchange(fd_, -1));
  }

 private:
  int fd_;
};

// The server's resident memory in MB (/proc/PID/status).
double resident_mb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  }
  return 0;
}

// Waits until the server reports at most `most` open connections; false after `timeout`.
bool wait_for_connections(const ServeProcess& server, double most, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // the connection asking is one of them
    if (metric(server.metrics(), "tessera_open_connections") <= most + 1) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// The server still answers: /health, and an embedding.
void expect_serving(const ServeProcess& server, const std::string& after) {
  const Answer health = server.get("/health");
  EXPECT_EQ(health.status, 200) << after << ": " << describe(health);
  const Answer a = server.post("/embed", {{"samples", {{{"text", "still here after " + after}}}}});
  EXPECT_EQ(a.status, 200) << after << ": " << describe(a);
}

const std::string embed_head = "POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";

// A whole POST /embed of `body`, as bytes.
std::string embed_bytes(const std::string& body) {
  return embed_head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Clients that go away mid-request: after the request line, inside the headers, a body cut
// short of its Content-Length (with a FIN and with a reset). None is answered (there is no
// request), none holds a worker, and the server answers the next client.
TEST(Faults, clients_disconnect_mid_request) {
  ServeProcess server(fixtures().imagebind, {"--http-threads", "2"});
  const std::string body = json({{"samples", {{{"text", "a body that never arrives whole"}}}}}).dump();
  const std::vector<std::string> cut = {
      "POST /embed HTTP/1.1\r\n",
      embed_head + "Content-Le",
      embed_bytes(body).substr(0, embed_bytes(body).size() - body.size() / 2),
      embed_head + "Content-Length: 100000000\r\n\r\n" + body,
  };
  for (int round = 0; round < 8; ++round) {  // more rounds than workers: a held worker would show
    for (std::size_t i = 0; i < cut.size(); ++i) {
      RawConnection c(server.port());
      c.send(cut[i]);
      std::this_thread::sleep_for(5ms);
      if (round % 2 == 1) c.reset();
    }
  }
  expect_serving(server, "clients that left mid-request");
  EXPECT_TRUE(wait_for_connections(server, 0, 5s)) << server.metrics();
  expect_clean_exit(server);
}

// Clients that send a whole request and go away before reading its answer (a FIN, or a reset
// while the answer is being written): the server's writes fail, nothing else does.
TEST(Faults, clients_disconnect_mid_response) {
  ServeProcess server(fixtures().imagebind, {"--http-threads", "2", "--cache-mb", "0"});
  json samples = json::array();
  for (int i = 0; i < 64; ++i) samples.push_back({{"text", "caption number " + std::to_string(i)}});
  const std::string body = json({{"samples", samples}}).dump();  // an answer of ~20 KB of floats
  const std::string request = embed_bytes(body);
  for (int round = 0; round < 12; ++round) {
    RawConnection c(server.port());
    c.send(request);
    if (round % 3 == 0) std::this_thread::sleep_for(20ms);  // the answer may have begun
    if (round % 2 == 0) c.reset();  // else closed with a FIN as it goes
  }
  // clients that read the first bytes of their answer and leave
  for (int round = 0; round < 4; ++round) {
    RawConnection c(server.port());
    c.send(request);
    EXPECT_EQ(c.read_some(12, 10s), "HTTP/1.1 200") << "round " << round;
    if (round % 2 == 0) c.reset();
  }
  expect_serving(server, "clients that left mid-response");
  EXPECT_TRUE(wait_for_connections(server, 0, 5s)) << server.metrics();
  expect_clean_exit(server);
}

// Bytes that are not HTTP, or HTTP past every limit: each gets a 4xx answer or its connection
// closed (at the latest when its request's time is up), and the server answers the next
// client.
TEST(Faults, malformed_and_oversized_requests) {
  // a request that never arrives whole is cut at --request-timeout-s
  ServeProcess server(fixtures().imagebind, {"--max-payload-mb", "1", "--request-timeout-s", "2"});
  struct Case {
    std::string name, bytes;
    bool valid = false;  // only large, within every limit
  };
  const std::string big(2 * 1024 * 1024, 'x');
  const auto headers = [](int count) {
    std::string r = "GET /health HTTP/1.1\r\n";
    for (int i = 0; i < count; ++i) r += "X-" + std::to_string(i) + ": v\r\n";
    return r + "\r\n";
  };
  const std::vector<Case> cases = {
      {"binary garbage", std::string("\x00\xff\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 13) + "\r\n\r\n"},
      {"TLS to a plain port", std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11)},
      {"no version", "GET /health\r\n\r\n"},
      {"a 100 KB path", "GET /" + std::string(100 * 1024, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"a 1 MB header", "GET /health HTTP/1.1\r\nX-Big: " + std::string(1024 * 1024, 'b') + "\r\n\r\n"},
      {"10,000 headers (120 KB)", headers(10000), true},
      {"200,000 headers (3 MB)", headers(200000)},
      {"a negative length", embed_head + "Content-Length: -5\r\n\r\n{}"},
      {"a length past 64 bits", embed_head + "Content-Length: 99999999999999999999999\r\n\r\n{}"},
      {"a body past --max-payload-mb", embed_bytes(big)},
      {"a chunked body past --max-payload-mb",
       embed_head + "Transfer-Encoding: chunked\r\n\r\n200000\r\n" + big.substr(0, 0x200000) + "\r\n0\r\n\r\n"},
      {"a bad chunk size", embed_head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"},
      {"JSON nested 100,000 deep",
       [] {
         const std::string deep = std::string(100000, '[') + std::string(100000, ']');
         return embed_bytes(deep);
       }()},
  };
  for (const Case& c : cases) {
    RawConnection connection(server.port());
    const auto start = std::chrono::steady_clock::now();
    connection.send(c.bytes);
    const std::string answer = connection.read_answer(10s);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // an answer, if any, is a whole HTTP answer: a client error, or for a request that is
    // only large (not past a limit), its route's
    const std::regex status_line(c.valid ? "^HTTP/1\\.1 [0-9]{3} " : "^HTTP/1\\.1 4[0-9][0-9] ");
    std::smatch m;
    EXPECT_TRUE(answer.empty() || std::regex_search(answer, m, status_line)) << c.name << ": " << answer.substr(0, 200);
    EXPECT_LT(seconds, 5.0) << c.name << ": the server neither answered nor closed past its request timeout";
    expect_serving(server, c.name);
  }
  EXPECT_TRUE(wait_for_connections(server, 0, 5s)) << server.metrics();
  expect_clean_exit(server);
}

// Slowloris: clients that send their request a byte every 30 ms (its line and headers take
// seconds) against one worker: the watcher reads their heads, so the worker stays free for
// other clients, who are answered at once; the slow ones are answered when they are done.
TEST(Faults, slow_headers_hold_no_worker) {
  ServeProcess server(fixtures().imagebind, {"--http-threads", "1"});
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: one byte at a time\r\n\r\n";
  constexpr int slow = 4;
  std::vector<std::string> answers(slow);
  std::vector<std::thread> clients;
  for (int i = 0; i < slow; ++i) {
    clients.emplace_back([&, i] {
      RawConnection c(server.port());
      for (const char byte : request) {
        c.send(std::string(1, byte));
        std::this_thread::sleep_for(30ms);
      }
      answers[i] = c.read_answer(10s);
    });
  }
  std::this_thread::sleep_for(300ms);  // every slow client has begun
  const auto start = std::chrono::steady_clock::now();
  expect_serving(server, "slow clients began");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& c : clients) c.join();
  EXPECT_LT(seconds, 1.0) << "the slow clients held the worker";
  for (int i = 0; i < slow; ++i) {
    EXPECT_EQ(answers[i].substr(0, 15), "HTTP/1.1 200 OK") << "slow client " << i << ": " << answers[i];
  }
  expect_clean_exit(server);
}

// Raises this process's open-files limit to its hard limit; returns it.
rlim_t raise_open_files() {
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  ::getrlimit(RLIMIT_NOFILE, &files);
  return files.rlim_cur;
}

// 10,000 connections open and silent: a waiting connection takes no worker, so the server
// (with 4 of them) answers other clients at once; their requests' timeout closes them, and
// the server's memory comes back to where it was.
TEST(Faults, ten_thousand_idle_connections) {
  constexpr int idle = 10000;
  if (raise_open_files() < idle + 256) {
    GTEST_SKIP() << "this process may open " << raise_open_files() << " files (ulimit -n), not the " << idle + 256
                 << " the test needs";
  }
  ServeProcess server(fixtures().imagebind, {"--http-threads", "4", "--request-timeout-s", "6"});
  expect_serving(server, "start-up");
  const double before_mb = resident_mb(server.process().pid());

  std::vector<RawConnection> silent;
  silent.reserve(idle);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < idle; ++i) silent.emplace_back(server.port());
  const double open_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // every one of them was accepted
  const auto seen_deadline = std::chrono::steady_clock::now() + 10s;
  double open = 0;
  while (std::chrono::steady_clock::now() < seen_deadline && (open = metric(server.metrics(), "tessera_open_connections")) < idle) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(open, idle) << "connections the server holds";

  // other clients are answered at once
  const auto asked = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i) expect_serving(server, std::to_string(idle) + " idle connections");
  const double answer_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  EXPECT_LT(answer_seconds, 3.0) << "16 requests beside the idle connections";
  const double held_mb = resident_mb(server.process().pid());

  // their request timeout (6 s) closes them: the server ends its side
  EXPECT_TRUE(wait_for_connections(server, 0, 20s)) << server.metrics();
  EXPECT_EQ(silent.front().read_until_closed(1s), "");  // closed, unanswered
  silent.clear();
  const double after_mb = resident_mb(server.process().pid());
  std::printf("%d idle connections: opened in %.2f s; 16 requests beside them in %.3f s; server RSS %.1f MB "
              "before, %.1f MB holding them, %.1f MB after\n",
              idle, open_seconds, answer_seconds, before_mb, held_mb, after_mb);
  EXPECT_LT(after_mb, before_mb + 16) << "the memory the connections took stayed";
  expect_clean_exit(server);
}

// --max-connections: past it a new connection is closed at once, unanswered; the server
// serves again once connections close.
TEST(Faults, max_connections) {
  ServeProcess server(fixtures().imagebind, {"--max-connections", "8"});
  std::vector<RawConnection> held;
  for (int i = 0; i < 8; ++i) held.emplace_back(server.port());
  // the server holds the 8 (the connection asking for /metrics would be a 9th: not asked)
  std::this_thread::sleep_for(200ms);
  RawConnection over(server.port());
  over.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(over.read_until_closed(5s), "") << "a connection past --max-connections was answered";
  held.clear();
  // the server sees them closed as it next reads them
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline && server.get("/health").status != 200) {
    std::this_thread::sleep_for(20ms);
  }
  expect_serving(server, "closing the connections that filled --max-connections");
  expect_clean_exit(server);
}

// 64 clients at once against a queue of 4: each is answered, 200 or 429 with Retry-After;
// none is lost, none half-answered; then the queue is empty and the server serves.
TEST(Faults, burst_past_the_queue) {
  ServeProcess server(fixtures().imagebind, {"--max-queue", "4", "--max-wait-ms", "200", "--cache-mb", "0",
                                             "--http-threads", "64"});
  constexpr int clients = 64;
  std::vector<Answer> answers(clients);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      answers[i] = server.post("/embed", {{"samples", {{{"text", "burst request " + std::to_string(i)}}}}});
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, refused = 0;
  for (int i = 0; i < clients; ++i) {
    if (answers[i].status == 200) {
      ++ok;
      EXPECT_EQ(answers[i].body_json()["embeddings"].size(), 1u) << "request " << i;
    } else if (answers[i].status == 429) {
      ++refused;
      EXPECT_FALSE(answers[i].header("Retry-After").empty()) << "request " << i;
    } else {
      ADD_FAILURE() << "request " << i << ": " << describe(answers[i]);
    }
  }
  EXPECT_EQ(ok + refused, clients);
  EXPECT_GE(ok, 4);
  EXPECT_GE(refused, 1) << "a burst of 64 against a queue of 4 met no 429";
  EXPECT_EQ(metric(server.metrics(), "tessera_queue_depth"), 0.0);
  expect_serving(server, "the burst");
  expect_clean_exit(server);
}

// ---- streams and the page ----------------------------------------------------------------------

// A stream of two video windows (the first in base64, the second a form's file): after each,
// the embedding equals encode_append over the same windows in this process (the same front
// end, the same KV cache steps), bit for bit; closed, it is gone.
TEST(Streams, windows_equal_encode_append) {
  const Fixtures& f = fixtures();
  const fs::path windows[] = {f.video, f.video.parent_path() / "b.y4m"};
  const Pipeline<float> pipeline = Pipeline<float>::open(f.own);
  EncoderCache<float> cache;
  std::vector<std::vector<float>> expected;
  for (const fs::path& w : windows) {
    const RawInput input{"video", w.string(), {}};
    const Encoding<float> e = pipeline.model().encode_append(cache, pipeline.load(std::span<const RawInput>(&input, 1)));
    expected.emplace_back(e.embedding.data(), e.embedding.data() + e.embedding.size());
  }
  ServeProcess server(f.own);
  const Answer opened = server.post("/v1/streams", json::object());
  ASSERT_EQ(opened.status, 200) << describe(opened);
  const std::string id = opened.body_json()["id"];
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(metric(server.metrics(), "tessera_open_streams"), 1.0);
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < 2; ++i) {  // the second window as a form's file (curl -F video=@b.y4m)
    const Answer a = i == 0 ? server.post("/v1/streams/" + id, {{"video", base64_file(windows[i])}, {"encoding_format", "base64"}})
                            : post_form(server, "/v1/streams/" + id,
                                        {form_file("video", windows[i]), form_text("encoding_format", "base64")});
    ASSERT_EQ(a.status, 200) << describe(a);
    const json body = a.body_json();
    EXPECT_TRUE(bitwise_equal(floats_of_base64(body["embedding"]), expected[i])) << "window " << i;
    EXPECT_GT(body["tokens"].get<std::int64_t>(), tokens);
    tokens = body["tokens"];
  }
  EXPECT_GT(metric(server.metrics(), "tessera_stream_cache_bytes"), 0.0);
  EXPECT_EQ(server.request("GET", "/v1/streams/" + id).status, 405);
  EXPECT_EQ(server.request("DELETE", "/v1/streams/" + id).status, 200);
  expect_error(server.post("/v1/streams/" + id, {{"video", base64_file(windows[0])}}), 404, id);
  expect_error(server.request("DELETE", "/v1/streams/" + id), 404, id);
  EXPECT_EQ(metric(server.metrics(), "tessera_open_streams"), 0.0);
  expect_clean_exit(server);
}

TEST(Streams, limits_and_errors) {
  const Fixtures& f = fixtures();
  ServeProcess server(f.own, {"--max-streams", "1"});
  const Answer opened = server.post("/v1/streams", json::object());
  ASSERT_EQ(opened.status, 200) << describe(opened);
  const std::string id = opened.body_json()["id"];
  expect_error(server.post("/v1/streams", json::object()), 429, "too many open streams");
  expect_error(server.post("/v1/streams/" + id, {{"image", broken_png()}}), 422, "window.image");
  expect_error(server.post("/v1/streams/" + id, {{"wings", "x"}}), 400, "unknown key");
  expect_error(server.post("/v1/streams/0123456789abcdef0123456789abcdef", {{"text", "a"}}), 404, "no stream");
  // the refused window left the stream as it was: a good one appends
  const Answer a = server.post("/v1/streams/" + id, {{"text", "a red square"}});
  EXPECT_EQ(a.status, 200) << describe(a);
  expect_clean_exit(server);

  ServeProcess towers(f.imagebind);
  expect_error(towers.post("/v1/streams", json::object()), 422, "tessera's own model");
  expect_clean_exit(towers);
}

TEST(Page, served_at_the_root_without_a_key) {
  const Fixtures& f = fixtures();
  TempDir dir;
  const fs::path key = dir / "key";
  std::ofstream(key) << "secret\n";
  ServeProcess server(f.own, {"--api-key-file", key.string()});
  const Answer a = server.get("/");
  ASSERT_EQ(a.status, 200) << describe(a);
  EXPECT_NE(a.header("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(a.body.find("/similarity"), std::string::npos);
  expect_clean_exit(server);
}

// For the browser test: a path named by an environment variable, if it is set.
fs::path from_env(const char* name, const fs::path& otherwise) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? fs::path(value) : otherwise;
}

bool executable(const fs::path& file) { return fs::is_regular_file(file) && ::access(file.c_str(), X_OK) == 0; }

// The program `name` as the shell finds it on $PATH (ChildProcess's execv does not search);
// empty when there is none.
fs::path on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (std::string_view rest = path != nullptr ? path : ""; !rest.empty();) {
    const std::size_t colon = std::min(rest.find(':'), rest.size());
    const fs::path candidate = fs::path(rest.substr(0, colon)) / name;
    if (colon > 0 && executable(candidate)) return candidate;
    rest.remove_prefix(std::min(colon + 1, rest.size()));
  }
  return {};
}

// The page used as a person would: tests/serve/page_test.mjs drives headless Chromium with the
// npm package playwright-core, types two captions, picks an image and a WAV, clicks Compare and
// reads the matrix from the page. What the page shows is the server's own /similarity for the
// same inputs, to its three decimals; its screenshot stays in the test's working directory
// (<build>/apps/page_filled_in_by_chromium.png). Skipped, naming what to install, without
// Chromium ($TESSERA_CHROMIUM, else /usr/bin/chromium), node on PATH, or playwright-core
// ($TESSERA_BROWSER_TEST_DIR, else <source dir>/build/browser-test).
TEST(Page, filled_in_by_chromium) {
  const fs::path chromium = from_env("TESSERA_CHROMIUM", "/usr/bin/chromium");
  if (!executable(chromium)) {
    GTEST_SKIP() << "no Chromium at " << chromium.string()
                 << ": install Debian's with\n  sudo apt-get install --no-install-recommends chromium\n"
                    "or point TESSERA_CHROMIUM at one.";
  }
  const fs::path node = on_path("node");
  if (node.empty()) GTEST_SKIP() << "no node on PATH: install it with\n  sudo apt-get install nodejs npm";
  const fs::path modules = from_env("TESSERA_BROWSER_TEST_DIR", TESSERA_BROWSER_TEST_DIR);
  if (!fs::exists(modules / "node_modules" / "playwright-core" / "package.json")) {
    GTEST_SKIP() << "no playwright-core in " << (modules / "node_modules").string()
                 << ". From the repository root run\n"
                    "  npm install --no-audit --no-fund --prefix build/browser-test playwright-core@1.65.2\n"
                    "or point TESSERA_BROWSER_TEST_DIR at such a directory.";
  }

  const Fixtures& f = fixtures();
  const std::vector<std::string> captions = {"a red square moving left", "a dog barking"};
  ServeProcess server(f.own);
  const fs::path screenshot = fs::current_path() / "page_filled_in_by_chromium.png";
  fs::remove(screenshot);
  ChildProcess browser(node.string(), {TESSERA_PAGE_TEST_SCRIPT, modules.string(), chromium.string(),
                                       "http://127.0.0.1:" + std::to_string(server.port()), screenshot.string(),
                                       captions[0] + "\n" + captions[1], f.image.string(), f.audio.string()});
  // about 4 s here: Chromium's start, the page's one request, the screenshot
  ASSERT_EQ(browser.wait(60s), std::optional<int>(0)) << "node page_test.mjs:\n" << browser.output();
  // its one line of JSON, the last one it printed
  const std::string output = browser.output();
  const std::size_t line = output.rfind("\n{");
  const json shown = json::parse(output.substr(line == std::string::npos ? 0 : line + 1), nullptr, false);
  ASSERT_TRUE(shown.is_object() && shown.contains("names") && shown.contains("scores")) << output;

  const json names = {captions[0], captions[1], f.image.filename().string(), f.audio.filename().string()};
  EXPECT_EQ(shown["names"], names);
  const std::string model_name = server.get("/info").body_json()["model"]["name"];
  EXPECT_NE(shown.value("info", "").find(model_name), std::string::npos) << shown["info"];
  const json samples = {{{"text", captions[0]}}, {{"text", captions[1]}},
                        {{"image", base64_file(f.image)}}, {{"audio", base64_file(f.audio)}}};
  const Answer s = server.post("/similarity", {{"a", samples}, {"b", samples}});
  ASSERT_EQ(s.status, 200) << describe(s);
  const json scores = s.body_json()["scores"];
  // The page prints three decimals: a cell is within half a thousandth of the score, plus the
  // rounding between the page's computation of it and this one.
  constexpr double shown_precision = 0.5e-3 + batch_rounding;
  ASSERT_EQ(shown["scores"].size(), names.size()) << shown;
  for (std::size_t i = 0; i < names.size(); ++i) {
    ASSERT_EQ(shown["scores"][i].size(), names.size()) << shown;
    for (std::size_t j = 0; j < names.size(); ++j) {
      ASSERT_TRUE(shown["scores"][i][j].is_number()) << "cell " << i << ", " << j << ": " << shown["scores"][i][j];
      EXPECT_NEAR(shown["scores"][i][j].get<double>(), scores[i][j].get<double>(), shown_precision)
          << "cell " << i << ", " << j;
    }
  }

  const std::string png = fs::exists(screenshot) ? read_file(screenshot) : std::string();
  EXPECT_GT(png.size(), 1000u) << screenshot.string();
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << screenshot.string() << " is not a PNG";
  expect_clean_exit(server);
}

}  // namespace
}  // namespace tessera::test
