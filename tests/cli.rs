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

/// The subcommands listed under "Commands:" in a help text (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line starts two spaces in; wrapped description lines start further in.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// every subcommand's help, nested ones included, ends with real examples
/// that start with `condenser <that subcommand>`, lists -q/-v as global options, and names nothing a
/// user does not have (the project's shared folder, scripts' variables, internal documents).
#[test]
fn every_subcommand_help_has_examples_and_no_internal_references() {
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = condenser(&args);
        assert!(o.status.success(), "{args:?}");
        let help = String::from_utf8(o.stdout).unwrap();
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
        let prefix = ["condenser".to_string()]
            .into_iter()
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let examples: Vec<&str> = help
            .lines()
            .skip_while(|l| *l != "Examples:")
            .skip(1)
            .map(str::trim)
            .collect();
        assert!(
            examples.len() >= 2,
            "`{prefix} --help` has fewer than two examples:\n{help}"
        );
        if !path.is_empty() {
            assert!(
                examples
                    .iter()
                    .any(|e| e.starts_with(&format!("{prefix} "))),
                "no example of `{prefix} --help` starts with `{prefix}`:\n{help}"
            );
        }
        assert!(
            help.contains("Global options:\n  -q, --quiet") && help.contains("-v, --verbose"),
            "`{prefix} --help` does not list -q/-v as global options"
        );
        for internal in [
            "../shared",
            "$EXTRA",
            "ovos",
            "DESIGN.md",
            "spec ",
            "issue ",
            "Issue ",
        ] {
            assert!(
                !help.contains(internal),
                "`{prefix} --help` mentions {internal:?}:\n{help}"
            );
        }
        seen.push(prefix);
    }
    for nested in [
        "condenser bench train",
        "condenser bench prepare",
        "condenser eval-spans",
    ] {
        assert!(
            seen.iter().any(|s| s == nested),
            "{nested} not walked: {seen:?}"
        );
    }
}

/// a usage error carries the same `condenser: error:` prefix as a run error and
/// exits 2; --help and --version still go to stdout with status 0.
#[test]
fn parse_errors_and_run_errors_share_one_prefix() {
    let usage = condenser(&["train", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    let err = String::from_utf8_lossy(&usage.stderr);
    assert!(
        err.starts_with("condenser: error: unexpected argument '--no-such-flag'"),
        "{err}"
    );
    assert!(!err.contains("\nerror:"), "{err}");
    let missing = condenser(&["curves"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("condenser: error: "));
    let run_error = condenser(&["curves", "/nonexistent/run", "-o", "/nonexistent/c.png"]);
    assert_eq!(run_error.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run_error.stderr)
        .starts_with("condenser: error: /nonexistent/run"));
    for flag in ["--help", "-h", "--version"] {
        let o = condenser(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}");
        assert!(!o.stdout.is_empty() && o.stderr.is_empty(), "{flag}");
    }
    let o = condenser(&["train", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Examples:"));
}

/// `train --print-config` needs no data, run folder or model; what it prints loads
/// back with --config to the same configuration, and every key sits under a comment.
#[test]
fn print_config_round_trips() {
    use condenser::train::config::TrainConfig;
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo-cocondenser.toml");
    let sets = ["optim.lr=3e-4", "model.skip_from=2", "run.precision=bf16"];
    let mut args = vec!["train", "--print-config", "--config", demo];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let o = condenser(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let printed = String::from_utf8(o.stdout).unwrap();
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &printed).unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let want = TrainConfig::load(Some(std::path::Path::new(demo)), &sets).unwrap();
    assert_eq!(TrainConfig::load(Some(&path), &[]).unwrap(), want);
    // Printed again from the printed file: the same text.
    let again = condenser(&[
        "train",
        "--print-config",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
    let lines: Vec<&str> = printed.lines().collect();
    let mut keys = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            keys += 1;
            assert!(
                lines[i - 1].starts_with("# "),
                "{line} has no comment above it"
            );
        }
    }
    assert!(keys >= 30, "{keys} keys printed:\n{printed}");
    assert!(printed.contains("lr = 0.0003") && printed.contains("skip_from = 2"));
}

/// `condenser` runs the data commands without libtorch and hands the others to `condenser-torch`
/// beside it: alone in a folder (no `condenser-torch`, no libtorch among its libraries), it still
/// prepares and inspects, and a training command is a clear error naming the missing binary.
#[test]
fn the_data_commands_run_without_libtorch_and_the_others_need_condenser_torch() {
    let light = std::path::Path::new(env!("CARGO_BIN_EXE_condenser"));
    let bytes = |p: &std::path::Path| std::fs::read(p).unwrap();
    let names = |b: &[u8], what: &str| b.windows(what.len()).any(|w| w == what.as_bytes());
    // The shared libraries an ELF binary needs are named in its dynamic string table.
    for lib in ["libtorch_cpu.so", "libc10.so"] {
        assert!(!names(&bytes(light), lib), "condenser needs {lib}");
        assert!(
            names(&bytes(&light.with_file_name("condenser-torch")), lib),
            "condenser-torch should name {lib} (the check above would prove nothing)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("condenser");
    std::fs::copy(light, &alone).unwrap();
    let corpus = dir.path().join("c.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\": \"a\", \"text\": \"One sentence here. And another one there.\"}\n",
    )
    .unwrap();
    let shards = dir.path().join("shards");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(&alone)
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap()
    };
    let o = run(&[
        "prepare".as_ref(),
        corpus.as_os_str(),
        "-o".as_ref(),
        shards.as_os_str(),
        "-q".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["inspect".as_ref(), shards.as_os_str(), "--verify".as_ref()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "train".as_ref(),
        shards.as_os_str(),
        "-o".as_ref(),
        "r".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains(&format!(
            "cannot run {}",
            dir.path().join("condenser-torch").display()
        )),
        "{msg}"
    );
}
