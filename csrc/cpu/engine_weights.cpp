// The engine's derived forms of its conv and GAST-block weights, each made on first use: the
// small-M kernel's panels (fp32 or 16-bit), a bf16 engine's bf16 pairs for the bf16 dot-product
// GEMM (convs and GAST blocks), and the Winograd-transformed weights of sequence-mode width-3
// convs.
#include <mutex>

#include "common/check.h"
#include "gastrt/cpu_ops.h"
#include "gastrt/executor.h"

namespace gastrt {
namespace cpu {

const float* Engine::wino_weights(size_t op_index) {
  WinoWeights* ww = wino_[op_index].get();
  GASTRT_CHECK(ww != nullptr, "no Winograd weights for op " << op_index);
  const OpSpec& op = plan_.ops[op_index];
  std::call_once(ww->once, [&] { ww->u = conv_winograd_weights(op.w.data(), op.ci, op.co); });
  return ww->u.data();
}

const uint32_t* Engine::wino_bf16_weights(size_t op_index) {
  WinoWeights* ww = wino_[op_index].get();
  GASTRT_CHECK(ww != nullptr, "no Winograd weights for op " << op_index);
  const OpSpec& op = plan_.ops[op_index];
  std::call_once(ww->once, [&] { ww->u_pairs = conv_winograd_bf16_weights(op.w.data(), op.ci, op.co); });
  return ww->u_pairs.data();
}

Engine::PanelBytes Engine::panel_bytes() const {
  PanelBytes b;
  for (const auto& pw : panels_)
    if (pw) {
      b.f32 += pw->p.size() * sizeof(float);
      b.b16 += pw->p16.size() * sizeof(uint16_t);
      b.bf16_pairs += (pw->pairs.size() + pw->gast.w1.size() + pw->gast.loc_cat.size() +
                       pw->gast.glb_cat.size() + pw->gast.cat.size()) * sizeof(uint32_t);
    }
  return b;
}

const GastBf16Pairs* Engine::gast_pairs(size_t op_index) {
  PanelWeights* pw = panels_[op_index].get();
  if (!pw || bf16_dot_ == Bf16DotKernel::None) return nullptr;
  std::call_once(pw->once, [&] { pw->gast = gast_block_bf16_pairs(*plan_.ops[op_index].gast, bf16_dot_); });
  return &pw->gast;
}

void Engine::set_conv_weights(size_t op_index, ConvParams& p) {
  PanelWeights* pw = panels_[op_index].get();
  if (!pw) return;
  const OpSpec& op = plan_.ops[op_index];
  if (bf16_dot_ != Bf16DotKernel::None) {  // every row count
    std::call_once(pw->once, [&] { pw->pairs = pack_bf16_pairs(op.w.data(), op.k, op.ci, op.co); });
    p.w_bf16_pairs = pw->pairs.data();
    p.bf16_dot = bf16_dot_;
    return;
  }
  if (!small_panels_enabled() || !conv_uses_small_gemm(p)) return;
  const int64_t K = int64_t(op.k) * op.ci;
  std::call_once(pw->once, [&] {
    if (panel_dtype_ == DType::F32) pw->p = pack_small_panels(op.w.data(), K, op.co);
    else pw->p16 = pack_small_panels16(op.w.data(), K, op.co, panel_dtype_);
  });
  if (panel_dtype_ == DType::F32) {
    p.w_panels = pw->p.data();
  } else {
    p.w_panels16 = pw->p16.data();
    p.panels16_dtype = panel_dtype_;
  }
}

}  // namespace cpu
}  // namespace gastrt
