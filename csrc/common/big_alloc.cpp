#include "gastrt/big_alloc.h"

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gastrt {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

bool huge_pages_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("GASTRT_HUGE_PAGES");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

void* big_alloc(size_t bytes) {
  bytes = bytes ? bytes : 1;
  const bool huge = bytes >= kHugePage && huge_pages_enabled();
  const size_t align = huge ? kHugePage : 64;
  if (bytes > size_t(-1) - align) throw std::bad_alloc();
  const size_t size = (bytes + align - 1) / align * align;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge) (void)madvise(p, size, MADV_HUGEPAGE);  // a hint; failure is fine
#endif
  return p;
}

void big_free(void* p) noexcept { std::free(p); }

}  // namespace gastrt
