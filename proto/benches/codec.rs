//! Encode/decode cost of the two frames that matter most: a kernel launch
//! (the hot streamed call) and a 1 MiB host-to-device copy chunk.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gpupool_proto::codec;
use gpupool_proto::frame::{self, DEFAULT_MAX_FRAME};
use gpupool_proto::message::{Launch, Request, StreamRef};

fn launch() -> Request {
    Request::Launch(Launch {
        ctx: 0x5555_0000_1000,
        func: 0x5555_0000_2000,
        kernel: false,
        grid: [1024, 1, 1],
        block: [256, 1, 1],
        shared_mem: 0,
        stream: StreamRef::Handle(0x5555_0000_3000),
        attrs: Vec::new(),
    })
}

fn bench(c: &mut Criterion) {
    let params = [0u8; 32];
    let mut scratch = Vec::new();
    let mut g = c.benchmark_group("launch");
    g.bench_function("encode frame", |b| {
        b.iter(|| frame::encode_frame(&mut scratch, 42, 0, black_box(&launch()), &params, DEFAULT_MAX_FRAME).unwrap())
    });
    frame::encode_frame(&mut scratch, 42, 0, &launch(), &params, DEFAULT_MAX_FRAME).unwrap();
    let wire = scratch.clone();
    g.bench_function("decode frame", |b| {
        b.iter(|| {
            let (_, msg, bulk, _) = frame::split_frame(black_box(&wire), DEFAULT_MAX_FRAME)
                .unwrap()
                .unwrap();
            let r: Request = codec::decode(msg).unwrap();
            black_box((r, bulk.len()))
        })
    });
    g.finish();

    let chunk = vec![0xa5u8; 1 << 20];
    let copy = Request::MemcpyHtoD {
        ctx: 1,
        stream: StreamRef::Legacy,
        dst: 0x7000_0000,
        offset: 0,
        total: 1 << 20,
    };
    let mut g = c.benchmark_group("copy 1 MiB");
    g.throughput(Throughput::Bytes(1 << 20));
    let mut sink = Vec::with_capacity(2 << 20);
    g.bench_function("write frame", |b| {
        b.iter(|| {
            sink.clear();
            frame::write_frame(
                &mut sink,
                &mut scratch,
                7,
                0,
                black_box(&copy),
                &chunk,
                DEFAULT_MAX_FRAME,
            )
            .unwrap();
        })
    });
    frame::write_frame(&mut sink, &mut scratch, 7, 0, &copy, &chunk, DEFAULT_MAX_FRAME).unwrap();
    let wire = sink.clone();
    let mut dst = vec![0u8; 1 << 20];
    let mut msg = Vec::new();
    g.bench_function("read frame into destination", |b| {
        b.iter(|| {
            let mut r = &wire[..];
            let h = frame::read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME).unwrap();
            let _: Request = codec::decode(&msg).unwrap();
            frame::read_bulk(&mut r, &mut dst[..h.bulk_len as usize]).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
