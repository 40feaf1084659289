// Which bf16 dot-product kernel runs (cpu_ops.h: Bf16DotKernel), its weight packing, and the
// check each native kernel passes against its emulation before an engine uses it.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.h"
#include "gastrt/cpu_ops.h"
#include "gemm_bf16_dot.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(GASTRT_HAVE_VK_X86)
#include <cpuid.h>
#endif

namespace gastrt {
namespace cpu {

uint32_t* bf16_pairs_scratch(size_t n) {
  thread_local std::vector<uint32_t> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

bool cpu_has_avx512bf16() {
#if defined(GASTRT_HAVE_VK_X86)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
#else
  return false;
#endif
}

// AMX-BF16 (CPUID leaf 7: EDX bits 22 AMX-BF16, 24 AMX-TILE; XCR0 bits 17-18: the OS manages
// the tile state) and the OS's consent: Linux keeps the 8 KB tile state off until a process asks
// for it (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once for all its threads); a
// tile instruction before that faults. The request fails (ENOSPC) while some thread has an
// alternate signal stack too small for the tile state. CPUID is read directly: older compilers
// (Clang < 18) reject __builtin_cpu_supports("amx-tile").
namespace {

struct AmxSupport {
  bool ok = false;
  std::string why;  // the CPU has AMX-BF16 but it cannot be used: why ("" otherwise)
};

const AmxSupport& amx_support() {
  static const AmxSupport s = [] {
    AmxSupport r;
#if defined(GASTRT_HAVE_VK_X86) && defined(__linux__) && defined(SYS_arch_prctl)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!cpu_has_avx512bf16() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return r;
    if (!(d >> 22 & 1u) || !(d >> 24 & 1u)) return r;
    uint32_t xlo = 0, xhi = 0;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));  // OSXSAVE: implied by AVX-512 above
    if ((xlo >> 17 & 3u) != 3u) {
      r.why = "the CPU has AMX-BF16 but the OS does not manage the tile state (XCR0)";
      return r;
    }
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      r.why = std::string("the CPU has AMX-BF16 but Linux refused this process the tile state "
                          "(arch_prctl ARCH_REQ_XCOMP_PERM: ") + std::strerror(errno) + ")";
      return r;
    }
    r.ok = true;
#endif
    return r;
  }();
  return s;
}

}  // namespace

bool cpu_has_amx_bf16() { return amx_support().ok; }

const char* bf16_dot_kernel_name(Bf16DotKernel k) {
  switch (k) {
    case Bf16DotKernel::Amx: return "amx";
    case Bf16DotKernel::AmxEmulated: return "emulated-amx";
    case Bf16DotKernel::Avx512Bf16: return "avx512bf16";
    case Bf16DotKernel::Emulated: return "emulated";
    default: return "none";
  }
}

bool bf16_dot_kernel_runs_here(Bf16DotKernel k) {
  switch (k) {
    case Bf16DotKernel::Emulated:
    case Bf16DotKernel::AmxEmulated: return true;
    case Bf16DotKernel::Avx512Bf16: return cpu_has_avx512bf16();
    case Bf16DotKernel::Amx: return cpu_has_amx_bf16();
    default: return false;
  }
}

void gemm_bf16_dot(Bf16DotKernel k, const GemmBf16DotParams& p) {
  GASTRT_CHECK(p.m >= 0 && p.taps >= 1 && p.ci >= 1 && p.n0 >= 0 && p.ncols >= 0 &&
                   p.n0 + p.ncols <= p.n_total,
               "gemm_bf16_dot: bad geometry m=" << p.m << " taps=" << p.taps << " ci=" << p.ci
                                               << " columns [" << p.n0 << ", " << p.n0 + p.ncols
                                               << ") of " << p.n_total);
  GASTRT_CHECK(bf16_dot_kernel_runs_here(k),
               "gemm_bf16_dot: kernel '" << bf16_dot_kernel_name(k) << "' cannot run on this CPU");
  const bool amx_rows = p.m >= kBf16AmxMinRows;
  switch (k) {
    case Bf16DotKernel::Emulated: bf16dot_emu::gemm(p); return;
    case Bf16DotKernel::AmxEmulated: amx_rows ? bf16amx_emu::gemm(p) : bf16dot_emu::gemm(p); return;
#if defined(GASTRT_HAVE_VK_X86)
    case Bf16DotKernel::Avx512Bf16: bf16dot_avx512::gemm(p); return;
    case Bf16DotKernel::Amx: amx_rows ? bf16amx_hw::gemm(p) : bf16dot_avx512::gemm(p); return;
#endif
    default: return;
  }
}

