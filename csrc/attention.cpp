// Which scaled-dot-product-attention backends libtorch may pick (at::globalContext's switches, what
// torch.backends.cuda.enable_cudnn_sdp and friends set), for tch, which binds none of them. cuDNN's
// attention builds an execution plan for every new batch shape, which length-grouped batches (a new
// padded length nearly every step) pay again and again; without it libtorch takes flash or
// memory-efficient attention, which have no per-shape plan.
#include <ATen/Context.h>

extern "C" {

void condenser_sdp_use_cudnn(int enabled) { at::globalContext().setSDPUseCuDNN(enabled != 0); }

int condenser_sdp_cudnn_enabled() { return at::globalContext().userEnabledCuDNNSDP() ? 1 : 0; }

}  // extern "C"

// Packed sequences (`run.unpad`) through FlashAttention's variable-length kernels: q, k, v are
// (total_tokens, heads, head_dim) bf16/fp16 CUDA tensors, `cu_seqlens` (batch + 1) int32 the sequence
// boundaries. tch binds no `*_forward` op, so the forward and backward kernels are tied into one
// autograd node here; the backward reuses the forward's RNG state, so dropout is the forward's, and a
// forward replayed under the same generator seed (the gradient cache's pass 2) draws the same masks.
// NOT YET RUN ON A GPU (issue 27's GPU part): the CPU never takes this path.
#include <ATen/ops/_flash_attention_backward.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct VarlenFlash : public torch::autograd::Function<VarlenFlash> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& cu_seqlens, int64_t max_len,
                            double dropout) {
    auto [out, logsumexp, rng_state, unused, debug_mask] = at::_flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, dropout, /*is_causal=*/false,
        /*return_debug_mask=*/false);
    ctx->save_for_backward({q, k, v, out, logsumexp, cu_seqlens, rng_state, unused});
    ctx->saved_data["max_len"] = max_len;
    ctx->saved_data["dropout"] = dropout;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const int64_t max_len = ctx->saved_data["max_len"].toInt();
    const double dropout = ctx->saved_data["dropout"].toDouble();
    auto [dq, dk, dv] = at::_flash_attention_backward(
        grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[5], max_len, max_len, dropout,
        /*is_causal=*/false, s[6], s[7]);
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Returns NULL on success (the attention output in *out, a new tch handle), else an error message to
// free with condenser_free_error.
char* condenser_flash_varlen(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                             const at::Tensor* cu_seqlens, int64_t max_len, double dropout,
                             at::Tensor** out) {
  try {
    *out = new at::Tensor(VarlenFlash::apply(*q, *k, *v, *cu_seqlens, max_len, dropout));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
