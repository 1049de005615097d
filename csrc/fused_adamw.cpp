// libtorch's fused AdamW (`at::_fused_adamw_`, what torch.optim.AdamW(fused=True) calls) for tch, which
// has no binding for ops over tensor lists. One kernel reads each parameter, gradient and moment once
// (CPU and CUDA). `found_inf` (a float scalar on the parameters' device; 1 = skip) lets the device
// skip a non-finite step without a host sync. Tensors come as tch handles (`at::Tensor*`).
#include <ATen/ops/_fused_adamw.h>

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// Returns NULL on success, else an error message to free with condenser_free_error.
char* condenser_fused_adamw(const at::Tensor* param, const at::Tensor* grad, const at::Tensor* exp_avg,
                            const at::Tensor* exp_avg_sq, const at::Tensor* step, double lr,
                            double beta1, double beta2, double weight_decay, double eps,
                            const at::Tensor* found_inf) {
  try {
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, *found_inf);
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

void condenser_free_error(char* message) { free(message); }

}  // extern "C"
