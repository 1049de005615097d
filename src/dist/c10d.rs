//! A process group over PyTorch's c10d (csrc/c10d.cpp): a TCPStore for the rendezvous, then Gloo (CPU
//! tensors) or NCCL (CUDA tensors; csrc/c10d_nccl.cpp, a shared object loaded only when asked for), and
//! the four collectives data-parallel training needs. Every call blocks until the collective is done
//! (Gloo) or ordered on the current CUDA stream (NCCL), and fails, rather than hangs or aborts, once
//! the group's timeout has passed or a peer is gone.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tch::Tensor;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// CPU tensors over TCP; also what multi-rank tests use (NCCL cannot put two ranks on one GPU).
    Gloo,
    /// CUDA tensors; needs libcondenser_nccl.so (built beside the crate) and a GPU.
    Nccl,
}

/// How to reach the other ranks.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub backend: BackendKind,
    /// The store's host (MASTER_ADDR).
    pub master_addr: String,
    /// The store's port (MASTER_PORT).
    pub master_port: u16,
    /// This process's global rank, in 0..world_size.
    pub rank: usize,
    pub world_size: usize,
    /// Host the store here (rank 0 launched by hand or by srun). False for every rank under torchrun,
    /// whose agent already serves the store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True).
    pub store_server: bool,
    /// Prefix for every store key (PrefixStore adds the "/"); include torchrun's restart count so a
    /// restart reads no stale keys.
    pub prefix: String,
    /// Bounds the rendezvous and every collective (Gloo: a silent peer fails the collective after this
    /// long, a dead one at once), and a store client's wait for its server.
    pub timeout: Duration,
    /// The address Gloo binds to and advertises to its peers (127.0.0.1 for one machine). Ignored when
    /// GLOO_SOCKET_IFNAME names interfaces (comma-separated), as in PyTorch.
    pub gloo_host: String,
}

/// How far a join got, for the message when it times out.
#[repr(u8)]
enum Phase {
    /// Waiting for the store's port to accept a connection.
    Connecting,
    /// Connected; creating the TCPStore client (its handshake) or server.
    Handshake,
    /// The store is up; waiting for every rank to join the backend's group.
    Group,
}

/// One rank's membership of a group. `Send`, so it may move to another thread, but not `Sync`: c10d
/// matches collectives by issue order, so they must come from one thread in the same order on every rank.
pub struct ProcessGroup {
    backend: NonNull<ffi::Backend>,
    store: NonNull<ffi::Store>,
    kind: BackendKind,
    rank: usize,
    world_size: usize,
    store_addr: String,
    timeout: Duration,
}

