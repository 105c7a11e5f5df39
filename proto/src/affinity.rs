//! CPU placement on both ends: CPU lists, the CPUs of a NUMA node, the NUMA
//! node of the network device that carries traffic to a peer, and pinning
//! (`sched_setaffinity`). The server pins each worker near its GPUs; the shim
//! pins its I/O threads near the NIC that reaches the server.
//!
//! Every path under `/sys` is taken relative to a root the caller gives, so
//! that tests can use a tree of their own.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

/// A kernel CPU list ("0-3,8,10-11"); `None` when malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// A sysfs `numa_node` file: `None` for -1 (no NUMA) or unreadable.
pub fn read_numa_node(path: &Path) -> Option<u16> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .map(|n| n as u16)
}

/// The CPUs of NUMA node `node`.
pub fn node_cpus(sysfs: &Path, node: u16) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(sysfs.join(format!("devices/system/node/node{node}/cpulist"))).ok()?;
    parse_cpu_list(&text).filter(|c| !c.is_empty())
}

/// The local address the kernel would use to reach `peer` (no packet is
/// sent: a UDP socket is only connected).
pub fn local_ip_towards(peer: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The name of the network interface that holds address `ip`.
pub fn interface_of(ip: IpAddr) -> Option<String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with
    // freeifaddrs; each node's fields are valid until then.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut node = list;
        while !node.is_null() {
            let ifa = &*node;
            node = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let addr = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            if addr == ip {
                found = Some(std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned());
                break;
            }
        }
        libc::freeifaddrs(list);
        found
    }
}

/// The CPUs of the NUMA node of network interface `name`; `None` for a
/// virtual interface (loopback, bridges) or a machine without NUMA.
pub fn interface_cpus(sysfs: &Path, name: &str) -> Option<Vec<u32>> {
    let node = read_numa_node(&sysfs.join(format!("class/net/{name}/device/numa_node")))?;
    node_cpus(sysfs, node)
}

/// The CPUs near the NIC that carries traffic to `peer`.
pub fn cpus_towards(peer: SocketAddr) -> Option<Vec<u32>> {
    let name = interface_of(local_ip_towards(peer)?)?;
    interface_cpus(Path::new("/sys"), &name)
}

/// A CPU set built ahead of time, so that applying it (in a forked child
/// before `exec`) is one async-signal-safe system call.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// `None` when `cpus` names no CPU the kernel's set can hold.
    pub fn new(cpus: &[u32]) -> Option<CpuSet> {
        let cpus: Vec<usize> = cpus
            .iter()
            .map(|&c| c as usize)
            .filter(|&c| c < libc::CPU_SETSIZE as usize)
            .collect();
        if cpus.is_empty() {
            return None;
        }
        // SAFETY: cpu_set_t is plain bits; all-zero is the empty set, and
        // CPU_SET is given indices below CPU_SETSIZE (filtered above).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            Some(CpuSet(set))
        }
    }

    /// Pin thread (or process) `tid`; 0 is the calling thread. Only a system
    /// call: safe between `fork` and `exec`.
    pub fn apply(&self, tid: i32) -> std::io::Result<()> {
        // SAFETY: the set is a valid cpu_set_t of the size passed.
        let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// The CPUs thread or process `tid` may run on (0: the calling thread).
pub fn affinity_of(tid: i32) -> Option<Vec<u32>> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into `set`, which we own; CPU_ISSET reads it within CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .map(|c| c as u32)
                .collect(),
        )
    }
}

/// Pin every thread of this process whose name is `name` (as `comm` shows
/// it); returns how many were pinned.
pub fn pin_threads_named(name: &str, set: &CpuSet) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&tid| set.apply(tid).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_or_are_refused() {
        assert_eq!(parse_cpu_list("0-2,5\n"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn an_interface_leads_to_the_cpus_of_its_node() {
        let sysfs = std::env::temp_dir().join(format!("gpupool-affinity-{}", std::process::id()));
        std::fs::create_dir_all(sysfs.join("class/net/ib0/device")).unwrap();
        std::fs::write(sysfs.join("class/net/ib0/device/numa_node"), "1\n").unwrap();
        std::fs::create_dir_all(sysfs.join("class/net/lo")).unwrap();
        std::fs::create_dir_all(sysfs.join("devices/system/node/node1")).unwrap();
        std::fs::write(sysfs.join("devices/system/node/node1/cpulist"), "4-7\n").unwrap();
        assert_eq!(interface_cpus(&sysfs, "ib0"), Some(vec![4, 5, 6, 7]));
        assert_eq!(interface_cpus(&sysfs, "lo"), None);
        std::fs::remove_dir_all(&sysfs).unwrap();
    }

    #[test]
    fn loopback_traffic_leaves_through_lo_which_has_no_node() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ip = local_ip_towards(peer).expect("a route to loopback");
        assert!(ip.is_loopback());
        assert_eq!(interface_of(ip).as_deref(), Some("lo"));
        assert_eq!(cpus_towards(peer), None);
    }

    #[test]
    fn a_thread_pins_itself_and_reads_it_back() {
        let all = affinity_of(0).expect("own affinity");
        let first = all[0];
        std::thread::Builder::new()
            .name("gpupool-pin-test".into())
            .spawn(move || {
                CpuSet::new(&[first]).unwrap().apply(0).unwrap();
                assert_eq!(affinity_of(0), Some(vec![first]));
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(CpuSet::new(&[]).is_none());
    }

    #[test]
    fn threads_are_found_and_pinned_by_name() {
        let first = affinity_of(0).expect("own affinity")[0];
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("gpupool-pn-test".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                let _ = done_rx.recv();
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        assert_eq!(pin_threads_named("gpupool-pn-test", &CpuSet::new(&[first]).unwrap()), 1);
        assert_eq!(affinity_of(tid), Some(vec![first]));
        assert_eq!(pin_threads_named("no-such-thread", &CpuSet::new(&[first]).unwrap()), 0);
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
