//! One writer per output folder: `prepare` (and `prepare --merge`) hold an exclusive `flock(2)` on
//! `DIR/.condenser.lock` for the whole run. The kernel drops the lock when the process ends, however it
//! ends (`kill -9` included), so a lock is never stale; the file holds the holder's pid, host and
//! command line for the message a second run prints. A clean end removes the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const LOCK_FILE: &str = ".condenser.lock";

/// An exclusive lock on a folder, released on drop (and by the kernel on any exit).
#[derive(Debug)]
pub struct FolderLock {
    file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Takes the lock on `dir` (which must exist), or fails at once naming the holder.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK_FILE);
        // A holder that ends removes the file after we opened it: our lock would then be on a file no
        // one else can find, so retry until the locked file is the one at `path`.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("{}: cannot open the lock file", path.display()))?;
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    bail!(
                        "{}: another prepare is writing into this folder ({}); wait for it to end, or use another --out",
                        dir.display(),
                        if holder.is_empty() { "holder unknown" } else { holder }
                    );
                }
                return Err(err).with_context(|| format!("{}: cannot lock", path.display()));
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            let holder = format!(
                "pid {} on {}: {}\n",
                std::process::id(),
                hostname(),
                std::env::args().collect::<Vec<_>>().join(" ")
            );
            file.set_len(0)
                .and_then(|_| file.write_all(holder.as_bytes()))
                .and_then(|_| file.flush())
                .with_context(|| format!("{}: cannot write", path.display()))?;
            return Ok(FolderLock { file, path });
        }
        bail!(
            "{}: cannot take the lock (the file keeps changing)",
            path.display()
        )
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiter that opened it retries (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::acquire(dir.path()).unwrap();
        let err = format!("{:#}", FolderLock::acquire(dir.path()).unwrap_err());
        assert!(
            err.contains("another prepare") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let _again = FolderLock::acquire(dir.path()).unwrap();
    }
}
