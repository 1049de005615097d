//! CUDA discovery and device choice.
//!
//! tch links libtorch with `--as-needed`, so a plain binary never pulls in `libtorch_cuda.so` and
//! `tch::Cuda::is_available()` answers false even on a GPU machine. We therefore `dlopen` it with
//! RTLD_GLOBAL (its static initialisers register the CUDA backend) before asking. On a machine
//! without the library, or without a driver, everything falls back to the CPU.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

use anyhow::{bail, Result};
use serde::Serialize;

/// `--device`: where tensors live: `auto` (CUDA when available, else the CPU), `cpu`, `cuda` (the
/// first GPU, or LOCAL_RANK's under a launcher) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    /// A GPU: `None` = device 0 (under a launcher, the process's local rank).
    Cuda(Option<usize>),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(None)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(Some(n))),
                _ => Err(format!(
                    "{s:?}: expected auto, cpu, cuda or cuda:N (N a device index)"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(None) => f.write_str("cuda"),
            DeviceChoice::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// `cuda` and `auto` name the process's local rank's GPU under a launcher (torchrun, srun) when
    /// no index is given.
    /// A process that sees a single GPU (srun --gpus-per-task 1 sets CUDA_VISIBLE_DEVICES per task)
    /// takes that one.
    pub fn for_local_rank(self, local_rank: usize) -> Self {
        let visible = || {
            if cuda_available() {
                tch::Cuda::device_count() as usize
            } else {
                0
            }
        };
        let index = |n: usize| if n == 1 { 0 } else { local_rank };
        match self {
            DeviceChoice::Cuda(None) => DeviceChoice::Cuda(Some(index(visible()))),
            DeviceChoice::Auto if cuda_available() => DeviceChoice::Cuda(Some(index(visible()))),
            other => other,
        }
    }
}

/// What happened when we tried to load the CUDA backend.
#[derive(Debug, Clone, Serialize)]
pub struct CudaBackend {
    /// `libtorch_cuda.so` was loaded into the process.
    pub loaded: bool,
    /// The loader's message when it was not.
    pub error: Option<String>,
}

static CUDA_BACKEND: OnceLock<CudaBackend> = OnceLock::new();

/// Loads `libtorch_cuda.so` once (RTLD_NOW | RTLD_GLOBAL). The library is found through the binary's
/// run path (set at build time to the venv's libtorch) or LD_LIBRARY_PATH (the GPU machine's recipe).
pub fn load_cuda_backend() -> &'static CudaBackend {
    CUDA_BACKEND.get_or_init(|| {
        let name = CString::new("libtorch_cuda.so").expect("no NUL in a literal");
        // SAFETY: dlopen with a valid C string; the handle is deliberately never closed.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            let error = dl_error().unwrap_or_else(|| "unknown dlopen error".to_string());
            log::debug!("CUDA backend not loaded: {error}");
            CudaBackend {
                loaded: false,
                error: Some(error),
            }
        } else {
            log::debug!("loaded libtorch_cuda.so");
            CudaBackend {
                loaded: true,
                error: None,
            }
        }
    })
}

fn dl_error() -> Option<String> {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
    let msg = unsafe { libc::dlerror() };
    (!msg.is_null()).then(|| {
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    })
}

/// True when the CUDA backend loaded and a device is visible.
pub fn cuda_available() -> bool {
    load_cuda_backend().loaded && tch::Cuda::is_available()
}

/// Resolves `--device` to a tch device. `cpu` never touches CUDA.
pub fn select(choice: DeviceChoice) -> Result<tch::Device> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto if cuda_available() => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Auto => Ok(tch::Device::Cpu),
        DeviceChoice::Cuda(n) if cuda_available() => {
            let n = n.unwrap_or(0);
            let count = tch::Cuda::device_count() as usize;
            if n >= count {
                bail!(
                    "--device {choice}: this machine has {count} CUDA device(s), cuda:0 to cuda:{}",
                    count.saturating_sub(1)
                );
            }
            Ok(tch::Device::Cuda(n))
        }
        DeviceChoice::Cuda(_) => {
            let why = match &load_cuda_backend().error {
                Some(e) => format!("libtorch_cuda.so could not be loaded: {e}"),
                None => "libtorch reports no CUDA device (no GPU or no driver)".to_string(),
            };
            bail!("--device {choice} was asked for, but CUDA is not available: {why}")
        }
    }
}

