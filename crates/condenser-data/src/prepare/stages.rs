//! Where a prepare run's time goes, stage by stage: CPU seconds of each stage's threads (thread CPU
//! clocks, so a thread waiting or preempted costs nothing) and the waits between stages.
//!
//! The reader and the writer threads are the serial stages of the pipeline (decoding may run on threads
//! of its own), so these figures say at how many threads one of them would become the bottleneck: when
//! the parallel stages' CPU divided by the threads falls to its CPU.
//! `bench prepare` prints them; `prepare -v` logs them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use crate::cputime::thread_cpu;

/// Nanoseconds added up from many threads.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    pub fn add(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn secs(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Runs `f`, adding the calling thread's CPU time in it.
    pub fn cpu<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = thread_cpu();
        let out = f();
        self.add(thread_cpu().saturating_sub(t));
        out
    }
}

/// The stage clocks of one run.
#[derive(Debug, Default)]
pub struct Stages {
    /// The reader thread: opening inputs, serial decompression, parsing (XML, JSON, TSV), chunking.
    pub reader_cpu: Clock,
    /// Wall time the reader waited to hand a chunk on (the stages after it were full: not the
    /// bottleneck).
    pub reader_blocked: Clock,
    /// Wall time the dispatcher waited for the reader's next chunk (the parallel stage may starve).
    pub dispatch_waited: Clock,
    /// Parallel decompression threads (multi-stream bzip2 and the like), splitting included.
    pub decode_cpu: Clock,
    /// The parallel stage: JSON Lines and TSV records parsed (the reader hands them on as lines).
    pub parse_cpu: Clock,
    /// The parallel stage: wikitext markup to plain text.
    pub markup_cpu: Clock,
    /// The parallel stage: sentence splitting, tokenizing, packing spans.
    pub segment_cpu: Clock,
    /// The parallel stage: Parquet encoding and zstd compression of row groups.
    pub encode_cpu: Clock,
    /// The writer thread: reordering, cutting row groups, appending them to shards, manifests.
    pub writer_cpu: Clock,
}

/// The figures in seconds, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct StageSeconds {
    pub wall: f64,
    pub reader_cpu: f64,
    pub reader_blocked: f64,
    pub dispatch_waited: f64,
    pub decode_cpu: f64,
    pub parse_cpu: f64,
    pub markup_cpu: f64,
    pub segment_cpu: f64,
    pub encode_cpu: f64,
    pub writer_cpu: f64,
}

impl Stages {
    pub fn seconds(&self, wall: Duration) -> StageSeconds {
        StageSeconds {
            wall: wall.as_secs_f64(),
            reader_cpu: self.reader_cpu.secs(),
            reader_blocked: self.reader_blocked.secs(),
            dispatch_waited: self.dispatch_waited.secs(),
            decode_cpu: self.decode_cpu.secs(),
            parse_cpu: self.parse_cpu.secs(),
            markup_cpu: self.markup_cpu.secs(),
            segment_cpu: self.segment_cpu.secs(),
            encode_cpu: self.encode_cpu.secs(),
            writer_cpu: self.writer_cpu.secs(),
        }
    }
}

impl StageSeconds {
    /// The serial stage with the most CPU (the reader or the writer), and the threads at which the
    /// parallel work (decoding, parsing, markup, segmenting, encoding row groups) per thread falls to
    /// it: beyond them that stage is the bottleneck.
    pub fn serial_bound(&self) -> (&'static str, f64) {
        let (stage, cpu) = match self.reader_cpu >= self.writer_cpu {
            true => ("reader", self.reader_cpu),
            false => ("writer", self.writer_cpu),
        };
        let parallel =
            self.decode_cpu + self.parse_cpu + self.markup_cpu + self.segment_cpu + self.encode_cpu;
        (stage, parallel / cpu.max(1e-9))
    }

    /// One log line.
    pub fn line(&self) -> String {
        format!(
            "stages (CPU s): reader {:.2} (blocked {:.2} s waiting to hand chunks on), decode {:.2}, parse {:.2}, markup {:.2}, segment {:.2}, encode {:.2}, writer {:.2}; the parallel stage waited {:.2} s for chunks; {:.2} s wall; the {} would bind at about {:.0} threads",
            self.reader_cpu,
            self.reader_blocked,
            self.decode_cpu,
            self.parse_cpu,
            self.markup_cpu,
            self.segment_cpu,
            self.encode_cpu,
            self.writer_cpu,
            self.dispatch_waited,
            self.wall,
            self.serial_bound().0,
            self.serial_bound().1
        )
    }
}
