//! What only NVML knows about a GPU the server runs: utilisation,
//! temperature, power, and device-wide memory use. NVML (`libnvidia-ml.so.1`)
//! is loaded at run time through `nvml-wrapper`; a server without it (no
//! NVIDIA driver, as on the software driver in tests and CI) still serves,
//! and reports these as unknown.
//!
//! Devices are matched by UUID, not by index: CUDA's ordinals and NVML's
//! indices differ when `CUDA_VISIBLE_DEVICES` reorders or hides devices.

use gpupool_proto::handshake::gpu_uuid_string;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;

/// One reading of a device. A field is `None` when NVML could not answer it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Device-wide (total, free, used) bytes.
    pub memory: Option<(u64, u64, u64)>,
    /// (GPU, memory) utilisation in percent over NVML's last sample period.
    pub utilization: Option<(u32, u32)>,
    pub temperature_c: Option<u32>,
    pub power_mw: Option<u32>,
}

/// NVML on this server, if it could be loaded.
pub struct ServerNvml {
    nvml: Option<Nvml>,
}

impl ServerNvml {
    /// Load and initialise NVML; on failure, remember that there is none.
    pub fn load() -> ServerNvml {
        match Nvml::init() {
            Ok(nvml) => ServerNvml { nvml: Some(nvml) },
            Err(e) => {
                tracing::info!(
                    "NVML is not available on this server ({e}); GPU utilisation, temperature and power are reported as unknown"
                );
                ServerNvml { nvml: None }
            }
        }
    }

    /// A server that reports nothing from NVML.
    pub fn absent() -> ServerNvml {
        ServerNvml { nvml: None }
    }

    pub fn available(&self) -> bool {
        self.nvml.is_some()
    }

    /// Read the device with this CUDA UUID; `None` when there is no NVML or
    /// NVML does not know the device.
    pub fn sample(&self, uuid: &[u8; 16]) -> Option<Sample> {
        let nvml = self.nvml.as_ref()?;
        let device = match nvml.device_by_uuid(gpu_uuid_string(uuid)) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(uuid = %gpu_uuid_string(uuid), "NVML does not know this CUDA device: {e}");
                return None;
            }
        };
        Some(Sample {
            memory: device.memory_info().ok().map(|m| (m.total, m.free, m.used)),
            utilization: device.utilization_rates().ok().map(|u| (u.gpu, u.memory)),
            temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
            power_mw: device.power_usage().ok(),
        })
    }
}

/// NVLink links a device has (NVML's `NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINKS: u32 = 18;

impl ServerNvml {
    /// The PCI addresses (domain, bus, device) of what this device's active
    /// NVLink links reach: other GPUs, or NVSwitches. Empty without NVML.
    pub fn nvlink_remotes(&self, uuid: &[u8; 16]) -> Vec<(u32, u32, u32)> {
        let Some(nvml) = self.nvml.as_ref() else {
            return Vec::new();
        };
        let Ok(device) = nvml.device_by_uuid(gpu_uuid_string(uuid)) else {
            return Vec::new();
        };
        (0..MAX_NVLINKS)
            .filter_map(|link| {
                let link = device.link_wrapper_for(link);
                if !link.is_active().unwrap_or(false) {
                    return None;
                }
                link.remote_pci_info().ok().map(|p| (p.domain, p.bus, p.device))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_nvml_samples_nothing() {
        let n = ServerNvml::absent();
        assert!(!n.available());
        assert_eq!(n.sample(&[0; 16]), None);
    }
}
