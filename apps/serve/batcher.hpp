#pragma once
// Dynamic batching for tessera-serve (docs/serving.md, "Batching"): requests from many clients
// join one packed batch, encoded by one thread while the HTTP workers prepare the next ones.
//
// A request is a job: its samples (cache misses, already preprocessed and checked) and their
// tokens. The encoding thread takes the oldest job, then waits for more until the batch's
// tokens reach max_batch_tokens or max_wait has passed since that job arrived, whichever comes
// first (max_wait 0: TEI's policy, whatever is queued and nothing more), and takes the jobs
// that fit, oldest first; a job is never split, so a request larger than the budget is
// refused before it queues (Batcher::fits). The batch is encoded in one call, its embeddings
// handed back to each job's caller in order.
//
// A request's embeddings are bitwise those of encoding its samples alone in one batch when no
// other request shares the batch (the encoder's rounding depends on the batch's shape:
// docs/serving.md says what that changes).

#include <tessera/core/error.hpp>
#include <tessera/model/sample.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace tessera::serve {

struct BatcherOptions {
  std::size_t max_batch_tokens = 16384;  // a batch's tokens, at most (a job's alone may not exceed it)
  double max_wait_seconds = 0;           // how long the oldest job waits for company
  std::size_t max_queue = 512;           // jobs waiting, at most (then QueueFull: HTTP 429)
};

// One batch, for the metrics.
struct BatchInfo {
  std::size_t jobs = 0, samples = 0, tokens = 0;
  double encode_seconds = 0;
};

// The queue already holds max_queue jobs.
struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The server is stopping: no new jobs.
struct Stopping : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Batcher {
 public:
  // encode(samples) -> one embedding per sample, in order; called on the batching thread only.
  using Encode = std::function<std::vector<std::vector<float>>(std::span<const Sample<float>>)>;
  using Observe = std::function<void(const BatchInfo&)>;

  struct Result {
    std::vector<std::vector<float>> embeddings;  // one per sample of the job
    double queue_seconds = 0;                     // from submission to its batch's start
    double encode_seconds = 0;                    // its batch's encoding
  };

  Batcher(const BatcherOptions& options, Encode encode, Observe observe = {})
      : options_(options), encode_(std::move(encode)), observe_(std::move(observe)) {
    check(options.max_batch_tokens >= 1, "Batcher: max_batch_tokens must be positive");
    check(options.max_wait_seconds >= 0 && options.max_wait_seconds <= 10,
          "Batcher: max_wait_seconds must be within [0, 10]");
    check(options.max_queue >= 1, "Batcher: max_queue must be positive");
    thread_ = std::thread([this] { loop(); });
  }
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;
  ~Batcher() { stop(); }

  // Whether a job of `tokens` tokens can ever be batched.
  bool fits(std::size_t tokens) const { return tokens <= options_.max_batch_tokens; }
  const BatcherOptions& options() const { return options_; }

  // Encodes `samples` (tokens in all: `tokens`, at most max_batch_tokens) in a batch, waiting
  // for it. Throws QueueFull when max_queue jobs wait already, Stopping after stop(), and
  // whatever encode threw for the batch.
  Result run(std::vector<Sample<float>> samples, std::size_t tokens) {
    check(fits(tokens), "Batcher: a job of ", tokens, " tokens exceeds max_batch_tokens ",
          options_.max_batch_tokens);
    std::future<Result> done;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) throw Stopping("the server is shutting down");
      if (queue_.size() >= options_.max_queue) {
        throw QueueFull("the queue holds " + std::to_string(queue_.size()) + " requests (--max-queue)");
      }
      Job job;
      job.samples = std::move(samples);
      job.tokens = tokens;
      job.arrived = Clock::now();
      done = job.done.get_future();
      queue_.push_back(std::move(job));
    }
    wake_.notify_all();
    return done.get();
  }

  // Jobs waiting now.
  std::size_t depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }

  // No new jobs; the queued ones are encoded, then the thread ends. Idempotent.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Job {
    std::vector<Sample<float>> samples;
    std::size_t tokens = 0;
    Clock::time_point arrived;
    std::promise<Result> done;
  };

  void loop() {
    while (true) {
      std::vector<Job> batch;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        const auto deadline = queue_.front().arrived +
                              std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(options_.max_wait_seconds));
        // wait for company until the budget is full or the oldest job's time is up
        while (!stopping_ && queued_tokens() < options_.max_batch_tokens && Clock::now() < deadline) {
          wake_.wait_until(lock, deadline);
        }
        std::size_t tokens = 0;
        while (!queue_.empty() &&
               (batch.empty() || tokens + queue_.front().tokens <= options_.max_batch_tokens)) {
          tokens += queue_.front().tokens;
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      encode(batch);
    }
  }

  std::size_t queued_tokens() const {
    std::size_t n = 0;
    for (const Job& job : queue_) n += job.tokens;
    return n;
  }

  void encode(std::vector<Job>& batch) {
    const auto start = Clock::now();
    std::vector<Sample<float>> samples;
    std::vector<std::size_t> counts;  // each job's samples
    BatchInfo info;
    info.jobs = batch.size();
    for (Job& job : batch) {
      info.tokens += job.tokens;
      counts.push_back(job.samples.size());
      for (auto& s : job.samples) samples.push_back(std::move(s));
    }
    info.samples = samples.size();
    try {
      std::vector<std::vector<float>> embeddings =
          samples.empty() ? std::vector<std::vector<float>>{} : encode_(samples);
      check(embeddings.size() == samples.size(), "Batcher: ", embeddings.size(),
            " embeddings for ", samples.size(), " samples");
      const auto end = Clock::now();
      info.encode_seconds = std::chrono::duration<double>(end - start).count();
      std::size_t next = 0;
      for (std::size_t j = 0; j < batch.size(); ++j) {
        Job& job = batch[j];
        Result result;
        result.queue_seconds = std::chrono::duration<double>(start - job.arrived).count();
        result.encode_seconds = info.encode_seconds;
        for (std::size_t i = 0; i < counts[j]; ++i) {
          result.embeddings.push_back(std::move(embeddings[next++]));
        }
        job.done.set_value(std::move(result));
      }
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      for (Job& job : batch) job.done.set_exception(error);
    }
    if (observe_) observe_(info);
  }

  BatcherOptions options_;
  Encode encode_;
  Observe observe_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tessera::serve