// SAFETY: the handles are owned heap objects of c10d (internally synchronised for a single caller);
// nothing ties them to the creating thread. !Sync stays (raw pointers), so one thread uses them at a time.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Connects to (or hosts) the store and joins the group; returns once every rank has joined, or
    /// fails once `o.timeout` has passed, naming the store's address and what did not answer.
    ///
    /// c10d bounds most of joining by the timeout itself, but not all of it: a TCPStore client waits
    /// without limit for the answer to its handshake, so a port held by a program that accepts and
    /// never answers would hang the rank. The join therefore runs on its own thread and is abandoned
    /// (left blocked, the process is about to exit with the error) when the timeout passes.
    pub fn new(o: &GroupOptions) -> Result<Self> {
        use std::sync::atomic::{AtomicU8, Ordering};
        use std::sync::Arc;
        let phase = Arc::new(AtomicU8::new(Phase::Connecting as u8));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (opts, seen) = (o.clone(), phase.clone());
        std::thread::Builder::new()
            .name("c10d-join".into())
            .spawn(move || {
                let _ = tx.send(Self::join(&opts, &seen));
            })
            .context("spawning the c10d join thread")?;
        // A little past the timeout, so that c10d's own bounded waits report first with their detail.
        match rx.recv_timeout(o.timeout + Duration::from_millis(500)) {
            Ok(joined) => joined,
            Err(_) => {
                let what = match phase.load(Ordering::SeqCst) {
                    p if p == Phase::Connecting as u8 => {
                        "nothing accepted a connection on the store's port".to_string()
                    }
                    p if p == Phase::Handshake as u8 => "something accepted the connection on the store's port but did not answer the c10d store's handshake (is another program listening on MASTER_PORT?)".to_string(),
                    _ => format!(
                        "the store answered, but not all {} ranks joined the {:?} group",
                        o.world_size, o.backend
                    ),
                };
                bail!(
                    "rank {} of {}: joining through the store at {}:{} timed out after {:?} (--dist-timeout): {what}",
                    o.rank,
                    o.world_size,
                    o.master_addr,
                    o.master_port,
                    o.timeout
                )
            }
        }
    }

    /// `new`'s work, on the join thread; `phase` says how far it got.
    fn join(o: &GroupOptions, phase: &std::sync::atomic::AtomicU8) -> Result<Self> {
        use std::sync::atomic::Ordering;
        ensure!(
            o.world_size >= 1 && o.rank < o.world_size,
            "rank {} is not in a group of {}",
            o.rank,
            o.world_size
        );
        let start = Instant::now();
        let timeout_ms = i64::try_from(o.timeout.as_millis()).unwrap_or(i64::MAX);
        let where_ = format!(
            "rank {} of {}, store {}:{} ({})",
            o.rank,
            o.world_size,
            o.master_addr,
            o.master_port,
            if o.store_server { "server" } else { "client" }
        );
        // For NCCL, fail before touching the network when the library cannot be loaded.
        let nccl = match o.backend {
            BackendKind::Nccl => Some(nccl_constructor().with_context(|| where_.clone())?),
            BackendKind::Gloo => None,
        };
        if !o.store_server {
            wait_for_server(&o.master_addr, o.master_port, o.timeout)
                .with_context(|| format!("creating the c10d store: {where_}"))?;
        }
        phase.store(Phase::Handshake as u8, Ordering::SeqCst);
        let host = cstring(&o.master_addr, "master_addr")?;
        let prefix = cstring(&o.prefix, "prefix")?;
        let mut store = std::ptr::null_mut();
        // SAFETY: valid C strings for the call; `store` receives an owned handle on success.
        check(unsafe {
            ffi::condenser_c10d_store_new(
                host.as_ptr(),
                o.master_port,
                o.store_server,
                timeout_ms,
                prefix.as_ptr(),
                &mut store,
            )
        })
        .with_context(|| format!("creating the c10d store: {where_}"))?;
        let store = NonNull::new(store).context("c10d store: null handle")?;
        // Freed on every early return below.
        let store_guard = StoreGuard(store);
        phase.store(Phase::Group as u8, Ordering::SeqCst);
        let (rank, size) = (o.rank as c_int, o.world_size as c_int);
        let mut backend = std::ptr::null_mut();
        match (o.backend, nccl) {
            (BackendKind::Gloo, _) => {
                let gloo_host = cstring(&o.gloo_host, "gloo_host")?;
                let ifnames = gloo_interfaces()
                    .map(|s| cstring(&s, "GLOO_SOCKET_IFNAME"))
                    .transpose()?;
                // SAFETY: live store handle and C strings; `backend` receives an owned handle on success.
                check(unsafe {
                    ffi::condenser_c10d_gloo_new(
                        store.as_ptr(),
                        rank,
                        size,
                        timeout_ms,
                        gloo_host.as_ptr(),
                        ifnames.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                        &mut backend,
                    )
                })
            }
            (BackendKind::Nccl, Some(new_nccl)) => {
                // SAFETY: the constructor from libcondenser_nccl.so has this signature (csrc/c10d_nccl.cpp).
                check(unsafe { new_nccl(store.as_ptr(), rank, size, timeout_ms, &mut backend) })
            }
            (BackendKind::Nccl, None) => unreachable!("NCCL constructor loaded above"),
        }
        .with_context(|| format!("joining the {:?} group: {where_}", o.backend))?;
        let backend = NonNull::new(backend).context("c10d backend: null handle")?;
        std::mem::forget(store_guard);
        log::debug!(
            "c10d {:?} group joined in {:.0?}: {where_}",
            o.backend,
            start.elapsed()
        );
        Ok(Self {
            backend,
            store,
            kind: o.backend,
            rank: o.rank,
            world_size: o.world_size,
            store_addr: format!("{}:{}", o.master_addr, o.master_port),
            timeout: o.timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// Sums `t` over every rank, in place. Gloo has no average: scale afterwards.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.in_place(t, "all_reduce", |c| {
            // SAFETY: live backend handle; `c` is a live tensor handle for the call.
            unsafe { ffi::condenser_c10d_all_reduce_sum(self.backend.as_ptr(), c.as_ptr().cast()) }
        })
    }

    /// Every rank's `t` ([n, ...], the same shape on every rank) concatenated along dim 0 in rank order:
    /// [world_size * n, ...]. A 0-dim `t` gives [world_size].
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let input = if t.dim() == 0 {
            t.reshape([1])
        } else {
            t.contiguous()
        };
        let mut size = input.size();
        size[0] *= self.world_size as i64;
        let output = Tensor::empty(size.as_slice(), (input.kind(), input.device()));
        // SAFETY: live backend handle; both tensors are live handles for the call.
        check(unsafe {
            ffi::condenser_c10d_all_gather(
                self.backend.as_ptr(),
                output.as_ptr().cast(),
                input.as_ptr().cast(),
            )
        })
        .with_context(|| self.context("all_gather"))?;
        Ok(output)
    }

    /// Overwrites `t` on every rank with `root`'s.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        ensure!(
            root < self.world_size,
            "{}: root {root} is not a rank",
            self.context("broadcast")
        );
        self.in_place(t, "broadcast", |c| {
            // SAFETY: live backend handle; `c` is a live tensor handle for the call.
            unsafe {
                ffi::condenser_c10d_broadcast(
                    self.backend.as_ptr(),
                    c.as_ptr().cast(),
                    root as c_int,
                )
            }
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live backend handle.
        check(unsafe { ffi::condenser_c10d_barrier(self.backend.as_ptr()) })
            .with_context(|| self.context("barrier"))
    }

    /// c10d works on contiguous memory: a strided `t` goes through a contiguous copy, copied back after.
    fn in_place(
        &self,
        t: &Tensor,
        op: &str,
        call: impl FnOnce(&Tensor) -> *mut c_char,
    ) -> Result<()> {
        let contiguous = t.is_contiguous();
        let c = if contiguous {
            t.shallow_clone()
        } else {
            t.contiguous()
        };
        check(call(&c)).with_context(|| self.context(op))?;
        if !contiguous {
            t.shallow_clone().copy_(&c);
        }
        Ok(())
    }

    fn context(&self, op: &str) -> String {
        format!(
            "{op}: rank {} of {}, store {}",
            self.rank, self.world_size, self.store_addr
        )
    }
}