/// Whether libtorch may run attention through cuDNN (csrc/attention.cpp). Off, it takes flash or
/// memory-efficient attention, which need no execution plan per batch shape (BENCHMARKS.md: length-grouped
/// batches on an H200).
pub fn set_cudnn_attention(enabled: bool) {
    extern "C" {
        fn condenser_sdp_use_cudnn(enabled: c_int);
    }
    // SAFETY: sets a flag in libtorch's global context; no pointers cross.
    unsafe { condenser_sdp_use_cudnn(enabled as c_int) }
}

/// Names of the visible CUDA devices, read through the CUDA runtime that libtorch_cuda brought in.
/// Empty when CUDA is not available; `cuda:N` when the runtime call cannot be found.
pub fn cuda_device_names() -> Vec<String> {
    if !cuda_available() {
        return Vec::new();
    }
    let count = tch::Cuda::device_count().max(0) as usize;
    (0..count)
        .map(|i| cuda_device_name(i as c_int).unwrap_or_else(|| format!("cuda:{i}")))
        .collect()
}

/// A CUDA runtime function, found in the global namespace where libtorch_cuda (RTLD_GLOBAL) put it.
fn cuda_runtime_symbol(name: &str) -> Option<*mut libc::c_void> {
    let sym = CString::new(name).ok()?;
    // SAFETY: looking a symbol up in the global namespace.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, sym.as_ptr()) };
    (!f.is_null()).then_some(f)
}

fn cuda_device_name(index: c_int) -> Option<String> {
    type GetProps = unsafe extern "C" fn(*mut u8, c_int) -> c_int;
    // cudaDeviceProp starts with `char name[256]`; the struct is about 1 KB, the buffer is generous so a
    // newer runtime's larger struct still fits.
    for symbol in ["cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"] {
        let Some(f) = cuda_runtime_symbol(symbol) else {
            continue;
        };
        let mut props = vec![0u8; 16 * 1024];
        // SAFETY: the symbol is the CUDA runtime's cudaGetDeviceProperties with this signature.
        let rc = unsafe {
            std::mem::transmute::<*mut libc::c_void, GetProps>(f)(props.as_mut_ptr(), index)
        };
        if rc != 0 {
            return None;
        }
        let name = unsafe { CStr::from_ptr(props.as_ptr() as *const c_char) };
        return Some(name.to_string_lossy().into_owned());
    }
    None
}

/// Device memory in use on the current CUDA device, in bytes, as the driver sees it (`cudaMemGetInfo`:
/// total - free). That is what libtorch's caching allocator holds (it keeps freed blocks for reuse, so
/// sampled after a step it is the step's peak reserve) plus the CUDA context, and whatever other
/// processes hold on that card. None without CUDA. Call it only when running on CUDA: it creates a
/// context on the current device.
pub fn cuda_memory_used() -> Option<u64> {
    if !cuda_available() {
        return None;
    }
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
    let f = cuda_runtime_symbol("cudaMemGetInfo")?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: the symbol is the CUDA runtime's cudaMemGetInfo(size_t *free, size_t *total).
    let rc =
        unsafe { std::mem::transmute::<*mut libc::c_void, MemGetInfo>(f)(&mut free, &mut total) };
    (rc == 0).then(|| (total - free) as u64)
}

/// A host tensor on `device` without stalling the host: on CUDA it is copied from pinned memory with
/// `non_blocking` (a copy from pageable memory waits for the stream: a sync per batch). `_pin_memory`,
/// because tch's `pin_memory` always passes the device argument that libtorch 2.11 warns about on
/// every call. If pinning fails the copy is a plain, blocking one.
pub fn upload(t: tch::Tensor, device: tch::Device) -> tch::Tensor {
    if device == tch::Device::Cpu {
        return t;
    }
    match t.f_internal_pin_memory(device) {
        Ok(pinned) => pinned.to_device_(device, t.kind(), true, false),
        Err(e) => {
            log::debug!("pinning a host tensor failed ({e}); copying from pageable memory");
            t.to_device(device)
        }
    }
}

