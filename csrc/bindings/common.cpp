// Array helpers and parsers shared by the binding files (declared in bindings/common.h).
#include "bindings/common.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/thread_pool.h"

namespace gastrt {
namespace bindings {

FArray as_f32(const py::handle& h, const char* what) {
  FArray a = FArray::ensure(h);  // null (error cleared) when h cannot become a float array
  if (!a) throw py::type_error(std::string(what) + ": expected a float array");
  // A float32 buffer at an address that is not a multiple of 4 (a view into a byte buffer) is
  // C-contiguous for NumPy but undefined behaviour for every float load in C++: copy it.
  if (reinterpret_cast<uintptr_t>(a.data()) % alignof(float) != 0) {
    FArray c(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
    std::memcpy(c.mutable_data(), a.data(), size_t(a.size()) * sizeof(float));
    return c;
  }
  return a;
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

cpu::ArrayView array_view(const FArray& a) { return cpu::ArrayView{a.data(), shape_of(a)}; }

void expect_shape(const py::array& a, const std::vector<int64_t>& want, const std::string& what) {
  if (shape_of(a) != want)
    throw py::value_error(what + ": expected shape " + shape_str(want) + ", got " +
                          shape_str(shape_of(a)));
}

py::array_t<float> output_array(const py::object& out, const std::vector<int64_t>& shape,
                                const char* what) {
  if (out.is_none()) return py::array_t<float>(shape);
  if (!py::isinstance<py::array>(out))
    throw py::type_error(std::string(what) + ": out must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(out);
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) || !a.writeable() ||
      reinterpret_cast<uintptr_t>(a.data()) % alignof(float) != 0)
    throw py::value_error(std::string(what) +
                          ": out must be a writeable, aligned, C-contiguous float32 array");
  expect_shape(a, shape, std::string(what) + " out");
  return py::reinterpret_borrow<py::array_t<float>>(out);
}

int resolve_threads(int threads) { return threads > 0 ? threads : available_cpus(); }

DType parse_precision(const std::string& s, const char* arg) {
  if (s == "fp32") return DType::F32;
  if (s == "fp16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  throw py::value_error(std::string(arg) + ": expected 'fp32', 'fp16' or 'bf16', got '" + s + "'");
}

cpu::Mode parse_mode(const std::string& s) {
  if (s == "window") return cpu::Mode::Window;
  if (s == "sequence") return cpu::Mode::Sequence;
  throw py::value_error("unknown mode '" + s + "': expected 'window' or 'sequence'");
}

}  // namespace bindings
}  // namespace gastrt
