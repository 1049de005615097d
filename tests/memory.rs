//! Bounded memory: peak RSS of `prepare` does not grow with the input.
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
    // Eight files like it (other seeds): eight times the input, same documents per input. (One file
    // named eight times would be read once: a file reached by two paths is read once.)
    let small_run = peak_rss_mb(std::slice::from_ref(&small), &dir.path().join("out-small"));
    let big_inputs: Vec<String> = (0..8)
        .map(|i| {
            write_jsonl(dir.path(), &format!("big-{i}.jsonl"), 2500, 100 + i)
                .display()
                .to_string()
        })
        .collect();
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

/// Runs `condenser ARGS...` under `/usr/bin/time` and returns its exit code and peak RSS in MB.
/// (wait4's ru_maxrss of a direct child starts at the RSS this test process had when it forked,
/// which the large inputs below would inflate; `time` forks the command from a small process.)
fn run_peak_rss_mb(args: &[&str]) -> (Option<i32>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("rss");
    let status = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o", report.to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_condenser"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("/usr/bin/time runs (apt-get install time)");
    let text = std::fs::read_to_string(&report).unwrap();
    let kib: f64 = text.lines().last().unwrap().trim().parse().unwrap();
    (status.code(), kib / 1024.0)
}

/// whatever the input, peak memory stays within a fixed budget plus a small
/// multiple of `--max-record-bytes`. Each input below holds one 24 MB record, which the limit of
/// 1 MiB must refuse before it is held: a MediaWiki page, a keyed-JSON value behind gzip, a JSON
/// Lines first line. Measured (debug build): 172, 172 and 186 MB against 164 MB without them; before
/// the fix the wiki page alone took 399 MB (and was kept as a document).
#[test]
fn peak_rss_is_bounded_by_the_record_limit_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let small = write_jsonl(dir.path(), "small.jsonl", 300, 5)
        .display()
        .to_string();
    // Written piece by piece: this process stays small (other tests here read their child's RSS).
    let write = |path: &Path, gzip: bool, head: &str, tail: &str| {
        use std::io::Write;
        let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut w: Box<dyn Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(file)
        };
        w.write_all(head.as_bytes()).unwrap();
        for _ in 0..(24 << 20) / 34 {
            w.write_all(b"Many words in one very long page. ").unwrap();
        }
        w.write_all(tail.as_bytes()).unwrap();
        w.flush().unwrap();
    };
    let wiki = dir.path().join("dump.xml");
    write(
        &wiki,
        false,
        "<mediawiki><page><title>Big</title><ns>0</ns><id>1</id><revision><text>",
        "</text></revision></page>\n<page><title>Small</title><ns>0</ns><id>2</id><revision>\
         <text>Small page.</text></revision></page></mediawiki>\n",
    );
    let keyed = dir.path().join("one.json.gz");
    write(
        &keyed,
        true,
        r#"{"Big": {"extract": ""#,
        r#""}, "Small": {"extract": "Small."}}"#,
    );
    let jsonl = dir.path().join("first.jsonl");
    write(
        &jsonl,
        false,
        r#"{"id": "big", "text": ""#,
        "\"}\n{\"id\": \"small\", \"text\": \"Small.\"}\n",
    );
    let out = |n: &str| dir.path().join(n).display().to_string();
    let (code, base) = run_peak_rss_mb(&[
        "prepare",
        "-q",
        "--max-record-bytes",
        "1MiB",
        "--out",
        &out("base"),
        &small,
    ]);
    assert_eq!(code, Some(0));
    for input in [&wiki, &keyed, &jsonl] {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let (code, peak) = run_peak_rss_mb(&[
            "prepare",
            "-q",
            "--max-record-bytes",
            "1MiB",
            "--out",
            &out(&format!("out-{name}")),
            &small,
            input.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(0), "{name}");
        eprintln!("{name}: peak RSS {peak:.0} MB, {base:.0} MB without it");
        assert!(
            peak < base + 40.0,
            "{name}: peak RSS {peak:.0} MB with one 24 MB record over a 1 MiB limit, {base:.0} MB without it"
        );
        let m = manifest(&dir.path().join(format!("out-{name}")));
        assert_eq!(
            m["inputs"][1]["skipped"]["record_too_large"], 1,
            "{name}: {m}"
        );
        assert_eq!(m["inputs"][1]["documents"], 1, "{name}: {m}");
    }
}

/// one long record (a line of 3 MiB without a sentence end, under the default
/// limit) costs a small multiple of its size, not ~120x: the tokenizer sees it in bounded pieces.
/// Measured: +23 MB for 2 MiB (+250 MB before the fix), +93 MB for 16 MiB (+1.5 GB before).
#[test]
fn a_long_sentence_costs_a_small_multiple_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let small = write_jsonl(dir.path(), "small.jsonl", 300, 5)
        .display()
        .to_string();
    let long = dir.path().join("long.txt");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&long).unwrap());
        for _ in 0..(3 << 20) / 51 {
            w.write_all(b"river city museum runs through the northern valley ")
                .unwrap();
        }
        w.write_all(b"\n").unwrap();
    }
    let out = |n: &str| dir.path().join(n).display().to_string();
    let (code, base) =
        run_peak_rss_mb(&["prepare", "-q", "-j", "2", "--out", &out("base"), &small]);
    assert_eq!(code, Some(0));
    let (code, peak) = run_peak_rss_mb(&[
        "prepare",
        "-q",
        "-j",
        "2",
        "--out",
        &out("long"),
        &small,
        long.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    let m = manifest(&dir.path().join("long"));
    assert_eq!(m["inputs"][1]["documents"], 1, "{m}");
    eprintln!("one 3 MiB sentence: peak RSS {peak:.0} MB, {base:.0} MB without it");
    assert!(
        peak < base + 20.0 * 3.2,
        "peak RSS {peak:.0} MB with one 3 MiB sentence, {base:.0} MB without it"
    );
}

/// `--on-error fail` on stdin whose first record never ends (a JSON line that keeps growing, the pipe
/// left open): the run stops with exit 2 at the record limit, instead of skipping the endless record
/// forever while the error waits in a chunk that never fills.
#[test]
fn on_error_fail_stops_at_an_endless_record() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = condenser()
        .args(["prepare", "-", "--format", "jsonl", "--on-error", "fail"])
        .args(["--max-record-bytes", "4096", "-q", "--out"])
        .arg(dir.path().join("out"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A writer that keeps the record growing for up to 60 s and stops when the pipe closes.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(br#"{"id": "a", "text": ""#);
        let block = vec![b'a'; 64 * 1024];
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            if stdin.write_all(&block).is_err() {
                return true; // the reader went away: the run ended
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    });
    let ended_early = feeder.join().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        ended_early,
        "prepare was still reading the endless record after 60 s"
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("on-error fail"), "{}", stderr(&out));
}