impl Drop for ProcessGroup {
    /// Shuts the backend down, waiting at most the group's timeout (a peer stuck in a collective can hold
    /// Gloo's workers that long); past it the shutdown is left running and a warning says so.
    fn drop(&mut self) {
        let wait_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: both handles are owned by `self` and freed exactly once, here.
        let err = unsafe { ffi::condenser_c10d_backend_free(self.backend.as_ptr(), wait_ms) };
        if let Err(e) = check(err) {
            log::warn!("{}: {e:#}", self.context("shutdown"));
        }
        unsafe { ffi::condenser_c10d_store_free(self.store.as_ptr()) };
    }
}

/// Frees the store when joining the group fails.
struct StoreGuard(NonNull<ffi::Store>);

impl Drop for StoreGuard {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once (the guard is forgotten once the group owns it).
        unsafe { ffi::condenser_c10d_store_free(self.0.as_ptr()) };
    }
}

/// Waits until the store's server accepts a TCP connection, for at most `timeout`. TCPStore's client
/// connect retries on its own for up to about twice its timeout (6-8 s measured for 3 s); probing first
/// keeps `new` within the timeout when the server never comes. The probe connection is closed at once,
/// which the server treats as any client that left.
fn wait_for_server(host: &str, port: u16, timeout: Duration) -> Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        let addrs = (host, port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
            .unwrap_or_default();
        for addr in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(addr, left.max(Duration::from_millis(1))) {
                Ok(_) => return Ok(()),
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        if addrs.is_empty() {
            last_error = Some(format!("{host} does not resolve"));
        }
        if Instant::now() >= deadline {
            bail!(
                "no store server answered at {host}:{port} within {timeout:?} ({})",
                last_error.unwrap_or_default()
            );
        }
        std::thread::sleep(
            Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

/// GLOO_SOCKET_IFNAME, as PyTorch reads it: network interfaces for Gloo, comma-separated.
fn gloo_interfaces() -> Option<String> {
    std::env::var("GLOO_SOCKET_IFNAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{what} {s:?} contains a NUL byte"))
}

/// Turns the shim's malloc'd message (NULL on success) into an error, freeing it.
fn check(err: *mut c_char) -> Result<()> {
    crate::ffi::check(err).map_err(anyhow::Error::msg)
}

/// csrc/c10d_nccl.cpp's constructor.
type NcclNew = unsafe extern "C" fn(
    store: *const ffi::Store,
    rank: c_int,
    size: c_int,
    timeout_ms: i64,
    out: *mut *mut ffi::Backend,
) -> *mut c_char;

/// Name of the NCCL shim; build.rs builds it and passes its path as CONDENSER_NCCL_LIB.
const NCCL_LIB_NAME: &str = "libcondenser_nccl.so";

/// Loads libcondenser_nccl.so once and finds its constructor. Loading it pulls in libtorch_cuda.so and
/// NCCL, which is why CPU-only runs never do.
fn nccl_constructor() -> Result<NcclNew> {
    static NCCL: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    let f = NCCL.get_or_init(|| load_nccl().map_err(|e| format!("{e:#}")));
    match f {
        // SAFETY: the address of `condenser_c10d_nccl_new`, whose signature is NcclNew.
        Ok(addr) => Ok(unsafe { std::mem::transmute::<usize, NcclNew>(*addr) }),
        Err(e) => bail!("NCCL backend unavailable: {e}"),
    }
}

fn load_nccl() -> Result<usize> {
    // libtorch_cuda.so first, RTLD_GLOBAL, so its CUDA hooks register as device.rs expects.
    let cuda = crate::device::load_cuda_backend();
    if let Some(e) = &cuda.error {
        bail!("libtorch_cuda.so did not load: {e}");
    }
    // Beside the running executable first: a binary copied to another machine carries the .so beside it
    // (the build folder is gone there); then the build output this crate was compiled with.
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        candidates.push(dir.join(NCCL_LIB_NAME));
    }
    candidates.push(PathBuf::from(env!("CONDENSER_NCCL_LIB")));
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{NCCL_LIB_NAME} not found (looked for {candidates:?})"))?;
    let cpath =
        CString::new(path.as_os_str().as_encoded_bytes()).context("library path has a NUL")?;
    // RTLD_NOW: an unresolved symbol (a mismatched libtorch or NCCL) fails here, not mid-training.
    // RTLD_LOCAL: nothing resolves against this library's symbols; its dependencies (libtorch_cuda,
    // loaded globally above; libnccl through libtorch_cuda's run path) are shared as usual.
    // SAFETY: dlopen/dlsym with valid C strings; the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        bail!("dlopen {}: {}", path.display(), dl_error());
    }
    let sym = c"condenser_c10d_nccl_new";
    let f: *mut c_void = unsafe { libc::dlsym(handle, sym.as_ptr()) };
    if f.is_null() {
        bail!(
            "{}: no condenser_c10d_nccl_new: {}",
            path.display(),
            dl_error()
        );
    }
    log::debug!("loaded {}", path.display());
    Ok(f as usize)
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".to_string()
    } else {
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

mod ffi {
    use std::ffi::c_char;

    /// CondenserStore (csrc/c10d.h).
    #[repr(C)]
    pub struct Store {
        _opaque: [u8; 0],
    }

    /// CondenserBackend (csrc/c10d.h).
    #[repr(C)]
    pub struct Backend {
        _opaque: [u8; 0],
    }

    extern "C" {
        // csrc/c10d.cpp. Each returns NULL or a message to free with condenser_free_error; tensors are
        // tch handles (`at::Tensor*`).
        pub fn condenser_c10d_store_new(
            host: *const c_char,
            port: u16,
            is_server: bool,
            timeout_ms: i64,
            prefix: *const c_char,
            out: *mut *mut Store,
        ) -> *mut c_char;
        #[cfg(test)]
        pub fn condenser_c10d_store_port(store: *const Store) -> u16;
        pub fn condenser_c10d_store_free(store: *mut Store);
        pub fn condenser_c10d_gloo_new(
            store: *const Store,
            rank: i32,
            size: i32,
            timeout_ms: i64,
            hostname: *const c_char,
            ifnames: *const c_char,
            out: *mut *mut Backend,
        ) -> *mut c_char;
        pub fn condenser_c10d_all_reduce_sum(
            b: *const Backend,
            t: *const std::ffi::c_void,
        ) -> *mut c_char;
        pub fn condenser_c10d_all_gather(
            b: *const Backend,
            output: *const std::ffi::c_void,
            input: *const std::ffi::c_void,
        ) -> *mut c_char;
        pub fn condenser_c10d_broadcast(
            b: *const Backend,
            t: *const std::ffi::c_void,
            root: i32,
        ) -> *mut c_char;
        pub fn condenser_c10d_barrier(b: *const Backend) -> *mut c_char;
        pub fn condenser_c10d_backend_free(b: *mut Backend, wait_ms: i64) -> *mut c_char;
        // csrc/fused_adamw.cpp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use tch::{Device, Kind};

    /// A port free a moment ago (bind port 0, release it). Racy in principle; the store's bind error
    /// would say so.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port()
    }

    fn options(rank: usize, world_size: usize, port: u16, timeout: Duration) -> GroupOptions {
        GroupOptions {
            backend: BackendKind::Gloo,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            rank,
            world_size,
            store_server: rank == 0,
            prefix: "test/0".into(),
            timeout,
            gloo_host: "127.0.0.1".into(),
        }
    }

    /// Runs `body(rank, group)` for every rank of a Gloo group on its own thread; results in rank order.
    fn with_ranks<T: Send + 'static>(
        opts: Vec<GroupOptions>,
        body: impl Fn(usize, ProcessGroup) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let body = std::sync::Arc::new(body);
        let threads: Vec<_> = opts
            .into_iter()
            .map(|o| {
                let body = body.clone();
                std::thread::spawn(move || {
                    let pg =
                        ProcessGroup::new(&o).unwrap_or_else(|e| panic!("rank {}: {e:#}", o.rank));
                    body(o.rank, pg)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("rank thread panicked"))
            .collect()
    }

    fn to_vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn two_ranks_all_reduce_all_gather_broadcast_barrier() {
        let port = free_port();
        let opts = (0..2)
            .map(|r| options(r, 2, port, Duration::from_secs(20)))
            .collect();
        let out = with_ranks(opts, |rank, pg| {
            assert_eq!((pg.rank(), pg.world_size()), (rank, 2));
            let r = rank as f32;
            // all_reduce: rank r holds r + 1 everywhere; the sum is 3.
            let t = Tensor::full([4], (r + 1.0) as f64, (Kind::Float, Device::Cpu));
            pg.all_reduce_sum(&t).unwrap();
            let sum = to_vec(&t);
            // A strided tensor goes through a contiguous copy and back.
            let base =
                Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]) * (r + 1.0) as f64;
            let strided = base.transpose(0, 1); // (3, 2), not contiguous
            assert!(!strided.is_contiguous());
            pg.all_reduce_sum(&strided).unwrap();
            let strided_sum = to_vec(&base);
            // all_gather: rank r sends a (2, 3) block of r; rows come back in rank order.
            let block = Tensor::full([2, 3], r as f64, (Kind::Float, Device::Cpu));
            let gathered = pg.all_gather(&block).unwrap();
            assert_eq!(gathered.size(), [4, 3]);
            let gathered = to_vec(&gathered);
            // broadcast from rank 1.
            let b = Tensor::full([3], (10.0 * (r + 1.0)) as f64, (Kind::Float, Device::Cpu));
            pg.broadcast(&b, 1).unwrap();
            pg.barrier().unwrap();
            (sum, strided_sum, gathered, to_vec(&b))
        });
        for (sum, strided_sum, gathered, b) in out {
            assert_eq!(sum, vec![3.0; 4]);
            assert_eq!(strided_sum, vec![0.0, 3.0, 6.0, 9.0, 12.0, 15.0]);
            assert_eq!(gathered, [vec![0.0; 6], vec![1.0; 6]].concat());
            assert_eq!(b, vec![20.0; 3]);
        }
    }

    /// Rank 0 hosts the store but rank 1 never comes; rank 1 of another group finds no store at all.
    #[test]
    fn new_fails_within_timeout_when_a_peer_never_joins() {
        let timeout = Duration::from_secs(3);
        let lonely = [
            options(0, 2, free_port(), timeout),
            options(1, 2, free_port(), timeout),
        ];
        let threads = lonely.map(|o| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let err = ProcessGroup::new(&o)
                    .err()
                    .expect("a group of 2 with one rank must not form");
                (o.rank, start.elapsed(), format!("{err:#}"))
            })
        });
        for t in threads {
            let (rank, took, err) = t.join().unwrap();
            eprintln!("never joins, rank {rank} ({took:.1?}): {err}");
            assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
            assert!(err.contains(&format!("rank {rank} of 2")), "{err}");
        }
    }

    /// A port held by a program that accepts connections and never answers (not a c10d store): the
    /// client's handshake would wait without end; the join gives up at the timeout, naming the address
    /// and the handshake.
    #[test]
    fn a_silent_listener_on_the_store_port_fails_the_join_within_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut kept = Vec::new();
            // Accept and hold every connection (the probe and the store client), answering nothing.
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(8);
            while Instant::now() < end {
                if let Ok((c, _)) = listener.accept() {
                    kept.push(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        let err = ProcessGroup::new(&options(1, 2, port, timeout))
            .err()
            .expect("a silent listener is no store");
        let took = start.elapsed();
        let err = format!("{err:#}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "took {took:?}: {err}"
        );
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("did not answer"), "{err}");
        drop(held);
    }

    /// The peer is alive but never calls the collective: Gloo's timeout ends it, and the group still
    /// shuts down.
    #[test]
    fn collective_times_out_when_a_peer_stays_silent() {
        let timeout = Duration::from_secs(3);
        let port = free_port();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let done_rx = std::sync::Mutex::new(done_rx);
        let opts = (0..2).map(|r| options(r, 2, port, timeout)).collect();
        let out = with_ranks(opts, move |rank, pg| {
            if rank == 1 {
                done_rx.lock().unwrap().recv().unwrap();
                return None;
            }
            let start = Instant::now();
            let err = pg.barrier().expect_err("rank 1 never enters the barrier");
            let took = start.elapsed();
            done_tx.send(()).unwrap();
            let start_drop = Instant::now();
            drop(pg);
            Some((took, start_drop.elapsed(), format!("{err:#}")))
        });
        let (took, drop_took, err) = out[0].clone().unwrap();
        eprintln!("silent peer ({took:.1?}, shutdown {drop_took:.1?}): {err}");
        assert!(
            took >= timeout - Duration::from_millis(100),
            "took {took:?}"
        );
        assert!(took < timeout + Duration::from_secs(5), "took {took:?}");
        assert!(err.contains("barrier"), "{err}");
    }

    #[test]
    fn collective_fails_when_a_peer_dropped_its_group() {
        let timeout = Duration::from_secs(3);
        let port = free_port();
        let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
        let dropped_rx = std::sync::Mutex::new(dropped_rx);
        let opts = (0..2).map(|r| options(r, 2, port, timeout)).collect();
        let out = with_ranks(opts, move |rank, pg| {
            if rank == 1 {
                drop(pg);
                dropped_tx.send(()).unwrap();
                return None;
            }
            dropped_rx.lock().unwrap().recv().unwrap();
            let start = Instant::now();
            let t = Tensor::ones([8], (Kind::Float, Device::Cpu));
            let err = pg.all_reduce_sum(&t).expect_err("the peer is gone");
            Some((start.elapsed(), format!("{err:#}")))
        });
        let (took, err) = out[0].clone().unwrap();
        eprintln!("dropped peer ({took:.1?}): {err}");
        assert!(took < timeout + Duration::from_secs(5), "took {took:?}");
        assert!(err.contains("all_reduce"), "{err}");
    }

    /// torchrun's case: the agent serves the store, every rank (0 included) is a client.
    #[test]
    fn clients_of_an_external_store() {
        let host = CString::new("127.0.0.1").unwrap();
        let prefix = CString::new("agent").unwrap();
        let mut server = std::ptr::null_mut();
        check(unsafe {
            ffi::condenser_c10d_store_new(
                host.as_ptr(),
                0,
                true,
                10_000,
                prefix.as_ptr(),
                &mut server,
            )
        })
        .unwrap();
        let server = StoreGuard(NonNull::new(server).unwrap());
        let port = unsafe { ffi::condenser_c10d_store_port(server.0.as_ptr()) };
        assert_ne!(port, 0);
        let opts = (0..2)
            .map(|r| GroupOptions {
                store_server: false,
                ..options(r, 2, port, Duration::from_secs(20))
            })
            .collect();
        let out = with_ranks(opts, |rank, pg| {
            let t = Tensor::full([2], rank as f64 + 1.0, (Kind::Float, Device::Cpu));
            pg.all_reduce_sum(&t).unwrap();
            to_vec(&t)
        });
        assert_eq!(out, vec![vec![3.0; 2]; 2]);
        drop(server);
    }

    /// World size 1 on NCCL: on a GPU, an all_reduce/all_gather/broadcast/barrier round; without one,
    /// a clean error (the library loads, the constructor or first collective refuses), never an abort.
    #[test]
    fn nccl_world_of_one_or_a_clean_error() {
        let port = free_port();
        let o = GroupOptions {
            backend: BackendKind::Nccl,
            ..options(0, 1, port, Duration::from_secs(20))
        };
        let gpu = crate::device::cuda_available();
        let run = || -> Result<Vec<f32>> {
            let pg = ProcessGroup::new(&o)?;
            let t = Tensor::full([4], 2.0, (Kind::Float, Device::Cuda(0)));
            pg.all_reduce_sum(&t)?;
            let g = pg.all_gather(&t)?;
            pg.broadcast(&t, 0)?;
            pg.barrier()?;
            assert_eq!(g.size(), [4]);
            Ok(to_vec(&t.to(Device::Cpu)))
        };
        match (gpu, run()) {
            (true, Ok(v)) => assert_eq!(v, vec![2.0; 4]),
            (true, Err(e)) => panic!("NCCL on a GPU machine: {e:#}"),
            (false, Ok(_)) => panic!("NCCL without a GPU cannot work"),
            (false, Err(e)) => eprintln!("NCCL without a GPU: {e:#}"),
        }
    }

    /// A worker under real torchrun (ignored: needs the launcher), from the test binary itself:
    /// `.venv/bin/torchrun --no-python --nproc-per-node 2 target/debug/deps/condenser-<hash>
    ///  dist::c10d::tests::torchrun_worker --exact --ignored`. Every rank is a store client of the agent.
    #[test]
    #[ignore]
    fn torchrun_worker() {
        let env =
            |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} unset: run under torchrun"));
        let (rank, world_size): (usize, usize) = (
            env("RANK").parse().unwrap(),
            env("WORLD_SIZE").parse().unwrap(),
        );
        let o = GroupOptions {
            backend: BackendKind::Gloo,
            master_addr: env("MASTER_ADDR"),
            master_port: env("MASTER_PORT").parse().unwrap(),
            rank,
            world_size,
            store_server: env("TORCHELASTIC_USE_AGENT_STORE") != "True",
            prefix: format!("condenser/{}", env("TORCHELASTIC_RESTART_COUNT")),
            timeout: Duration::from_secs(30),
            gloo_host: "127.0.0.1".into(),
        };
        assert!(!o.store_server, "torchrun's agent serves the store");
        let pg = ProcessGroup::new(&o).unwrap();
        let t = Tensor::full([3], rank as f64 + 1.0, (Kind::Float, Device::Cpu));
        pg.all_reduce_sum(&t).unwrap();
        let want = (world_size * (world_size + 1) / 2) as f32;
        assert_eq!(to_vec(&t), vec![want; 3]);
        let g = to_vec(&pg.all_gather(&Tensor::from_slice(&[rank as f32])).unwrap());
        assert_eq!(g, (0..world_size).map(|r| r as f32).collect::<Vec<_>>());
        pg.barrier().unwrap();
        eprintln!("torchrun rank {rank} of {world_size}: ok");
    }
}
