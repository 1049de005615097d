//! `condenser bench numerics` and `bench train --profile` on the CPU with the tiny shape: the checks run
//! and say what they should (the GPU run uses the same code at bert-base shape).

mod common;

use common::*;

/// `key=value` of a `check` line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from {line}"))
        .parse()
        .unwrap()
}

#[test]
fn numerics_checks_hold_on_the_cpu() {
    let o = run(&[
        "bench",
        "numerics",
        "--tiny",
        "--device",
        "cpu",
        "--steps",
        "4",
        "--batch",
        "4",
        "--seq",
        "32",
        "--gc-chunk",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("check ")).collect();
    assert_eq!(lines.len(), 5, "{out}");
    // The CPU is deterministic: fp32 twice gives the same losses and weights.
    assert_eq!(
        field(lines[0], "max_abs_dloss_fp32_rerun"),
        0.0,
        "{}",
        lines[0]
    );
    assert_eq!(
        field(lines[0], "weights_rel_dist_fp32_rerun"),
        0.0,
        "{}",
        lines[0]
    );
    // bf16 differs from fp32, but not wildly after 4 steps.
    let d = field(lines[0], "max_abs_dloss_bf16");
    assert!(d > 0.0 && d < 0.5, "{}", lines[0]);
    // Gradient cache = one graph (fp32), far closer than another dropout draw.
    let fp32 = lines[1];
    assert!(fp32.contains("kind=Float"), "{fp32}");
    let (cache, other) = (
        field(fp32, "max_rel_dgrad"),
        field(fp32, "other_dropout_max_rel_dgrad"),
    );
    assert!(cache < 1e-4, "{fp32}");
    assert!(other > 100.0 * cache.max(1e-7), "{fp32}");
    assert!(
        (field(fp32, "loss_cache") - field(fp32, "loss_one_graph")).abs() < 1e-4,
        "{fp32}"
    );
    // Packed (run.unpad) against padded: fp32 equal to rounding, bf16 within its noise.
    let (unpad32, unpad16) = (lines[3], lines[4]);
    assert!(unpad32.contains("check unpad kind=Float"), "{unpad32}");
    assert!(
        field(unpad32, "relative_to_largest_grad") < 1e-5,
        "{unpad32}"
    );
    assert!(unpad16.contains("kind=BFloat16"), "{unpad16}");
    assert!(
        field(unpad16, "relative_to_largest_grad") < 1e-2,
        "{unpad16}"
    );
}

/// The lever options of gpu-bench.sh's grouped rows parse and run (on the CPU the attention switch is
/// only a flag; `--cudnn-attention off` was once refused as an unexpected argument).
#[test]
fn bench_train_takes_the_attention_and_residual_levers() {
    for lever in [["--cudnn-attention", "off"], ["--residual", "bf16"]] {
        let o = run(&[
            "bench", "train", "--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--batch", "2", "--seq", "16", lever[0], lever[1],
        ]);
        assert!(o.status.success(), "{lever:?}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with("ours condenser"),
            "{lever:?}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn bench_train_profile_writes_a_chrome_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let o = run(&[
        "bench",
        "train",
        "--tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch",
        "4",
        "--seq",
        "32",
        "--profile",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let names: Vec<&str> = t["traceEvents"]
        .as_array()
        .expect("a Chrome trace")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    // The model's matrix products and the fused AdamW were recorded.
    assert!(
        names.iter().any(|n| n.contains("mm")),
        "no matrix product among {} events",
        names.len()
    );
    assert!(names.iter().any(|n| n.contains("adamw")), "no AdamW op");
    // The summary script reads it (no device kernels on the CPU: it says so).
    let s = std::process::Command::new(venv_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/trace_summary.py"
        ))
        .arg(&trace)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(String::from_utf8_lossy(&s.stdout).contains("no device kernels"));
}
