// Handles shared by csrc/c10d.cpp (store, Gloo, collectives; in the static lib) and csrc/c10d_nccl.cpp
// (the NCCL backend; a separate shared object). Both sides must agree on these layouts, hence one header.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

// A store as the caller sees it: a PrefixStore over the TCPStore.
struct CondenserStore {
  c10::intrusive_ptr<c10d::Store> store;
};

// A backend through its virtual collectives (Gloo or NCCL alike), with the timeout every wait uses.
struct CondenserBackend {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int rank;
  int size;
  // Gloo: wait() blocks the host until done or the timeout. NCCL: wait() only orders the current CUDA
  // stream after the collective (no host sync); NCCL's watchdog enforces the timeout.
  bool host_wait;
};

// The malloc'd message every entry point returns on failure (freed by condenser_free_error).
inline char* condenser_error(const std::string& what) { return strdup(what.c_str()); }

// c10::Error's what() carries a C++ backtrace; the message alone is what a user needs.
#define CONDENSER_C10D_CATCH(context)                                                          \
  catch (const c10::Error& e) {                                                                \
    return condenser_error(std::string(context) + ": " + e.what_without_backtrace());         \
  }                                                                                            \
  catch (const std::exception& e) {                                                            \
    return condenser_error(std::string(context) + ": " + e.what());                           \
  }                                                                                            \
  catch (...) {                                                                                \
    return condenser_error(std::string(context) + ": unknown C++ exception");                 \
  }
