//! The answer to cudart's integrity check (export table `d4082055…`, slot 1).
//!
//! cudart calls the check three times with `version` ending in 0, 1 and 2
//! and compares each answer with a value it computes itself; a wrong answer
//! stops it with error 103 ("integrity checks failed"). The first two take
//! fixed answers. The third is an HMAC over MD2 (RFC 1319, 16-byte blocks)
//! with a fixed 16-byte key, of a 48-byte record of the calling process (the
//! driver version, the `version` argument, the pid, the calling thread, the
//! addresses of the CUDART_INTERFACE table, of the integrity table and of the
//! check function itself, and the time cudart passed) followed by 28 bytes
//! per device (its UUID and its PCI domain, bus and device numbers).
//!
//! Everything in the record is the client's own (process, thread, table
//! addresses) or what the shim reports to the program for its remote devices,
//! so the answer is computed here and never on the server.

/// The MD2 substitution table (RFC 1319, built from the digits of pi).
const S: [u8; 256] = [
    41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, 98, 167, 5, 243, 192, 199, 115, 140, 152, 147,
    43, 217, 188, 76, 130, 202, 30, 155, 87, 60, 253, 212, 224, 22, 103, 66, 111, 24, 138, 23, 229, 18, 190, 78, 196,
    214, 218, 158, 222, 73, 160, 251, 245, 142, 187, 47, 238, 122, 169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16,
    137, 11, 34, 95, 33, 128, 127, 93, 154, 90, 144, 50, 39, 53, 62, 204, 231, 191, 247, 151, 3, 255, 25, 48, 179, 72,
    165, 181, 209, 215, 94, 146, 42, 172, 86, 170, 198, 79, 184, 56, 210, 150, 164, 125, 182, 118, 252, 107, 226, 156,
    116, 4, 241, 69, 157, 112, 89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, 27, 96, 37, 173, 174, 176,
    185, 246, 28, 70, 97, 105, 52, 64, 126, 15, 85, 71, 163, 35, 221, 81, 175, 58, 195, 92, 249, 206, 186, 197, 234,
    38, 44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205, 244, 65, 129, 77, 82, 106, 220, 55, 200, 108, 193, 171, 250,
    36, 225, 123, 8, 12, 189, 177, 74, 120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, 242,
    239, 183, 14, 102, 88, 208, 228, 166, 119, 114, 248, 235, 117, 75, 10, 49, 68, 80, 180, 143, 237, 31, 26, 219, 153,
    141, 51, 159, 17, 131, 20,
];

/// MD2, fed one byte at a time.
#[derive(Clone)]
pub struct Md2 {
    /// The 48-byte working buffer: state, current block, state ^ block.
    x: [u8; 48],
    /// The running checksum.
    c: [u8; 16],
    /// Bytes of the current block received so far.
    n: usize,
    /// The last checksum byte written.
    l: u8,
}

impl Default for Md2 {
    fn default() -> Self {
        Md2 {
            x: [0; 48],
            c: [0; 16],
            n: 0,
            l: 0,
        }
    }
}

impl Md2 {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        let i = self.n;
        self.x[16 + i] = b;
        self.x[32 + i] = self.x[i] ^ b;
        self.c[i] ^= S[(b ^ self.l) as usize];
        self.l = self.c[i];
        self.n = (i + 1) % 16;
        if self.n == 0 {
            self.compress();
        }
    }

    fn compress(&mut self) {
        let mut t = 0u8;
        for round in 0..18u8 {
            for v in self.x.iter_mut() {
                *v ^= S[t as usize];
                t = *v;
            }
            t = t.wrapping_add(round);
        }
    }

    pub fn finish(mut self) -> [u8; 16] {
        let pad = (16 - self.n) as u8;
        for _ in 0..pad {
            self.byte(pad);
        }
        let checksum = self.c;
        self.update(&checksum);
        let mut out = [0; 16];
        out.copy_from_slice(&self.x[..16]);
        out
    }
}

/// HMAC over MD2 with a 16-byte key (MD2's block size).
pub fn hmac_md2(key: &[u8; 16], message: &[u8]) -> [u8; 16] {
    let mut inner = Md2::default();
    inner.update(&key.map(|k| k ^ 0x36));
    inner.update(message);
    let inner = inner.finish();
    let mut outer = Md2::default();
    outer.update(&key.map(|k| k ^ 0x5c));
    outer.update(&inner);
    outer.finish()
}

/// The fixed key of the check.
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// The fixed answers for `version % 10` of 0 and 1.
const ANSWER_0: [u64; 2] = [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8];
const ANSWER_1: [u64; 2] = [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8];

/// What the check covers about the calling process.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub driver_version: u32,
    pub pid: u32,
    /// `pthread_self()`, truncated to 32 bits.
    pub thread: u32,
    pub cudart_table: u64,
    pub integrity_table: u64,
    pub check_fn: u64,
}

