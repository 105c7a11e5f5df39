//! What only NVML knows about a GPU the server runs: utilisation,
//! temperature, power, and device-wide memory use. NVML (`libnvidia-ml.so.1`)
//! is loaded at run time through `nvml-wrapper`; a server without it (no
//! NVIDIA driver, as on the software driver in tests and CI) still serves,
//! and reports these as unknown.
//!
//! Devices are matched by UUID, not by index: CUDA's ordinals and NVML's
//! indices differ when `CUDA_VISIBLE_DEVICES` reorders or hides devices.

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
        let device = match nvml.device_by_uuid(uuid_string(uuid)) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(uuid = %uuid_string(uuid), "NVML does not know this CUDA device: {e}");
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

/// NVML's spelling of a device UUID: `GPU-` and the 16 bytes as 8-4-4-4-12
/// lowercase hex digits.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_spelled_as_nvml_does() {
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        assert_eq!(uuid_string(&uuid), "GPU-12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn absent_nvml_samples_nothing() {
        let n = ServerNvml::absent();
        assert!(!n.available());
        assert_eq!(n.sample(&[0; 16]), None);
    }
}
