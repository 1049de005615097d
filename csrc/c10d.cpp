// PyTorch's c10d for tch, which binds none of it: a TCPStore (behind a PrefixStore), a Gloo backend, and
// four collectives over any `c10d::Backend` (Gloo here; NCCL from csrc/c10d_nccl.cpp plugs into the same
// calls). Tensors come as tch handles (`at::Tensor*`); every entry returns NULL or a malloc'd message
// (freed with condenser_free_error), never lets an exception escape.
#include "c10d.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <future>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

// The wheel's libtorch_cpu allocates 0x1e8 bytes for a ProcessGroupGloo: a different size here means our
// gloo headers (third_party/gloo) or flags disagree with the ones the wheel was built with.
static_assert(sizeof(c10d::ProcessGroupGloo) == 488, "ProcessGroupGloo layout differs from the wheel's");
#ifndef USE_C10D_GLOO
#error "build.rs must define USE_C10D_GLOO, or ProcessGroupGloo.hpp declares nothing"
#endif

namespace {

// The caller adds rank, world size and store; this names what failed inside c10d.
std::string describe(const CondenserBackend* b, const char* op) {
  return b->backend->getBackendName() + " " + op;
}

// Gloo's own per-operation timeout (the context's) names the peer that failed; the host-side wait gets a
// little longer so that message wins the race, and still bounds a backend that never reports.
constexpr std::chrono::milliseconds kWaitGrace{2000};

void wait_for(const CondenserBackend* b, const c10::intrusive_ptr<c10d::Work>& work) {
  if (b->host_wait) {
    work->wait(b->timeout + kWaitGrace);
  } else {
    // NCCL: wait() only makes the current CUDA stream wait; its watchdog enforces the timeout.
    work->wait();
  }
}

}  // namespace

extern "C" {

// A TCPStore at host:port, the server when `is_server` (rank 0 when launched by hand), else a client (every
// rank under torchrun, whose agent already serves the store), wrapped in a PrefixStore. No worker count is
// given: the group's rendezvous over the store is what waits for the peers (with the same timeout), and
// TCPStore's own count lives outside the prefix, where an elastic restart would find stale values.
char* condenser_c10d_store_new(const char* host, uint16_t port, bool is_server, int64_t timeout_ms,
                               const char* prefix, CondenserStore** out) {
  *out = nullptr;
  try {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server;
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
    *out = new CondenserStore{store};
    return nullptr;
  }
  CONDENSER_C10D_CATCH("TCPStore")
}

// The port actually bound (differs from the one asked for when that was 0).
uint16_t condenser_c10d_store_port(const CondenserStore* s) {
  auto* prefix = dynamic_cast<c10d::PrefixStore*>(s->store.get());
  auto* tcp = prefix ? dynamic_cast<c10d::TCPStore*>(prefix->getUnderlyingStore().get()) : nullptr;
  return tcp ? tcp->getPort() : 0;
}

void condenser_c10d_store_free(CondenserStore* s) { delete s; }

// A Gloo group over the store. `ifnames` (GLOO_SOCKET_IFNAME, comma-separated, may be NULL or empty) wins
// over `hostname` (the address Gloo binds to and advertises). Blocks until every rank joined, or fails
// once `timeout_ms` passed; the same timeout bounds every collective.
char* condenser_c10d_gloo_new(const CondenserStore* s, int rank, int size, int64_t timeout_ms,
                              const char* hostname, const char* ifnames, CondenserBackend** out) {
  *out = nullptr;
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string names = ifnames ? ifnames : "";
    if (!names.empty()) {
      std::stringstream list(names);
      std::string name;
      while (std::getline(list, name, ',')) {
        if (!name.empty()) {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
        }
      }
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(s->store, rank, size, opts);
    *out = new CondenserBackend{pg, timeout, rank, size, /*host_wait=*/true};
    return nullptr;
  }
  CONDENSER_C10D_CATCH("ProcessGroupGloo")
}

char* condenser_c10d_all_reduce_sum(const CondenserBackend* b, const at::Tensor* t) {
  try {
    std::vector<at::Tensor> tensors{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = b->timeout;
    wait_for(b, b->backend->allreduce(tensors, opts));
    return nullptr;
  }
  CONDENSER_C10D_CATCH(describe(b, "all_reduce"))
}

// `output` is [size * n, ...], filled with every rank's `input` ([n, ...]) in rank order.
char* condenser_c10d_all_gather(const CondenserBackend* b, const at::Tensor* output,
                                const at::Tensor* input) {
  try {
    at::Tensor out = *output;
    at::Tensor in = *input;
    c10d::AllgatherOptions opts;
    opts.timeout = b->timeout;
    wait_for(b, b->backend->_allgather_base(out, in, opts));
    return nullptr;
  }
  CONDENSER_C10D_CATCH(describe(b, "all_gather"))
}

char* condenser_c10d_broadcast(const CondenserBackend* b, const at::Tensor* t, int root) {
  try {
    std::vector<at::Tensor> tensors{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = b->timeout;
    wait_for(b, b->backend->broadcast(tensors, opts));
    return nullptr;
  }
  CONDENSER_C10D_CATCH(describe(b, "broadcast"))
}

char* condenser_c10d_barrier(const CondenserBackend* b) {
  try {
    c10d::BarrierOptions opts;
    opts.timeout = b->timeout;
    auto work = b->backend->barrier(opts);
    // A barrier is a host-side promise even on NCCL (its Work blocks the host in wait()).
    work->wait(b->timeout + kWaitGrace);
    return nullptr;
  }
  CONDENSER_C10D_CATCH(describe(b, "barrier"))
}

// Shuts the backend down and frees it on a helper thread, waiting at most `wait_ms`: a peer stuck in a
// collective can hold Gloo's worker threads (which the destructor joins) until its own timeout, and
// NCCL's shutdown can block on a hung communicator. Past `wait_ms` the thread is left to finish on its
// own and a message says so; the caller is never held longer.
char* condenser_c10d_backend_free(CondenserBackend* b, int64_t wait_ms) {
  if (b == nullptr) {
    return nullptr;
  }
  try {
    auto done = std::make_shared<std::promise<std::string>>();
    auto finished = done->get_future();
    std::thread([b, done]() {
      std::string error;
      try {
        b->backend->shutdown();
      } catch (const std::exception& e) {
        error = e.what();
      }
      delete b;
      done->set_value(error);
    }).detach();
    if (finished.wait_for(std::chrono::milliseconds(wait_ms)) == std::future_status::timeout) {
      std::ostringstream s;
      s << "process group shutdown still running after " << wait_ms << " ms; left to finish in the background";
      return condenser_error(s.str());
    }
    std::string error = finished.get();
    return error.empty() ? nullptr : condenser_error("process group shutdown: " + error);
  }
  CONDENSER_C10D_CATCH("process group shutdown")
}

}  // extern "C"
