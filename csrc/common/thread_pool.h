// gastrt's own thread pool: the only source of parallelism in the CPU runtime (OpenBLAS runs
// single-threaded inside the tasks, see blas.h), so there is never more than one team of busy
// threads per forward and no oversubscription between two runtimes' pools.
//
// One process-wide pool; a forward (or a standalone kernel call) takes it for its whole
// duration with `Team team(threads)`. A second caller that finds the pool busy (another Python
// thread's forward) does not wait: its Team has size 1 and runs on the calling thread, with its
// own workspace. So concurrent calls are always safe and never deadlock; they just do not
// share the worker threads.
//
// Workers spin briefly after each job (the next parallel region of a forward usually starts
// within microseconds) and then block on a condition variable, so an idle pool costs nothing.
#pragma once
#include <cstdint>
#include <mutex>
#include <type_traits>

namespace gastrt {

class ThreadPool;

// Number of CPUs this process may run on (sched_getaffinity), at least 1.
int available_cpus();

class Team {
 public:
  static constexpr int kMaxThreads = 256;  // a larger request gets this many
  // Requests `threads` threads (the caller counts as one). threads <= 1: serial.
  explicit Team(int threads);
  ~Team();
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return size_; }

  // Runs fn(task, tid) for every task in [0, ntasks), tid in [0, size()): tid 0 is the calling
  // thread. Tasks are handed out dynamically (an atomic counter), so uneven tasks and a noisy
  // machine balance themselves. Returns when all tasks are done; rethrows the first exception.
  template <class F>
  void parallel_for(int64_t ntasks, F&& fn) {
    if (ntasks <= 0) return;
    if (size_ == 1 || ntasks == 1) {
      for (int64_t i = 0; i < ntasks; ++i) fn(i, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run(ntasks, [](void* ctx, int64_t i, int tid) { (*static_cast<Fn*>(ctx))(i, tid); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

  using TaskFn = void (*)(void*, int64_t, int);

 private:
  void run(int64_t ntasks, TaskFn fn, void* ctx);
  ThreadPool* pool_ = nullptr;  // null when serial
  int size_ = 1;
};

}  // namespace gastrt
