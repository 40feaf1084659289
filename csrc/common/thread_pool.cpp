#include "common/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <new>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GASTRT_PAUSE() _mm_pause()
#else
#define GASTRT_PAUSE() std::this_thread::yield()
#endif

namespace gastrt {

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

class ThreadPool {
 public:
  static ThreadPool& global() {
    // Leaked on purpose, workers detached: joining threads from a static destructor at
    // interpreter exit can deadlock; the OS reclaims them.
    static ThreadPool* pool = new ThreadPool();
    return *pool;
  }

  std::mutex team_mu;  // held by the Team that owns the workers

  void ensure_workers(int n) {  // called with team_mu held
    while (nworkers_started_ < n) {
      // The generation is read here, not in the new thread: a thread that starts late must
      // still see the first job published after this point as new.
      const int idx = nworkers_started_;
      const uint64_t seen = gen_.load(std::memory_order_acquire);
      std::thread([this, idx, seen] { worker_loop(idx, seen); }).detach();
      ++nworkers_started_;
    }
  }

  void run(int nworkers, int64_t ntasks, Team::TaskFn fn, void* ctx) {
    // Publish the job: its fields, then the claim word (release) tagged with the new job's
    // tag, then the generation word that wakes the workers. The participant count travels
    // inside the generation word, so a worker learns whether it may take part from the same
    // atomic read that tells it a job exists.
    const uint64_t tag = (gen_.load(std::memory_order_relaxed) >> 8) + 1;
    fn_ = fn;
    ctx_ = ctx;
    ntasks_.store(ntasks, std::memory_order_relaxed);
    finished_.store(0, std::memory_order_relaxed);
    cancelled_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    claim_.store(pack(tag, 0), std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen_.store(tag << 8 | uint64_t(nworkers), std::memory_order_release);
    }
    cv_.notify_all();
    work(tag, 0);
    // Every task is claimed now; wait for the ones still running on workers. A worker that
    // has not woken up yet is NOT waited for (it will find no task left): on a busy machine
    // it may not get a CPU for milliseconds. Spin, then yield.
    int spins = 0;
    while (finished_.load(std::memory_order_acquire) < ntasks) {
      if (++spins < 4000) {
        GASTRT_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  ThreadPool() { pthread_atfork(nullptr, nullptr, &ThreadPool::after_fork_in_child); }

  // fork() copies only the calling thread: in the child the workers do not exist, and the
  // locks may be held by threads that are gone. Start over (workers are re-created on demand),
  // so a process that forks after using gastrt (multiprocessing) does not deadlock.
  static void after_fork_in_child() {
    ThreadPool& p = global();
    new (&p.team_mu) std::mutex();
    new (&p.mu_) std::mutex();
    new (&p.cv_) std::condition_variable();
    new (&p.err_mu_) std::mutex();
    p.nworkers_started_ = 0;
    p.gen_.store(0, std::memory_order_relaxed);
    p.claim_.store(0, std::memory_order_relaxed);
  }

  // Tasks are claimed with a CAS on (job tag, next index): a worker that woke up late, for a
  // job that is over, fails the tag check and touches nothing else. A successful claim keeps
  // the job alive (the caller waits for finished_ == ntasks), so fn_ / ctx_ are stable while
  // the task runs.
  static constexpr int kIdxBits = 40;
  static uint64_t pack(uint64_t tag, uint64_t idx) { return (tag << kIdxBits) | idx; }

  void work(uint64_t tag, int tid) {
    const uint64_t mask = (uint64_t(1) << kIdxBits) - 1;
    const uint64_t tag_bits = tag & ((uint64_t(1) << (64 - kIdxBits)) - 1);
    for (;;) {
      uint64_t v = claim_.load(std::memory_order_acquire);
      if ((v >> kIdxBits) != tag_bits) return;
      const int64_t i = int64_t(v & mask);
      if (i >= ntasks_.load(std::memory_order_relaxed)) return;
      if (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel,
                                        std::memory_order_relaxed))
        continue;
      if (!cancelled_.load(std::memory_order_relaxed)) {
        try {
          fn_(ctx_, i, tid);
        } catch (...) {
          std::lock_guard<std::mutex> lock(err_mu_);
          if (!error_) error_ = std::current_exception();
          cancelled_.store(true, std::memory_order_relaxed);  // the rest are claimed, skipped
        }
      }
      finished_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void worker_loop(int idx, uint64_t seen) {
    for (;;) {
      // Spin ~100 us for the next job, then sleep.
      uint64_t g = gen_.load(std::memory_order_acquire);
      if (g == seen) {
        auto t0 = std::chrono::steady_clock::now();
        int n = 0;
        while ((g = gen_.load(std::memory_order_acquire)) == seen) {
          GASTRT_PAUSE();
          if ((++n & 63) == 0 &&
              std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(100))
            break;
        }
        if (g == seen) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return gen_.load(std::memory_order_acquire) != seen; });
          g = gen_.load(std::memory_order_acquire);
        }
      }
      seen = g;
      if (idx < int(g & 0xff)) work(g >> 8, idx + 1);
    }
  }

  int nworkers_started_ = 0;  // detached worker threads (never joined, see global())
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};    // (job tag << 8) | participating workers
  std::atomic<uint64_t> claim_{0};  // (job tag << 40) | next task index
  std::atomic<int64_t> finished_{0};
  std::atomic<int64_t> ntasks_{0};
  std::atomic<bool> cancelled_{false};
  Team::TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::mutex err_mu_;
  std::exception_ptr error_;
};

Team::Team(int threads) {
  if (threads <= 1) return;
  if (threads > kMaxThreads) threads = kMaxThreads;
  ThreadPool& pool = ThreadPool::global();
  if (!pool.team_mu.try_lock()) return;  // busy: run serially on the caller
  try {
    pool.ensure_workers(threads - 1);
  } catch (...) {
    pool.team_mu.unlock();
    return;  // could not start threads: serial
  }
  pool_ = &pool;
  size_ = threads;
}

Team::~Team() {
  if (pool_) pool_->team_mu.unlock();
}

void Team::run(int64_t ntasks, TaskFn fn, void* ctx) {
  int nworkers = int(std::min<int64_t>(size_ - 1, ntasks - 1));  // <= 255 (Team caps size)
  pool_->run(nworkers, ntasks, fn, ctx);
}

}  // namespace gastrt
