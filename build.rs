//! Bakes libtorch's library folder into the binary's run path, so `condenser` runs without
//! LD_LIBRARY_PATH on the machine that built it (the GPU recipe sets LD_LIBRARY_PATH instead).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = PathBuf::from(libtorch).join("lib");
        // Keep the stable symlink path (not its target) so a re-created venv needs no rebuild.
        let lib = if lib.is_absolute() {
            lib
        } else {
            std::env::current_dir().unwrap().join(lib)
        };
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
