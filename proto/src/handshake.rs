//! The opening exchange of a session: the client says who it is and what it
//! holds, the server answers with what it offers or why it refuses.

use serde::{Deserialize, Serialize};

/// Bytes every `Hello` starts with, so a stray connection fails fast.
pub const MAGIC: [u8; 8] = *b"GPUPOOL\0";

/// Client to server, first frame of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub version: u32,
    /// The lease token issued by the broker, presented before the first call.
    /// Its format and verification are in [`crate::lease`].
    pub lease_token: Option<String>,
    pub client: ClientInfo,
    /// The ticket of a `Welcome::Redirect`, presented on the connection it
    /// redirected to.
    pub session_ticket: Option<[u8; 32]>,
    /// The client's `CUDA_VISIBLE_DEVICES`, when set: the session shows
    /// those of the server's devices ([`crate::visible`]).
    pub visible_devices: Option<String>,
    /// The driver's own environment variables the program set (those of
    /// [`DRIVER_ENV`]), which the session's driver on the server reads as a
    /// local driver would. Version 17.
    pub driver_env: Vec<(String, String)>,
}

/// The driver's environment variables that change how it runs a program's
/// work, and that mean the same on the server: the session's worker runs
/// its driver with the program's values. (Those naming paths of the
/// program's machine, such as `CUDA_CACHE_PATH`, are not among them.)
pub const DRIVER_ENV: &[&str] = &[
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_DEVICE_ORDER",
    "CUDA_DEVICE_MAX_CONNECTIONS",
    "CUDA_DEVICE_MAX_COPY_CONNECTIONS",
    "CUDA_MODULE_LOADING",
    "CUDA_MODULE_DATA_LOADING",
    "CUDA_AUTO_BOOST",
    "CUDA_SCALE_LAUNCH_QUEUES",
    "CUDA_GRAPHS_USE_NODE_PRIORITY",
    "CUDA_DISABLE_PTX_JIT",
    "CUDA_FORCE_PTX_JIT",
    "CUDA_CACHE_DISABLE",
    "CUDA_CACHE_MAXSIZE",
];

/// The longest value of a driver variable a hello may carry.
pub const MAX_DRIVER_ENV_VALUE: usize = 256;

/// The driver variables this process has, to tell in the hello.
pub fn driver_env_of_process() -> Vec<(String, String)> {
    DRIVER_ENV
        .iter()
        .filter_map(|&name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect()
}

/// Those of `env` a server passes on: named in [`DRIVER_ENV`], each once,
/// with a value of at most [`MAX_DRIVER_ENV_VALUE`] bytes and no NUL.
pub fn accepted_driver_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (name, value) in env {
        let known = DRIVER_ENV.contains(&name.as_str());
        let fits = value.len() <= MAX_DRIVER_ENV_VALUE && !value.contains('\0');
        if known && fits && !out.iter().any(|(n, _)| n == name) {
            out.push((name, value));
        }
    }
    out
}

/// Who the client is, for logs and accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub host: String,
    pub pid: u32,
    pub program: String,
}

/// Server to client, answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Welcome {
    Accepted(SessionInfo),
    Refused {
        reason: String,
    },
    /// The session waits on another QUIC port of the same host (a worker
    /// process that terminates QUIC itself): connect there, with the same
    /// certificate check, and present `ticket` in the hello.
    Redirect {
        port: u16,
        ticket: [u8; 32],
    },
}

/// What the server offers this session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub version: u32,
    pub server_id: String,
    pub session_id: u64,
    pub driver_version: i32,
    /// The version of the server's NVIDIA kernel driver (`580.159.04`),
    /// what NVML's `nvmlSystemGetDriverVersion` answers; empty when the
    /// server has none (the software driver).
    pub kernel_driver: String,
    /// True when the server runs on the software driver (no real GPU).
    pub simulated: bool,
    pub devices: Vec<DeviceInfo>,
    /// Every GPU of the server's machine that the session may know of, as
    /// NVML numbers them there (the daemon's order): the session's devices
    /// and those `CUDA_VISIBLE_DEVICES` keeps from it, which NVML still
    /// describes (NCCL finds its peers' GPUs so). A leased session's machine
    /// is its lease's GPUs. Version 17.
    pub machine: Vec<MachineGpu>,
    /// Driver functions, by the names `cuGetProcAddress` takes, that the
    /// server's driver lacks and the server does not stand in for (a driver
    /// older than CUDA 12.5: green contexts, context-wide events, ...).
    /// Version 19.
    pub unserved: Vec<String>,
}

/// A GPU of the server's machine, as NVML describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineGpu {
    pub name: String,
    pub uuid: [u8; 16],
    pub total_mem: u64,
    /// PCI domain, bus and device.
    pub pci: [u32; 3],
    /// Compute capability (major, minor).
    pub compute_capability: [i32; 2],
    /// The indices (in the machine's list) of the GPUs whose memory this
    /// one can access, and of those it reaches with native atomics.
    pub peers: Vec<u32>,
    pub atomic_peers: Vec<u32>,
    /// The PCI address (domain, bus, device) at the far end of each of its
    /// active NVLinks: another GPU, or an NVSwitch.
    pub nvlinks: Vec<[u32; 3]>,
}

