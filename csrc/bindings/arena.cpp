// gastrt._native.ArenaAllocator: the first-fit arena planner of the CPU executor
// (common/arena.h), for the CUDA lowering's device arena.
#include "bindings/common.h"
#include "common/arena.h"

namespace gastrt {
namespace bindings {

void bind_arena(py::module_& m) {
  py::class_<ArenaAllocator>(m, "ArenaAllocator",
                             "First-fit arena offsets: sizes rounded up to `alignment` (at least one "
                             "unit), free blocks merged; `top` is the high-water mark.")
      .def(py::init<int64_t>(), py::arg("alignment"))
      .def_property_readonly("alignment", &ArenaAllocator::alignment)
      .def("alloc", &ArenaAllocator::alloc, py::arg("size"), "Offset of a new block of `size` units.")
      .def("release", &ArenaAllocator::release, py::arg("offset"), py::arg("size"),
           "Frees the block alloc(size) returned at `offset`.")
      .def_property_readonly("top", &ArenaAllocator::top)
      .def_property_readonly("free", &ArenaAllocator::free_blocks, "[(offset, size)] by offset.");
}

}  // namespace bindings
}  // namespace gastrt
