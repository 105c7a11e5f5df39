//! How NVML spells device identities: UUIDs and PCI bus ids. Plain
//! functions over values.

/// A device's place on the PCI bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
}

impl PciAddress {
    /// `nvmlPciInfo_t.busId`: `%08X:%02X:%02X.0`, e.g. `00000000:41:00.0`.
    pub fn bus_id(&self) -> String {
        format!("{:08X}:{:02X}:{:02X}.0", self.domain, self.bus, self.device)
    }

    /// `nvmlPciInfo_t.busIdLegacy`: `%04X:%02X:%02X.0`, e.g. `0000:41:00.0`.
    pub fn bus_id_legacy(&self) -> String {
        format!("{:04X}:{:02X}:{:02X}.0", self.domain, self.bus, self.device)
    }

    /// Read a bus id in any form `nvmlDeviceGetHandleByPciBusId` accepts
    /// (hexadecimal, any case): `domain:bus:device.function`,
    /// `domain:bus:device`, or `bus:device.function`. Returns the address and
    /// the function number.
    pub fn parse(text: &str) -> Option<(PciAddress, u32)> {
        let hex = |s: &str| -> Option<u32> {
            if s.is_empty() || s.len() > 8 {
                return None;
            }
            u32::from_str_radix(s, 16).ok()
        };
        let text = text.trim();
        let (head, function) = match text.rsplit_once('.') {
            Some((h, f)) => (h, Some(hex(f)?)),
            None => (text, None),
        };
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match (parts.as_slice(), function) {
            ([d, b, v], _) => (hex(d)?, hex(b)?, hex(v)?),
            ([b, v], Some(_)) => (0, hex(b)?, hex(v)?),
            _ => return None,
        };
        Some((PciAddress { domain, bus, device }, function.unwrap_or(0)))
    }
}

/// A CUDA version number (1000 × major + 10 × minor) as `major.minor`.
pub fn cuda_version(version: i32) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_id_format() {
        let a = PciAddress {
            domain: 0,
            bus: 0x41,
            device: 0,
        };
        assert_eq!(a.bus_id(), "00000000:41:00.0");
        assert_eq!(a.bus_id_legacy(), "0000:41:00.0");
        let b = PciAddress {
            domain: 0x1a,
            bus: 0xb,
            device: 0x1f,
        };
        assert_eq!(b.bus_id(), "0000001A:0B:1F.0");
    }

    #[test]
    fn bus_id_parsing_takes_every_nvml_form() {
        let a = PciAddress {
            domain: 0,
            bus: 0x41,
            device: 0,
        };
        assert_eq!(PciAddress::parse("00000000:41:00.0"), Some((a, 0)));
        assert_eq!(PciAddress::parse("0000:41:00.0"), Some((a, 0)));
        assert_eq!(PciAddress::parse("0:41:0"), Some((a, 0)));
        assert_eq!(PciAddress::parse("41:00.0"), Some((a, 0)));
        assert_eq!(PciAddress::parse("0000:41:00.1"), Some((a, 1)));
        assert_eq!(PciAddress::parse("0000:4a:00.0").map(|(p, _)| p.bus), Some(0x4a));
        assert_eq!(PciAddress::parse("0000:4A:00.0").map(|(p, _)| p.bus), Some(0x4a));
        for bad in [
            "",
            "41",
            "41:00",
            "zz:00.0",
            "0:0:0:0.0",
            "000000000:41:00.0",
            "0000:41:.0",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cuda_versions() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12040), "12.4");
    }
}
