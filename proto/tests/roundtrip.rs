//! Property tests: every request and reply survives encode/decode, and
//! arbitrary bytes never panic the frame parser.

use gpupool_proto::codec;
use gpupool_proto::frame::{self, DEFAULT_MAX_FRAME};
use gpupool_proto::message::{Launch, OccupancyQuery, Reply, Request, StreamRef};
use proptest::prelude::*;

fn stream() -> impl Strategy<Value = StreamRef> {
    prop_oneof![
        Just(StreamRef::Legacy),
        any::<u64>().prop_map(StreamRef::PerThread),
        any::<u64>().prop_map(StreamRef::Handle)
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u64>(), stream(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(ctx, stream, dst, offset, total)| Request::MemcpyHtoD {
                ctx,
                stream,
                dst,
                offset,
                total
            }
        ),
        (any::<u64>(), stream(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(ctx, stream, src, len, sync)| Request::MemcpyDtoH {
                ctx,
                stream,
                src,
                len,
                sync
            }
        ),
        (any::<u64>(), any::<u64>(), ".{0,40}").prop_map(|(ctx, module, name)| Request::ModuleGetFunction {
            ctx,
            module,
            name
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<[u32; 3]>(),
            any::<[u32; 3]>(),
            any::<u32>(),
            stream(),
            prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u8>(), 64)), 0..3)
        )
            .prop_map(
                |(ctx, func, kernel, grid, block, shared_mem, stream, attrs)| Request::Launch(Launch {
                    ctx,
                    func,
                    kernel,
                    grid,
                    block,
                    shared_mem,
                    stream,
                    attrs
                })
            ),
        (any::<u64>(), any::<u64>(), any::<i32>(), any::<u64>(), any::<u32>()).prop_map(
            |(ctx, func, block_size, dynamic_smem, flags)| Request::Occupancy {
                ctx,
                func,
                query: OccupancyQuery::MaxActiveBlocksPerMultiprocessor {
                    block_size,
                    dynamic_smem,
                    flags
                }
            }
        ),
        (
            any::<u64>(),
            stream(),
            any::<u64>(),
            any::<u32>(),
            prop_oneof![Just(1u8), Just(2), Just(4)],
            any::<u64>()
        )
            .prop_map(|(ctx, stream, dst, value, elem_size, count)| Request::Memset {
                ctx,
                stream,
                dst,
                value,
                elem_size,
                count
            }),
        any::<i32>().prop_map(|device| Request::DeviceStatus { device }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        any::<u32>().prop_map(Reply::Status),
        any::<u64>().prop_map(Reply::Handle),
        (any::<u64>(), any::<u64>()).prop_map(|(free, total)| Reply::MemInfo { free, total }),
        prop::collection::vec((any::<u32>(), any::<u32>()), 0..20).prop_map(Reply::Params),
        any::<u64>().prop_map(|offset| Reply::Data { offset }),
        (any::<[u64; 3]>(), any::<[u32; 5]>()).prop_map(|([total, free, used], [g, m, t, p, flags])| {
            Reply::DeviceStatus {
                total_bytes: total,
                free_bytes: free,
                used_bytes: used,
                gpu_util_percent: g,
                mem_util_percent: m,
                temperature_c: t,
                power_mw: p,
                flags,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(req in request(), bulk in prop::collection::vec(any::<u8>(), 0..100), id in any::<u64>()) {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, id, 1, &req, &bulk, DEFAULT_MAX_FRAME).unwrap();
        let (h, msg, b, used) = frame::split_frame(&out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(h.id, id);
        prop_assert!(h.wants_reply());
        prop_assert_eq!(b, &bulk[..]);
        let back: Request = codec::decode(msg).unwrap();
        prop_assert_eq!(back, req);
    }

    #[test]
    fn replies_round_trip(r in reply()) {
        let bytes = codec::encode(&r).unwrap();
        let back: Reply = codec::decode(&bytes).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((_, msg, _, _))) = frame::split_frame(&bytes, DEFAULT_MAX_FRAME) {
            let _ = codec::decode::<Request>(msg);
        }
        let _ = codec::decode::<Request>(&bytes);
        let _ = codec::decode::<Reply>(&bytes);
    }
}