BigVector<uint32_t> pack_bf16_pairs(const float* w, int32_t taps, int32_t ci, int64_t n) {
  GASTRT_CHECK(taps >= 1 && ci >= 1 && n >= 1, "pack_bf16_pairs: bad shape");
  GASTRT_CHECK(weights_exact_in(w, size_t(int64_t(taps) * ci * n), DType::BF16),
               "pack_bf16_pairs: weights are not bf16 values");
  const int64_t cp = bf16_pairs_per_tap(ci), kp = bf16_pair_rows(taps, ci);
  const int64_t np = (n + kBf16DotPanel - 1) / kBf16DotPanel;
  BigVector<uint32_t> out(size_t(np * kp * kBf16DotPanel), 0u);
  for (int32_t t = 0; t < taps; ++t)
    for (int32_t c = 0; c < ci; ++c) {  // row t * ci + c of w, read in order
      const float* row = w + (int64_t(t) * ci + c) * n;
      const int64_t pr = int64_t(t) * cp + c / 2;  // its pair row
      for (int64_t col = 0; col < n; ++col) {
        const uint32_t h = bf16_round(row[col]);
        out[size_t(((col / kBf16DotPanel) * kp + pr) * kBf16DotPanel + col % kBf16DotPanel)] |=
            c % 2 ? h << 16 : h;
      }
    }
  return out;
}

namespace {

// A native kernel against its emulation on a product with every edge (odd ci, three taps, a
// partial first and last panel, row tails; m rows: pick the AMX path or not): each element within
// 1e-5 of its sum of |products| (the SDM's rounding order is the emulation's; the tolerance leaves
// room for hardware that rounds a pair once). "" when it passes, else why not.
std::string check_kernel(Bf16DotKernel native, Bf16DotKernel emulated, int64_t m) {
  const int64_t n = 150, n0 = 5, ncols = 140;
  const int32_t taps = 3, ci = 45;
  const int64_t K = int64_t(taps) * ci;
  uint32_t state = 12345u;
  auto rnd = [&] {
    state = state * 1664525u + 1013904223u;
    return float(int32_t(state >> 8) - (1 << 23)) / float(1 << 23);
  };
  std::vector<float> a(size_t(m * K)), w(size_t(K * n));
  for (float& v : a) v = rnd();
  for (float& v : w) {
    const uint32_t b = uint32_t(bf16_round(rnd())) << 16;
    std::memcpy(&v, &b, sizeof v);
  }
  const BigVector<uint32_t> wp = pack_bf16_pairs(w.data(), taps, ci, n);
  std::vector<float> ce(size_t(m * ncols), 0.f), ch(size_t(m * ncols), 0.f);
  GemmBf16DotParams p{};
  p.a = a.data();
  p.m = m;
  p.lda = K;
  p.tap_stride = ci;
  p.taps = taps;
  p.ci = ci;
  p.w_pairs = wp.data();
  p.n_total = n;
  p.n0 = n0;
  p.ncols = ncols;
  p.ldc = ncols;
  p.c = ce.data();
  gemm_bf16_dot(emulated, p);
  p.c = ch.data();
  gemm_bf16_dot(native, p);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < ncols; ++j) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(a[size_t(r * K + k)]) * w[size_t(k * n + n0 + j)]);
      const double e = ce[size_t(r * ncols + j)], h = ch[size_t(r * ncols + j)];
      if (!(std::fabs(e - h) <= 1e-5 * mag + 1e-30))
        return std::string("the ") + bf16_dot_kernel_name(native) + " kernel differs from its emulation at row " +
               std::to_string(r) + ", column " + std::to_string(n0 + j) + " (" + std::to_string(h) + " vs " +
               std::to_string(e) + "): not used";
    }
  return "";
}

struct Choice {
  Bf16DotKernel kernel;
  std::string status;
};

const Choice& choice() {
  static const Choice c = [] {
    const char* e = std::getenv("GASTRT_BF16_DOT");
    const std::string mode = e ? e : "auto";
    if (mode == "emulate") return Choice{Bf16DotKernel::Emulated, ""};
    if (mode == "emulate-amx") return Choice{Bf16DotKernel::AmxEmulated, ""};
    if (mode == "off") return Choice{Bf16DotKernel::None, ""};
    GASTRT_CHECK(mode == "auto",
                 "GASTRT_BF16_DOT must be auto, off, emulate or emulate-amx, got '" << mode << "'");
    if (!cpu_has_avx512bf16()) return Choice{Bf16DotKernel::None, ""};
    // the vdpbf16ps kernel first: the AMX kernel's few-row products run on it
    std::string why = check_kernel(Bf16DotKernel::Avx512Bf16, Bf16DotKernel::Emulated, 7);
    if (!why.empty()) return Choice{Bf16DotKernel::None, why};
    if (!cpu_has_amx_bf16()) return Choice{Bf16DotKernel::Avx512Bf16, amx_support().why};
    why = check_kernel(Bf16DotKernel::Amx, Bf16DotKernel::AmxEmulated, 45);
    return why.empty() ? Choice{Bf16DotKernel::Amx, ""} : Choice{Bf16DotKernel::Avx512Bf16, why};
  }();
  return c;
}

}  // namespace

Bf16DotKernel bf16_dot_kernel() { return choice().kernel; }
const std::string& bf16_dot_status() {
  return choice().status.empty() ? amx_support().why : choice().status;
}

}  // namespace cpu
}  // namespace gastrt
