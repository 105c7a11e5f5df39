//! Fuzz the frame parser and message decoder with untrusted bytes, as a GPU
//! server receives them: `cargo fuzz run frame` (nightly).
#![no_main]

use gpupool_proto::codec;
use gpupool_proto::frame::{self, DEFAULT_MAX_FRAME};
use gpupool_proto::handshake::Hello;
use gpupool_proto::message::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, msg, _, used))) = frame::split_frame(rest, DEFAULT_MAX_FRAME) {
        let _ = codec::decode::<Request>(msg);
        let _ = codec::decode::<Reply>(msg);
        let _ = codec::decode::<Hello>(msg);
        rest = &rest[used..];
    }
    let mut r = data;
    let mut msg = Vec::new();
    if let Ok(h) = frame::read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME) {
        let _ = frame::skip_bulk(&mut r, h.bulk_len);
    }
});
