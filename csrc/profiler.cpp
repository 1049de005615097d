// libtorch's Kineto profiler (what torch.profiler drives) for `condenser bench train --profile`: CPU ops
// and, on CUDA, every kernel with its device time, saved as a Chrome trace that
// pipelines/trace_summary.py reads (the same summary as for the PyTorch reference's trace).
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>

namespace {
torch::profiler::impl::ProfilerConfig config() {
  return torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::KINETO);
}
std::set<torch::profiler::impl::ActivityType> activities(int cuda) {
  std::set<torch::profiler::impl::ActivityType> a{torch::profiler::impl::ActivityType::CPU};
  if (cuda) a.insert(torch::profiler::impl::ActivityType::CUDA);
  return a;
}
}  // namespace

extern "C" {

// Returns NULL on success, else an error message to free with condenser_free_error.
char* condenser_profiler_start(int cuda) {
  try {
    torch::autograd::profiler::prepareProfiler(config(), activities(cuda));
    torch::autograd::profiler::enableProfiler(config(), activities(cuda));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

char* condenser_profiler_stop(const char* path) {
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    if (!result) return strdup("the profiler returned no result");
    result->save(path);
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
