//! NVML's initialisation state: `nvmlInit*` and `nvmlShutdown` are counted,
//! every other call needs the count above zero. The driver and the device
//! table are read at the first successful initialisation and kept for the
//! life of the process (the session's devices cannot change), so handles
//! stay valid across a shutdown and a new initialisation, as NVML's do.

use crate::cuda::{Cuda, DeviceStatus, LoadError};
use crate::devices::{Device, DeviceTable};
use crate::error::{from_cuda, NvmlError, NvmlResult};
use std::sync::{Mutex, OnceLock};

/// The driver and what it told about the devices.
pub struct Backend {
    cuda: Cuda,
    pub devices: DeviceTable,
    /// `cuDriverGetVersion`.
    pub cuda_version: i32,
    /// The server's NVIDIA kernel driver version, when it has one.
    pub kernel_driver: Option<String>,
}

impl Backend {
    fn open() -> NvmlResult<Backend> {
        let cuda = Cuda::load().map_err(|e| {
            report(&e.to_string());
            match e {
                LoadError::NotFound(_) => NvmlError::DRIVER_NOT_LOADED,
                LoadError::NotGpupool | LoadError::MissingSymbol(..) => NvmlError::LIBRARY_NOT_FOUND,
            }
        })?;
        let fail = |what: &str, status: u32| {
            report(&format!(
                "gpupool's libcuda.so.1 failed {what} (CUDA status {status}); its own log says why (GPUPOOL_LOG=info)"
            ));
            from_cuda(status)
        };
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        cuda.init().map_err(|s| {
            if s == 100 && visible.as_deref().is_some_and(gpupool_proto::visible::shows_none) {
                // The program hid every GPU: nothing to report.
                from_cuda(s)
            } else {
                fail("cuInit", s)
            }
        })?;
        let cuda_version = cuda.driver_version().map_err(|s| fail("cuDriverGetVersion", s))?;
        let count = cuda.device_count().map_err(|s| fail("cuDeviceGetCount", s))?;
        let mut devices = (0..count)
            .map(|i| cuda.device(i).map_err(|s| fail("to describe a device", s)))
            .collect::<NvmlResult<Vec<_>>>()?;
        let kernel_driver = cuda.kernel_driver_version();
        // The machine's GPUs, with their links, where the shim tells them,
        // each at its NVML index; else the session's alone, placed by
        // CUDA_VISIBLE_DEVICES, with the links the driver tells between them.
        let devices = match cuda.machine() {
            Some(machine) if !machine.is_empty() => DeviceTable::from_machine(machine, devices),
            _ => {
                for d in &mut devices {
                    cuda.fill_peers(d, count);
                }
                DeviceTable::placed(devices, visible.as_deref())
            }
        };
        Ok(Backend {
            cuda,
            devices,
            cuda_version,
            kernel_driver,
        })
    }

    /// What `device` holds and does now: `NVML_ERROR_NO_PERMISSION` for a
    /// GPU of the machine the session does not have.
    pub fn status(&self, device: &Device) -> NvmlResult<DeviceStatus> {
        let ordinal = device.ordinal.ok_or(NvmlError::NO_PERMISSION)?;
        self.cuda.status(ordinal).map_err(from_cuda)
    }
}

static BACKEND: OnceLock<NvmlResult<Backend>> = OnceLock::new();
static INITS: Mutex<u32> = Mutex::new(0);

fn inits() -> std::sync::MutexGuard<'static, u32> {
    INITS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Say why NVML cannot work, once: through `tracing` if the program set a
/// subscriber, else on standard error (a library loaded by C programs has no
/// subscriber of its own).
fn report(reason: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("gpupool NVML: {reason}");
    } else {
        eprintln!("gpupool NVML: {reason}");
    }
}

/// `nvmlInit*`: open the backend on first use and count the initialisation.
pub fn init() -> NvmlResult {
    let mut n = inits();
    BACKEND.get_or_init(Backend::open).as_ref().map_err(|e| *e)?;
    *n = n.saturating_add(1);
    Ok(())
}

/// `nvmlShutdown`: count one initialisation off.
pub fn shutdown() -> NvmlResult {
    let mut n = inits();
    if *n == 0 {
        return Err(NvmlError::UNINITIALIZED);
    }
    *n -= 1;
    Ok(())
}

/// The backend, for a call made while NVML is initialised.
pub fn backend() -> NvmlResult<&'static Backend> {
    if *inits() == 0 {
        return Err(NvmlError::UNINITIALIZED);
    }
    match BACKEND.get() {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(*e),
        None => Err(NvmlError::UNINITIALIZED),
    }
}

/// Whether NVML is initialised now.
pub fn initialised() -> bool {
    *inits() > 0
}
