// Picks the element-wise kernel variant for this CPU once (see vec_kernels.h).
#include <cstdlib>
#include <cstring>

#include "vec_kernels.h"

namespace gastrt {
namespace cpu {

const VecKernels& vec() {
  static const VecKernels* chosen = [] {
#if defined(GASTRT_HAVE_VK_X86)
    __builtin_cpu_init();
    // GASTRT_ISA=base|avx2|avx512 caps the choice (debugging, A/B timing).
    const char* cap = std::getenv("GASTRT_ISA");
    const bool allow512 = !cap || std::strcmp(cap, "avx512") == 0;
    const bool allow2 = allow512 || (cap && std::strcmp(cap, "avx2") == 0);
    if (allow512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return &vk_avx512::kernels;
    if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return &vk_avx2::kernels;
#endif
    return &vk_base::kernels;
  }();
  return *chosen;
}

}  // namespace cpu
}  // namespace gastrt
