//! Bounded memory: peak RSS of `prepare` does not grow with the input (issue 3, property 2).
//! Measured per child with wait4(2); sizes are kept small so the suite stays fast. The note of the
//! issue gives the 20 MB vs 200 MB figures of the release binary.

mod common;

use std::path::Path;

use common::*;

/// Runs prepare on `inputs` and returns the child's peak RSS in MB.
fn peak_rss_mb(inputs: &[String], out: &Path) -> f64 {
    let child = condenser()
        .args(["prepare", "-q", "--out", out.to_str().unwrap()])
        .args(inputs)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "prepare failed"
    );
    usage.ru_maxrss as f64 / 1024.0 // KiB on Linux
}

#[test]
fn peak_rss_does_not_grow_with_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let small = write_jsonl(dir.path(), "small.jsonl", 2500, 21)
        .display()
        .to_string();
    let size = std::fs::metadata(&small).unwrap().len();
    // The same file eight times over: eight times the input, same documents per input.
    let small_run = peak_rss_mb(std::slice::from_ref(&small), &dir.path().join("out-small"));
    let big_inputs = vec![small.clone(); 8];
    let big_run = peak_rss_mb(&big_inputs, &dir.path().join("out-big"));
    eprintln!(
        "peak RSS: {small_run:.0} MB for {:.1} MB of input, {big_run:.0} MB for {:.1} MB",
        size as f64 / 1e6,
        8.0 * size as f64 / 1e6
    );
    assert!(
        big_run < small_run * 1.25 + 48.0,
        "peak RSS grew with the input: {small_run:.0} MB -> {big_run:.0} MB"
    );
    assert!(big_run < 1024.0);
    assert_eq!(
        manifest(&dir.path().join("out-big"))["totals"]["documents"],
        8 * 2500
    );
}