/// What the check covers about one device, as the program sees it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts {
    pub uuid: [u8; 16],
    pub pci_domain: i32,
    pub pci_bus: i32,
    pub pci_device: i32,
}

/// The 48-byte record the hash starts with.
fn record(caller: &Caller, version: u32, unix_seconds: u64) -> [u8; 48] {
    let mut r = [0u8; 48];
    r[0..4].copy_from_slice(&caller.driver_version.to_ne_bytes());
    r[4..8].copy_from_slice(&version.to_ne_bytes());
    r[8..12].copy_from_slice(&caller.pid.to_ne_bytes());
    r[12..16].copy_from_slice(&caller.thread.to_ne_bytes());
    r[16..24].copy_from_slice(&caller.cudart_table.to_ne_bytes());
    r[24..32].copy_from_slice(&caller.integrity_table.to_ne_bytes());
    r[32..40].copy_from_slice(&caller.check_fn.to_ne_bytes());
    r[40..48].copy_from_slice(&unix_seconds.to_ne_bytes());
    r
}

fn device_bytes(d: &DeviceFacts) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..16].copy_from_slice(&d.uuid);
    b[16..20].copy_from_slice(&d.pci_domain.to_ne_bytes());
    b[20..24].copy_from_slice(&d.pci_bus.to_ne_bytes());
    b[24..28].copy_from_slice(&d.pci_device.to_ne_bytes());
    b
}

