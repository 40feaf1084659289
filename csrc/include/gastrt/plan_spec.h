// A plan (python/gastrt/plan.py, Plan.to_json()) and its weights as plain C++ values, and their
// validation into the executor's PlanSpec (csrc/cpu/plan_spec.cpp). The bindings only convert
// Python objects into these; every check, weight look-up and op spec is made here.
// Problems with the plan or its weights throw gastrt::InvalidArgument (-> ValueError).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gastrt/cpu_ops.h"
#include "gastrt/executor.h"

namespace gastrt {
namespace cpu {

// A caller-owned C-contiguous fp32 array; only read while a spec is built (weights are copied).
// "(2, 3)" / "(4,)": shapes in error messages, as NumPy prints them.
std::string shape_str(const std::vector<int64_t>& s);
// plan.py's act names -> Act; anything else is an InvalidArgument (-> ValueError).
Act parse_act(const std::string& s);

struct ArrayView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
  int64_t size() const;
};
using ArrayMap = std::map<std::string, ArrayView>;

// One op attribute. plan.py's attrs are ints (k, dilation, heads ...), strings (act) and lists
// of int lists (rie groups, output_assemble sources); anything else is Other.
struct AttrValue {
  enum class Type { Int, Str, IntLists, Other };
  Type type = Type::Other;
  int64_t i = 0;
  std::string s;
  std::vector<std::vector<int64_t>> lists;
};

struct OpDesc {
  std::string kind;
  std::vector<std::string> inputs, outputs;    // value names ("input" is the plan input)
  std::map<std::string, AttrValue> attrs;
  std::map<std::string, std::string> weights;  // role -> weight name
};

struct PlanDesc {
  std::string name = "plan";
  std::vector<OpDesc> ops;
  int32_t in_joints = 0, out_joints = 0, in_features = 2, receptive_field = 1;
  std::vector<std::string> modes;
};

// Checks the plan (every value written once and before it is read, known op kinds, weights
// present with the shapes their op needs) and resolves it into the executor's PlanSpec.
// weights: weight name -> array (names the plan does not use are ignored).
PlanSpec build_plan_spec(const PlanDesc& plan, const ArrayMap& weights);

// A gast_block's weights by plan.py role (loc_w [c, 4c] ... cat_b [2c]), shape-checked and
// prepared for gast_block_f32. `what` prefixes the error messages.
std::shared_ptr<GastBlockWeights> prepare_gast_block(const ArrayMap& roles, int heads,
                                                     int head_channels, const std::string& what);

}  // namespace cpu
}  // namespace gastrt
