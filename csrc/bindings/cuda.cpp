// gastrt._native: the CUDA program layout (every build: the lowering and its tests encode by
// it) and, in a CUDA build, the CUDA executor's functions and CudaEngine (csrc/cuda/cuda_ops.h).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cuda/gemm_tactic.h"
#include "cuda/program_records.h"

namespace gastrt {
namespace bindings {

void bind_cuda(py::module_& m) {
  namespace gc = gastrt::cuda;
  // ---- program bytecode (csrc/cuda/program_records.h): host-only, in every build ----
  m.def("cuda_program_layout", [] {
    py::dict out;
    for (const gc::RecordLayout& r : gc::kRecordLayouts) {
      py::dict fields;  // in word order
      for (int i = 0; i < r.nfield_layouts; ++i)
        fields[r.fields[i].name] = py::make_tuple(r.fields[i].offset, r.fields[i].count);
      py::dict d;
      d["opcode"] = r.opcode;
      d["nfields"] = r.nfields;
      d["grouped"] = r.grouped;
      d["fields"] = fields;
      out[r.name] = d;
    }
    return out;
  }, "The CUDA program records: {name: {opcode, nfields, grouped, fields: {field: (offset, count)}}} "
     "(csrc/cuda/program_records.h; a grouped record is [count, count x fields]).");
  m.def("cuda_program_constants", [] {
    py::dict d;
    d["ref_none"] = gc::kRefNone;
    d["ref_input"] = gc::kRefInput;
    d["ref_output"] = gc::kRefOutput;
    d["stream_table_cols"] = gc::kStreamTableCols;
    d["max_conv_group"] = gc::kMaxConvGroup;
    return d;
  }, "The CUDA program's buffer references and limits (csrc/cuda/program_records.h).");
  m.def("cuda_lt_conv_calls", [](const py::dict& fields, int64_t dtype) {
    // fields: a conv record by field name (every field of ConvRecord)
    gc::ConvRecord r{};
    int64_t* words = reinterpret_cast<int64_t*>(&r);
    for (const gc::FieldLayout& f : gc::kConvRecordFields) {
      if (!fields.contains(f.name)) throw py::value_error(std::string("cuda_lt_conv_calls: missing field ") + f.name);
      words[f.offset] = fields[f.name].cast<int64_t>();
    }
    gc::LtGemmCall calls[gc::kLtMaxCalls];
    const char* why = nullptr;
    const int n = gc::lt_conv_calls(r, dtype, calls, &why);
    py::list out;
    for (int i = 0; i < n; ++i) {
      const gc::LtGemmCall& c = calls[i];
      py::dict d;
      d["m"] = c.m;
      d["n"] = c.n;
      d["k"] = c.k;
      d["a_offset"] = c.a_offset;
      d["lda"] = c.lda;
      d["b_offset"] = c.b_offset;
      d["ldb"] = c.ldb;
      d["b_batch_stride"] = c.b_batch_stride;
      d["ldd"] = c.ldd;
      d["d_batch_stride"] = c.d_batch_stride;
      d["batch"] = c.batch;
      d["accumulate"] = c.accumulate;
      d["epilogue"] = c.epilogue;
      out.append(d);
    }
    return py::make_tuple(out, why != nullptr ? py::object(py::str(why)) : py::object(py::none()));
  }, py::arg("fields"), py::arg("dtype") = 0,
     "The cuBLASLt matmuls of one conv record of an engine of dtype (0 fp32, 1 fp16, 2 bf16; "
     "csrc/cuda/gemm_tactic.h): ([call dicts], None), or "
     "([], why) when the custom kernel must run it.");

  // ---- CUDA executor (API: csrc/cuda/cuda_ops.h) ----
#ifdef GASTRT_HAVE_CUDA_OPS
  {
    using U8 = py::array_t<uint8_t, py::array::c_style>;
    using F32In = py::array_t<float, py::array::c_style | py::array::forcecast>;
    using F32Out = py::array_t<float, py::array::c_style>;
    using I64In = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

    m.def("cuda_device_name", &gc::device_name, py::arg("device"));
    m.def("cuda_cublaslt_load", &gc::cublaslt_load, py::arg("path") = std::string(),
          py::call_guard<py::gil_scoped_release>(),
          "Loads libcublasLt (a file path, or '' for the soname on the loader's path) once per process; "
          "'' when loaded, else why not.");
    m.def("cuda_cublaslt_status", &gc::cublaslt_status);
    m.def("cuda_cublaslt_built", &gc::cublaslt_built);
    m.def("cuda_runtime_version", &gc::runtime_version);
    m.def("cuda_malloc", [](int device, int64_t bytes) {
      py::gil_scoped_release nogil;
      return static_cast<uint64_t>(gc::device_malloc(device, bytes));
    }, py::arg("device"), py::arg("bytes"));
    m.def("cuda_free", [](int device, uint64_t ptr) {
      py::gil_scoped_release nogil;
      gc::device_free(device, static_cast<uintptr_t>(ptr));
    }, py::arg("device"), py::arg("ptr"));
    m.def("cuda_memcpy_htod", [](int device, uint64_t dst, U8 src) {
      const void* p = src.data();
      const int64_t n = static_cast<int64_t>(src.size());
      py::gil_scoped_release nogil;
      gc::memcpy_htod(device, static_cast<uintptr_t>(dst), p, n);
    }, py::arg("device"), py::arg("dst"), py::arg("src"));
    m.def("cuda_memcpy_dtoh", [](int device, U8 dst, uint64_t src) {
      void* p = dst.mutable_data();
      const int64_t n = static_cast<int64_t>(dst.size());
      py::gil_scoped_release nogil;
      gc::memcpy_dtoh(device, p, static_cast<uintptr_t>(src), n);
    }, py::arg("device"), py::arg("dst").noconvert(), py::arg("src"));

    py::class_<gc::Engine>(m, "CudaEngine",
                           "GPU executor (csrc/cuda/cuda_ops.h): weights, arena, programs, CUDA graphs.")
        .def(py::init([](int device, int dtype) {
               py::gil_scoped_release nogil;
               return std::make_unique<gc::Engine>(device, dtype);
             }),
             py::arg("device"), py::arg("dtype"))
        .def("device", &gc::Engine::device)
        .def("dtype", &gc::Engine::dtype)
        .def("device_name", &gc::Engine::device_name)
        .def("stream", [](const gc::Engine& e) { return static_cast<uint64_t>(e.stream()); })
        .def("synchronize", &gc::Engine::synchronize, py::call_guard<py::gil_scoped_release>())
        .def("add_weight", [](gc::Engine& e, F32In a, bool engine_dtype) {
               return e.add_weight(a.data(), static_cast<int64_t>(a.size()), engine_dtype);
             }, py::arg("data"), py::arg("engine_dtype"))
        .def("weight_count", &gc::Engine::weight_count)
        .def("create_program", [](gc::Engine& e, I64In code, int64_t arena_bytes, int64_t max_n,
                                  int64_t in_per_n, int64_t out_per_n) {
               const int64_t* p = code.data();
               const int64_t n = static_cast<int64_t>(code.size());
               py::gil_scoped_release nogil;
               return e.create_program(p, n, arena_bytes, max_n, in_per_n, out_per_n);
             }, py::arg("code"), py::arg("arena_bytes"), py::arg("max_n"), py::arg("in_per_n"),
             py::arg("out_per_n"))
        .def("destroy_program", &gc::Engine::destroy_program, py::arg("id"),
             py::call_guard<py::gil_scoped_release>())
        .def("describe_program", &gc::Engine::describe_program, py::arg("id"))
        .def("run_host", [](gc::Engine& e, int64_t id, F32In x, F32Out y, int64_t n, bool use_graph) {
               const float* xp = x.data();
               const int64_t xc = static_cast<int64_t>(x.size());
               float* yp = y.mutable_data();
               const int64_t yc = static_cast<int64_t>(y.size());
               py::gil_scoped_release nogil;
               e.run_host(id, xp, xc, yp, yc, n, use_graph);
             }, py::arg("id"), py::arg("x"), py::arg("y").noconvert(), py::arg("n"), py::arg("use_graph") = true)
        .def("run_device", [](gc::Engine& e, int64_t id, uint64_t x, uint64_t y, int64_t n, uint64_t ext_stream,
                              bool has_ext, bool use_graph) {
               py::gil_scoped_release nogil;
               e.run_device(id, static_cast<uintptr_t>(x), static_cast<uintptr_t>(y), n,
                            static_cast<uintptr_t>(ext_stream), has_ext, use_graph);
             }, py::arg("id"), py::arg("x"), py::arg("y"), py::arg("n"), py::arg("ext_stream"), py::arg("has_ext"),
             py::arg("use_graph") = true)
        .def("run_arena", &gc::Engine::run_arena, py::arg("id"), py::arg("use_graph") = false,
             py::call_guard<py::gil_scoped_release>())
        .def("time_program", &gc::Engine::time_program, py::arg("id"), py::arg("iters"), py::arg("warmup"),
             py::arg("use_graph") = true, py::call_guard<py::gil_scoped_release>())
        .def("reserve_arena", &gc::Engine::reserve_arena, py::arg("bytes"),
             py::call_guard<py::gil_scoped_release>())
        .def("arena_bytes", &gc::Engine::arena_bytes)
        .def("arena_write", [](gc::Engine& e, int64_t offset, U8 data) {
               const void* p = data.data();
               const int64_t n = static_cast<int64_t>(data.size());
               py::gil_scoped_release nogil;
               e.arena_write(offset, p, n);
             }, py::arg("offset"), py::arg("data"))
        .def("arena_read", [](gc::Engine& e, int64_t offset, U8 out) {
               void* p = out.mutable_data();
               const int64_t n = static_cast<int64_t>(out.size());
               py::gil_scoped_release nogil;
               e.arena_read(offset, p, n);
             }, py::arg("offset"), py::arg("out").noconvert())
        .def("arena_fill", &gc::Engine::arena_fill, py::arg("offset"), py::arg("bytes"), py::arg("byte_value"),
             py::call_guard<py::gil_scoped_release>())
        .def("gast_scratch_bytes", &gc::Engine::gast_scratch_bytes, py::arg("n"), py::arg("j"), py::arg("t"),
             py::arg("c"), py::arg("heads"), py::arg("gc"))
        .def("gast_fused", &gc::Engine::gast_fused, py::arg("j"), py::arg("c"), py::arg("heads"), py::arg("gc"))
        .def("set_option", &gc::Engine::set_option, py::arg("name"), py::arg("value"),
             py::call_guard<py::gil_scoped_release>())
        .def("get_option", &gc::Engine::get_option, py::arg("name"))
        .def("gemm_tactics", [](const gc::Engine& e) {
               std::vector<gc::GemmTacticReport> reps;
               {
                 py::gil_scoped_release nogil;  // the engine lock may be held by a running call
                 reps = e.gemm_tactics();
               }
               py::list out;
               for (const gc::GemmTacticReport& r : reps) {
                 py::dict d;
                 d["shape"] = r.shape;
                 d["chosen"] = r.chosen;
                 d["note"] = r.note;
                 d["custom_us"] = r.custom_us;
                 d["cublaslt_us"] = r.cublaslt_us;
                 d["custom_err"] = r.custom_err;
                 d["cublaslt_err"] = r.cublaslt_err;
                 out.append(d);
               }
               return out;
             }, "One dict per distinct conv problem: shape, chosen ('custom' | 'cublaslt'), note, "
                "custom_us / cublaslt_us (median device time, -1 not timed), custom_err / cublaslt_err "
                "(max error relative to a float64 reference, -1 not checked).");
  }
#endif
}

}  // namespace bindings
}  // namespace gastrt
