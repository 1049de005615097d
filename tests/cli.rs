//! The command line as a user meets it: `env`, CUDA discovery without a GPU, stages not built yet.

use std::process::{Command, Output};

fn condenser(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(args)
        .output()
        .expect("the condenser binary runs")
}

/// No NVIDIA device node: this machine has no GPU (CI never has one).
fn no_gpu_here() -> bool {
    !std::path::Path::new("/dev/nvidia0").exists()
}

#[test]
fn env_reports_libtorch_and_cpu_without_gpu() {
    let out = condenser(&["env", "--json"]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let version = report["libtorch_version"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("2.11.0"),
        "libtorch version {version:?}"
    );
    assert!(report["torch_threads"].as_i64().unwrap() >= 1);
    if no_gpu_here() {
        assert_eq!(report["cuda_available"], false);
        assert_eq!(report["selected_device"], "cpu");
        assert_eq!(report["cuda_devices"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn env_table_names_cpu() {
    let out = condenser(&["env", "--device", "cpu"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("device           cpu"), "{text}");
    assert!(text.contains("libtorch         2.11.0"), "{text}");
}

#[test]
fn device_cuda_without_gpu_is_a_clear_error() {
    if !no_gpu_here() {
        return; // On a GPU machine `--device cuda` is expected to work; nothing to check here.
    }
    let out = condenser(&["env", "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CUDA is not available"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn help_lists_every_stage() {
    let out = condenser(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for stage in [
        "env",
        "prepare",
        "inspect",
        "train",
        "encode",
        "eval",
        "eval-spans",
        "curves",
        "bench",
    ] {
        assert!(text.contains(stage), "{stage} missing from --help");
    }
}
