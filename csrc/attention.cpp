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
