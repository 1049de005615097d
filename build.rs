//! Bakes libtorch's library folder into the binary's run path, so `condenser` runs without
//! LD_LIBRARY_PATH on the machine that built it (the GPU recipe sets LD_LIBRARY_PATH instead), and
//! compiles the csrc/ shims (libtorch's fused AdamW, its Kineto profiler, its attention-backend
//! switches and its c10d distributed layer, which tch does not bind) against the same libtorch headers
//! torch-sys uses.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/fused_adamw.cpp");
    println!("cargo:rerun-if-changed=csrc/profiler.cpp");
    println!("cargo:rerun-if-changed=csrc/attention.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d.h");
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
}