/// The answer cudart expects, as two native-endian words.
pub fn answer(version: u32, unix_seconds: u64, caller: &Caller, devices: &[DeviceFacts]) -> [u64; 2] {
    match version % 10 {
        0 => return ANSWER_0,
        1 => return ANSWER_1,
        _ => {}
    }
    let mut message = Vec::with_capacity(48 + 28 * devices.len());
    message.extend_from_slice(&record(caller, version, unix_seconds));
    for d in devices {
        message.extend_from_slice(&device_bytes(d));
    }
    let h = hmac_md2(&KEY, &message);
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&h[..8]);
    hi.copy_from_slice(&h[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn md2(data: &[u8]) -> String {
        let mut m = Md2::default();
        m.update(data);
        hex(&m.finish())
    }

    /// The test suite of RFC 1319, appendix A.5.
    #[test]
    fn md2_matches_rfc_1319() {
        assert_eq!(md2(b""), "8350e5a3e24c153df2275c9f80692773");
        assert_eq!(md2(b"a"), "32ec01ec4a6dac72c0ab96fb34c0b5d1");
        assert_eq!(md2(b"abc"), "da853b0d3f88d99b30283a69e6ded6bb");
        assert_eq!(md2(b"message digest"), "ab4f496bfb2a530b219ff33031fe06b0");
        assert_eq!(md2(b"abcdefghijklmnopqrstuvwxyz"), "4e8ddff3650292ab5a4108c3aa47940b");
        assert_eq!(
            md2(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "d5976f79d83d3a0dc9806c3c66f3efd8"
        );
    }

    /// State as the published reverse-engineering lays it out: 48 working
    /// bytes, 16 checksum bytes, the block count and the last checksum byte.
    fn state_from(b: &[u8; 66]) -> Md2 {
        let mut m = Md2::default();
        m.x.copy_from_slice(&b[..48]);
        m.c.copy_from_slice(&b[48..64]);
        m.n = b[64] as usize;
        m.l = b[65];
        m
    }

    fn state_bytes(m: &Md2) -> [u8; 66] {
        let mut b = [0u8; 66];
        b[..48].copy_from_slice(&m.x);
        b[48..64].copy_from_slice(&m.c);
        b[64] = m.n as u8;
        b[65] = m.l;
        b
    }

    /// The inner pass over the key, checked against the state published with
    /// ZLUDA's reverse-engineered check (its `integrity_check_pass2` vector).
    #[test]
    fn key_pass_matches_published_state() {
        let mut m = Md2::default();
        m.update(&KEY.map(|k| k ^ 0x36));
        let s = state_bytes(&m);
        assert_eq!(hex(&s[..16]), "8b219a49e86d1aeef237f9b54a8c3c75");
        assert_eq!(hex(&s[48..64]), "57a110860e60441e705f67d1eb67a13d");
        assert_eq!((s[64], s[65]), (0x00, 0x3d));
    }

    /// The record pass, against the published vector (same source).
    #[test]
    fn record_pass_matches_published_state() {
        let mut m = Md2::default();
        m.update(&KEY.map(|k| k ^ 0x36));
        let caller = Caller {
            driver_version: 0x2f30,
            pid: 0x002f_a423,
            thread: 0xf79c_1000,
            cudart_table: 0x0000_7fff_f695_8240,
            integrity_table: 0x0000_7fff_f695_8220,
            check_fn: 0x0000_7fff_f2aa_f4a0,
        };
        m.update(&record(&caller, 12082, 0x682b_9cee));
        let s = state_bytes(&m);
        assert_eq!(hex(&s[..16]), "0afdabc9ff9ba0be4d303282744fa748");
        assert_eq!(hex(&s[48..64]), "6428d9e1d434c0a94988c96158dd6674");
        assert_eq!((s[64], s[65]), (0x00, 0x74));
    }

    /// One device's bytes, against the published vector (same source).
    #[test]
    fn device_pass_matches_published_state() {
        let before: [u8; 66] = [
            0x84, 0xfd, 0x93, 0x10, 0xc6, 0xdb, 0xb3, 0xbc, 0x49, 0xc2, 0x25, 0xe7, 0xda, 0x6e, 0x22, 0x6f, 0x9b, 0xbd,
            0x81, 0x59, 0xc3, 0x01, 0x9a, 0x7a, 0x26, 0x34, 0x39, 0x0f, 0x2a, 0x56, 0x13, 0xb1, 0xf6, 0xbc, 0x7f, 0xa1,
            0x8f, 0x04, 0xa5, 0x4d, 0x0d, 0x78, 0xab, 0x20, 0xf8, 0x23, 0x20, 0xa5, 0x3f, 0x67, 0x36, 0xe2, 0xde, 0x8a,
            0xe5, 0xdf, 0xe1, 0xf2, 0x03, 0x94, 0xad, 0xdc, 0x9a, 0xda, 0x00, 0xda,
        ];
        let mut m = state_from(&before);
        let mut uuid = [0u8; 16];
        for (i, w) in [0x8a2b_fe9au32, 0x382d_25ac, 0xc5ae_37ea, 0x5f32_716d]
            .iter()
            .enumerate()
        {
            uuid[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        m.update(&device_bytes(&DeviceFacts {
            uuid,
            pci_domain: 0,
            pci_bus: 2,
            pci_device: 0,
        }));
        let s = state_bytes(&m);
        assert_eq!(hex(&s[..16]), "1fd825d2dffa64c7b61aaf22b879fb96");
        assert_eq!(hex(&s[48..64]), "d7dd5f828c87ce8666afa0507a7dbbbc");
        assert_eq!((s[64], s[65]), (0x0c, 0x50));
    }

    /// Finishing, against the published vector (same source).
    #[test]
    fn finish_matches_published_digest() {
        let before: [u8; 66] = [
            0x3e, 0x4b, 0xf2, 0x95, 0x71, 0xf5, 0x6b, 0x51, 0x07, 0xbf, 0x4b, 0xf1, 0x04, 0x0e, 0x8e, 0x0b, 0x5f, 0x4d,
            0x30, 0x0c, 0x0f, 0x0c, 0xae, 0xfb, 0x48, 0xaf, 0x23, 0xb5, 0xea, 0x4c, 0xc2, 0xdb, 0xd7, 0xdf, 0x88, 0x74,
            0x39, 0x58, 0x16, 0x3a, 0x1f, 0x7c, 0x9b, 0x20, 0x7e, 0x7e, 0x94, 0xc8, 0x8b, 0xc6, 0xb2, 0x38, 0x0d, 0x07,
            0x7d, 0xbd, 0x90, 0xd5, 0x39, 0x63, 0xeb, 0x1d, 0x4f, 0x40, 0x00, 0x40,
        ];
        assert_eq!(hex(&state_from(&before).finish()), "002353065e96f69c61aa962d2ecda858");
    }

    #[test]
    fn fixed_answers_and_sensitivity() {
        let caller = Caller {
            driver_version: 13000,
            pid: 42,
            thread: 7,
            cudart_table: 0x1000,
            integrity_table: 0x2000,
            check_fn: 0x3000,
        };
        assert_eq!(answer(13000, 1, &caller, &[]), ANSWER_0);
        assert_eq!(answer(13051, 1, &caller, &[]), ANSWER_1);
        let dev = DeviceFacts {
            uuid: [1; 16],
            pci_domain: 0,
            pci_bus: 0x41,
            pci_device: 0,
        };
        let a = answer(13002, 1_700_000_000, &caller, &[dev]);
        assert_eq!(a, answer(13002, 1_700_000_000, &caller, &[dev]), "deterministic");
        let other_thread = Caller { thread: 8, ..caller };
        assert_ne!(a, answer(13002, 1_700_000_000, &other_thread, &[dev]));
        assert_ne!(a, answer(13002, 1_700_000_001, &caller, &[dev]));
        assert_ne!(a, answer(13002, 1_700_000_000, &caller, &[]));
    }
}
