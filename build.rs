//! Bakes libtorch's library folder into the binary's run path, so `condenser` runs without
//! LD_LIBRARY_PATH on the machine that built it (the GPU recipe sets LD_LIBRARY_PATH instead), and
//! compiles the csrc/ shims (libtorch's fused AdamW, its Kineto profiler, its attention-backend
//! switches and its c10d distributed layer, which tch does not bind) against the same libtorch headers
//! torch-sys uses. c10d's NCCL backend goes into its own shared object, libcondenser_nccl.so, which the
//! crate dlopens only for CUDA runs (its path reaches the crate as CONDENSER_NCCL_LIB).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/fused_adamw.cpp");
    println!("cargo:rerun-if-changed=csrc/profiler.cpp");
    println!("cargo:rerun-if-changed=csrc/attention.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d.h");
    println!("cargo:rerun-if-changed=csrc/c10d_nccl.cpp");
    println!("cargo:rerun-if-changed=third_party/gloo");
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").expect(
        "LIBTORCH is not set: .cargo/config.toml points it at .libtorch, which `make setup` creates",
    ));
    // Keep the stable symlink path (not its target) so a re-created venv needs no rebuild.
    let libtorch = if libtorch.is_absolute() {
        libtorch
    } else {
        std::env::current_dir().unwrap().join(libtorch)
    };
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,{}",
        libtorch.join("lib").display()
    );
    // The PyPI wheels use the C++11 ABI, as torch-sys assumes by default.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/fused_adamw.cpp")
        .file("csrc/profiler.cpp")
        .file("csrc/attention.cpp")
        .file("csrc/c10d.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // ProcessGroupGloo.hpp declares nothing without it; its <gloo/...> includes come from
        // third_party/gloo (the wheel ships none).
        .define("USE_C10D_GLOO", None)
        .include("third_party/gloo")
        .warnings(false)
        .compile("condenser_csrc");
    build_nccl_shim(&libtorch, &abi);
}

/// csrc/c10d_nccl.cpp -> $OUT_DIR/libcondenser_nccl.so, linked against the wheel's torch_cuda, torch_cpu
/// and c10 (found at run time through the same run path as the binary's). One translation unit, about
/// 20 s. The wheel lacks the CUDA headers ProcessGroupNCCL.hpp includes; setup.sh installs the pinned
/// PyPI packages that hold them beside torch, in site-packages/nvidia/.
fn build_nccl_shim(libtorch: &Path, abi: &str) {
    let nvidia = libtorch.join("../nvidia");
    let cuda_include = nvidia.join("cu13/include");
    let nccl_include = nvidia.join("nccl/include");
    for (header, package) in [
        (
            cuda_include.join("cuda_runtime_api.h"),
            "nvidia-cuda-runtime (a torch dependency)",
        ),
        (
            cuda_include.join("crt/host_config.h"),
            "nvidia-cuda-crt==13.0.88",
        ),
        (cuda_include.join("nv/target"), "nvidia-cuda-cccl==13.0.85"),
        (
            nccl_include.join("nccl.h"),
            "nvidia-nccl-cu13==2.28.9 (a torch dependency)",
        ),
    ] {
        if !header.exists() {
            panic!(
                "{} is missing: csrc/c10d_nccl.cpp needs the CUDA and NCCL headers of {package}; \
                 run pipelines/setup.sh (it pip-installs them into .venv beside torch)",
                header.display()
            );
        }
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .file("csrc/c10d_nccl.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .include(&cuda_include)
        .include(&nccl_include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .define("USE_C10D_NCCL", None)
        .define("USE_CUDA", None)
        // Only the constructor is exported (it says so itself).
        .flag("-fvisibility=hidden")
        .warnings(false);
    let objects = build.compile_intermediates();
    let lib = out_dir.join("libcondenser_nccl.so");
    let lib_dir = libtorch.join("lib");
    let status = build
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(&lib)
        .args(&objects)
        .arg(format!("-L{}", lib_dir.display()))
        // Every symbol must resolve now, not when a GPU run dlopens the library.
        .arg("-Wl,--no-undefined")
        .args(["-ltorch_cuda", "-ltorch_cpu", "-lc10"])
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("running the C++ compiler to link libcondenser_nccl.so");
    assert!(status.success(), "linking {} failed", lib.display());
    println!("cargo:rustc-env=CONDENSER_NCCL_LIB={}", lib.display());
}
