#include "common/thread_pool.h"

#include <sched.h>

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
    // Leaked on purpose: joining threads from a static destructor at interpreter exit can
    // deadlock; the OS reclaims them.
    static ThreadPool* pool = new ThreadPool();
    return *pool;
  }

  std::mutex team_mu;  // held by the Team that owns the workers

  void ensure_workers(int n) {  // called with team_mu held
    while (int(workers_.size()) < n) {
      // The generation is read here, not in the new thread: a thread that starts late must
      // still see the first job published after this point as new.
      const int idx = int(workers_.size());
      const uint64_t seen = gen_.load(std::memory_order_acquire);
      workers_.emplace_back([this, idx, seen] { worker_loop(idx, seen); });
    }
  }

  void run(int nworkers, int64_t ntasks, Team::TaskFn fn, void* ctx) {
    // Publish the job, then bump the generation (release) so spinning workers see it.
    // The participant count travels inside the generation word, so a worker decides whether
    // it takes part from the same atomic read that tells it a job exists (a non-participant
    // never reads the other job fields, which the next job may already be rewriting).
    fn_ = fn;
    ctx_ = ctx;
    ntasks_ = ntasks;
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      uint64_t g = gen_.load(std::memory_order_relaxed);
      gen_.store(((g >> 8) + 1) << 8 | uint64_t(nworkers), std::memory_order_release);
    }
    cv_.notify_all();
    work(0);
    // Wait for the participating workers. They are (almost) done when the caller runs out of
    // tasks; spin, then yield (a descheduled worker on a busy machine needs the CPU).
    int spins = 0;
    while (done_.load(std::memory_order_acquire) < nworkers) {
      if (++spins < 4000) {
        GASTRT_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  ThreadPool() = default;

  void work(int tid) {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= ntasks_) break;
      try {
        fn_(ctx_, i, tid);
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(ntasks_, std::memory_order_relaxed);  // stop handing out tasks
      }
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
      // The caller waits for every participant before it publishes the next job, so a
      // participant always sees the job of generation g here.
      if (idx < int(g & 0xff)) {
        work(idx + 1);
        done_.fetch_add(1, std::memory_order_release);
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> done_{0};
  Team::TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t ntasks_ = 0;
  std::mutex err_mu_;
  std::exception_ptr error_;
};

Team::Team(int threads) {
  if (threads <= 1) return;
  if (threads > 256) threads = 256;
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