/// The libtorch the process actually runs on: the version file beside the loaded `libtorch_cpu.so`
/// (`torch/version.py` of a wheel, `build-version` of a libtorch zip), found through /proc/self/maps.
pub fn runtime_libtorch() -> Option<(String, String)> {
    // Make sure libtorch is mapped before looking (it is, once any tch call ran).
    let _ = tch::get_num_threads();
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))?;
    let dir = std::path::Path::new(lib).parent()?.parent()?;
    let version = libtorch_version_in(dir)?;
    Some((version, dir.display().to_string()))
}

/// Reads the version of a libtorch folder (the wheel's `torch/` or an unpacked libtorch zip).
pub fn libtorch_version_in(dir: &std::path::Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=', ':']).trim();
                let v = v.rsplit_once('=').map(|(_, v)| v.trim()).unwrap_or(v);
                return Some(v.trim_matches(['\'', '"']).to_string());
            }
        }
    }
    std::fs::read_to_string(dir.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Everything `condenser env` reports.
#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub condenser_version: String,
    pub libtorch_version: Option<String>,
    pub libtorch_path: Option<String>,
    pub cuda_backend_loaded: bool,
    pub cuda_backend_error: Option<String>,
    pub cuda_available: bool,
    pub cudnn_available: bool,
    pub cuda_devices: Vec<String>,
    pub selected_device: String,
    pub torch_threads: i32,
    pub torch_interop_threads: i32,
    pub rayon_threads: usize,
    pub cpu_cores: usize,
}

impl EnvReport {
    pub fn gather(choice: DeviceChoice) -> Result<Self> {
        let backend = load_cuda_backend();
        let selected = select(choice)?;
        let (libtorch_version, libtorch_path) = match runtime_libtorch() {
            Some((v, p)) => (Some(v), Some(p)),
            None => (None, None),
        };
        Ok(EnvReport {
            condenser_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version,
            libtorch_path,
            cuda_backend_loaded: backend.loaded,
            cuda_backend_error: backend.error.clone(),
            cuda_available: cuda_available(),
            cudnn_available: cuda_available() && tch::Cuda::cudnn_is_available(),
            cuda_devices: cuda_device_names(),
            selected_device: device_label(selected),
            torch_threads: tch::get_num_threads(),
            torch_interop_threads: tch::get_num_interop_threads(),
            rayon_threads: rayon::current_num_threads(),
            cpu_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        })
    }
}

/// `cpu` or `cuda:N`.
pub fn device_label(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".to_string(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl std::fmt::Display for EnvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".to_string());
        writeln!(f, "condenser        {}", self.condenser_version)?;
        writeln!(
            f,
            "libtorch         {} ({})",
            or_unknown(&self.libtorch_version),
            or_unknown(&self.libtorch_path)
        )?;
        let backend = if self.cuda_backend_loaded {
            "loaded".to_string()
        } else {
            format!("not loaded: {}", or_unknown(&self.cuda_backend_error))
        };
        writeln!(f, "cuda backend     {backend}")?;
        writeln!(f, "cuda available   {}", self.cuda_available)?;
        writeln!(f, "cudnn available  {}", self.cudnn_available)?;
        if self.cuda_devices.is_empty() {
            writeln!(f, "cuda devices     none")?;
        }
        for (i, name) in self.cuda_devices.iter().enumerate() {
            writeln!(f, "cuda device {i}    {name}")?;
        }
        writeln!(f, "device           {}", self.selected_device)?;
        writeln!(
            f,
            "threads          torch {} (inter-op {}), rayon {}, cores {}",
            self.torch_threads, self.torch_interop_threads, self.rayon_threads, self.cpu_cores
        )
    }
}
