// Large, long-lived CPU buffers (packed weights, the executor's workspaces) on transparent huge
// pages where Linux offers them. Weights and activations are streamed: with 4 KB pages every 4 KB
// of a forward's tens of MB costs a TLB entry, and the misses showed in the timings. Measured on
// Zen 4 against GASTRT_HUGE_PAGES=0 (benchmarks/RESULTS.md, #17 ninth session; THP in "madvise"
// mode, as most distributions ship it): batch-1 VideoPose3D-243 fp32 +20% / bf16 +7%, RIE-243
// +6% / +12%; batch 64 and sequences within noise (0-3%).
//
// big_alloc(bytes): bytes >= 2 MB get a 2 MB-aligned block rounded up to whole 2 MB pages and
// madvise(MADV_HUGEPAGE) (the kernel may still back it with 4 KB pages: the advice is a hint);
// smaller ones a 64-byte-aligned block. GASTRT_HUGE_PAGES=0 gives every size the 64-byte path (no
// 2 MB alignment or rounding, no advice: A/B timing, or where a few MB of rounding matter more
// than speed). Results never depend on it.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace gastrt {

void* big_alloc(std::size_t bytes);  // throws std::bad_alloc; 64-byte aligned; big_free to release
void big_free(void* p) noexcept;
bool huge_pages_enabled();      // GASTRT_HUGE_PAGES (read once), default on

template <class T>
struct BigAllocator {
  using value_type = T;
  BigAllocator() noexcept = default;
  template <class U>
  BigAllocator(const BigAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(big_alloc(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { big_free(p); }
  template <class U>
  bool operator==(const BigAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const BigAllocator<U>&) const noexcept { return false; }
};

// A vector of packed weights (big_alloc's placement).
template <class T>
using BigVector = std::vector<T, BigAllocator<T>>;

}  // namespace gastrt
