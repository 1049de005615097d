// c10d's NCCL backend for CUDA runs, in its own shared object (libcondenser_nccl.so, built by build.rs)
// that src/dist/c10d.rs dlopens only when asked for NCCL: linking it pulls in libtorch_cuda.so and NCCL,
// which CPU-only runs must not need. It only constructs the backend; the collectives of csrc/c10d.cpp
// run it through c10d::Backend's virtual calls.
#include "c10d.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#ifndef USE_C10D_NCCL
#error "build.rs must define USE_C10D_NCCL, or ProcessGroupNCCL.hpp declares nothing"
#endif

// Sizes in the wheel's libtorch_cuda.so with NCCL 2.28.9's nccl.h (the layout follows nccl.h's feature
// macros): a different nccl.h or flag here would construct a different object than the library expects.
static_assert(sizeof(c10d::ProcessGroupNCCL) == 1112, "ProcessGroupNCCL layout differs from the wheel's");
static_assert(sizeof(c10d::ProcessGroupNCCL::Options) == 248, "ProcessGroupNCCL::Options layout differs");

extern "C" {

// `store` is a CondenserStore from condenser_c10d_store_new. Communicators are created lazily, on the
// device of the first collective's tensors (PyTorch's default without a bound device id). On a machine
// without a GPU this fails cleanly ("no GPUs found").
__attribute__((visibility("default"))) char* condenser_c10d_nccl_new(const CondenserStore* store, int rank,
                                                                     int size, int64_t timeout_ms,
                                                                     CondenserBackend** out) {
  *out = nullptr;
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    // The watchdog's timeout: a collective stuck longer makes NCCL tear the process down.
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, size, opts);
    *out = new CondenserBackend{pg, timeout, rank, size, /*host_wait=*/false};
    return nullptr;
  }
  CONDENSER_C10D_CATCH("ProcessGroupNCCL")
}

}  // extern "C"