impl MachineGpu {
    /// Those of `machine` that `keep` (UUIDs) names, in the machine's
    /// order, with their peers renumbered within the list kept.
    pub fn keep_only(machine: &[MachineGpu], keep: &[[u8; 16]]) -> Vec<MachineGpu> {
        let kept: Vec<usize> = (0..machine.len())
            .filter(|&i| keep.contains(&machine[i].uuid))
            .collect();
        let renumber = |old: &[u32]| -> Vec<u32> {
            old.iter()
                .filter_map(|&o| kept.iter().position(|&k| k == o as usize).map(|n| n as u32))
                .collect()
        };
        kept.iter()
            .map(|&i| {
                let g = &machine[i];
                MachineGpu {
                    peers: renumber(&g.peers),
                    atomic_peers: renumber(&g.atomic_peers),
                    ..g.clone()
                }
            })
            .collect()
    }
}

/// A device as the client sees it. Everything the driver would answer about
/// it that cannot change is here, so the shim answers locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: [u8; 16],
    pub total_mem: u64,
    /// `(attribute number, value)` for every `CUdevice_attribute` the server's
    /// driver answered.
    pub attributes: Vec<(i32, i32)>,
    /// How this device reaches each other device of the session, as the
    /// server's driver answers (`cuDeviceCanAccessPeer`,
    /// `cuDeviceGetP2PAttribute`): one entry per other device.
    pub peers: Vec<PeerLink>,
}

/// What the server's driver says of one device's link to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLink {
    /// The other device's ordinal in the session.
    pub peer: i32,
    /// `cuDeviceCanAccessPeer(device, peer)`.
    pub can_access: bool,
    /// `(CUdevice_P2PAttribute, value)` for each attribute the driver
    /// answered.
    pub attributes: Vec<(i32, i32)>,
}

/// NVML's spelling of a device UUID (also the pool's, in the broker): `GPU-`
/// and the 16 bytes as 8-4-4-4-12 lowercase hexadecimal digits.
pub fn gpu_uuid_string(uuid: &[u8; 16]) -> String {
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

impl Hello {
    pub fn new(lease_token: Option<String>, client: ClientInfo) -> Hello {
        Hello {
            magic: MAGIC,
            version: crate::PROTOCOL_VERSION,
            lease_token,
            client,
            session_ticket: None,
            visible_devices: None,
            driver_env: Vec::new(),
        }
    }

    /// Check magic and version; the caller checks credentials.
    pub fn validate(&self) -> Result<(), crate::ProtoError> {
        if self.magic != MAGIC {
            return Err(crate::ProtoError::Malformed("hello has the wrong magic bytes".into()));
        }
        if self.version != crate::PROTOCOL_VERSION {
            return Err(crate::ProtoError::VersionMismatch {
                peer: self.version,
                ours: crate::PROTOCOL_VERSION,
            });
        }
        Ok(())
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, trimmed);
/// `None` when it cannot be read.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_kept_to_some_gpus_renumbers_their_peers() {
        let gpu = |n: u8, peers: &[u32]| MachineGpu {
            name: format!("GPU {n}"),
            uuid: [n; 16],
            total_mem: 1,
            pci: [0, n as u32, 0],
            compute_capability: [9, 0],
            peers: peers.to_vec(),
            atomic_peers: vec![],
            nvlinks: vec![],
        };
        let machine = vec![gpu(0, &[1, 2]), gpu(1, &[0, 2]), gpu(2, &[0, 1])];
        let kept = MachineGpu::keep_only(&machine, &[[2; 16], [0; 16]]);
        assert_eq!(kept.iter().map(|g| g.uuid[0]).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(kept[0].peers, [1]);
        assert_eq!(kept[1].peers, [0]);
    }

    #[test]
    fn only_the_drivers_own_variables_pass_once_each() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        let long = "1".repeat(MAX_DRIVER_ENV_VALUE + 1);
        let given = env(&[
            ("CUDA_LAUNCH_BLOCKING", "1"),
            ("CUDA_CACHE_PATH", "/home/x/.nv"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("CUDA_LAUNCH_BLOCKING", "0"),
            ("CUDA_DEVICE_MAX_CONNECTIONS", &long),
            ("CUDA_MODULE_LOADING", "LA\0ZY"),
            ("CUDA_AUTO_BOOST", "0"),
        ]);
        assert_eq!(
            accepted_driver_env(&given),
            [("CUDA_LAUNCH_BLOCKING", "1"), ("CUDA_AUTO_BOOST", "0")]
        );
    }

    #[test]
    fn uuid_is_spelled_as_nvml_does() {
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        assert_eq!(gpu_uuid_string(&uuid), "GPU-12345678-9abc-def0-0123-456789abcdef");
        let uuid = [
            0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xff,
        ];
        let s = gpu_uuid_string(&uuid);
        assert_eq!(s, "GPU-deadbeef-0102-0304-0506-a0b0c0d0e0ff");
        assert_eq!(s.len(), 40);
        assert_eq!(gpu_uuid_string(&[0; 16]), "GPU-00000000-0000-0000-0000-000000000000");
    }
}
