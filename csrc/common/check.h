// Error checking shared by the CPU runtime and the CUDA kernels.
// Errors throw gastrt::Error or a subclass; the bindings translate them into typed Python
// exceptions (gastrt.errors.NativeError, OutOfMemoryError), so callers never match message
// text. Nothing in the library ever calls exit()/abort(): it runs inside a user's process.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace gastrt {

// Base of every error the native library throws (-> gastrt.errors.NativeError).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Device or pinned-host memory exhausted (-> gastrt.errors.OutOfMemoryError). The message still
// says "out of memory" for people; code tests the type.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// A caller-supplied value (plan, weights, shapes) that cannot be used: the same category as the
// bindings' own argument checks (-> ValueError, like them). The message is exactly the text given.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

[[noreturn]] inline void throw_error(const char* file, int line, const char* expr,
                                     const std::string& what) {
  std::ostringstream os;
  os << "gastrt: " << what << " [" << expr << "] at " << file << ":" << line;
  throw Error(os.str());
}

// A failed CUDA runtime call; `code` is its cudaError_t (callers that must tell errors apart,
// e.g. "no kernel image for this GPU", read it instead of the sticky-less last error).
class CudaError : public Error {
 public:
  CudaError(const std::string& what, int code) : Error(what), code(code) {}
  int code;
};

[[noreturn]] inline void throw_cuda_error(const char* file, int line, const char* expr, int code,
                                          const char* name, const char* text) {
  std::ostringstream os;
  os << "gastrt: CUDA error " << name << ": " << text << " [" << expr << "] at " << file << ":" << line;
  throw CudaError(os.str(), code);
}

}  // namespace gastrt

// GASTRT_CHECK(cond, msg): argument / invariant validation; msg may use << chains.
#define GASTRT_CHECK(cond, msg)                                                     \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::ostringstream gastrt_check_os_;                                          \
      gastrt_check_os_ << msg;                                                      \
      ::gastrt::throw_error(__FILE__, __LINE__, #cond, gastrt_check_os_.str());     \
    }                                                                               \
  } while (0)

// GASTRT_CHECK_CUDA(expr): expr is a cudaError_t expression (runtime API call). Only usable in
// TUs that include <cuda_runtime.h> before this header (the macro names CUDA symbols lazily, so
// including check.h from plain C++ is fine as long as the macro is not expanded there). The
// runtime's last-error slot is cleared before throwing: a failed call also records its error
// there, and the next launch check would otherwise report it again (the engine stays usable).
#define GASTRT_CHECK_CUDA(expr)                                                          \
  do {                                                                                   \
    cudaError_t gastrt_cuda_err_ = (expr);                                               \
    if (gastrt_cuda_err_ != cudaSuccess) {                                               \
      (void)cudaGetLastError();                                                          \
      ::gastrt::throw_cuda_error(__FILE__, __LINE__, #expr, static_cast<int>(gastrt_cuda_err_), \
                                 cudaGetErrorName(gastrt_cuda_err_),                     \
                                 cudaGetErrorString(gastrt_cuda_err_));                  \
    }                                                                                    \
  } while (0)

// GASTRT_CHECK_CUDA_LAST(): check for an asynchronous launch error right after a kernel launch.
#define GASTRT_CHECK_CUDA_LAST() GASTRT_CHECK_CUDA(cudaGetLastError())
