//! PyTorch (an unmodified cu13 wheel from PyPI) through gpupool, against a
//! server on the software driver: CUDA start-up (cudart 13.2's export tables
//! and integrity check, NVML), the caching allocator, copies each way and
//! device to device, pinned memory on a side stream, events with timing, and
//! the first kernel launch reaching the server.
//!
//! The wheel and its CUDA libraries are about 5 GB, so this runs only when
//! asked: `GPUPOOL_TEST_TORCH_PYTHON` names a Python with torch
//! (`GPUPOOL_TEST_TORCH=1 ./scripts/test.sh` installs one and sets it).
//! Without it the tests say so and pass, unless `GPUPOOL_REQUIRE_TORCH=1`.
//! numba with CuPy, and JAX, have environments of their own
//! (`GPUPOOL_TEST_NUMBA_PYTHON`, `GPUPOOL_TEST_JAX_PYTHON`, which the same
//! command sets up).

use gpupool_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The Python with numba's CUDA target and CuPy (`GPUPOOL_TEST_NUMBA_PYTHON`,
/// a virtual environment of its own: with them beside PyTorch, numpy and
/// their libraries load into every PyTorch test's process).
fn numba_python() -> Option<PathBuf> {
    let python = std::env::var_os("GPUPOOL_TEST_NUMBA_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!("no Python with numba and CuPy given (GPUPOOL_TEST_NUMBA_PYTHON); their tests did not run");
    }
    python
}

/// Held by the tests that load the machine most (`torch.compile` and the
/// training steps), so that they do not run at once. Under that load the
/// training script sometimes aborted at exit ("terminate called without an
/// active exception"). That is PyTorch's own race at interpreter exit
/// (pytorch/pytorch#38228): its autograd device thread takes the GIL
/// during finalisation (starting late, or releasing the last backward's
/// graph task, whose thread-local state holds a Python object) and CPython
/// ends it with `pthread_exit`, which unwinds through a C++ frame that may
/// not throw. `benches/torch_step.py` also lets that thread finish before
/// it exits: without, the race hit even a lone run about one time in two.
fn one_heavy_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every Python run holds this shared, except within a test that holds it
/// alone: those whose counts depend on the server keeping up with the
/// program (the event queries answered in the shim). On two cores beside
/// other PyTorch runs, more than a quarter of their queries were round
/// trips; alone, none of them fails.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    static MACHINE_ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The machine to this test alone, until the guard goes.
struct Alone {
    _guard: std::sync::RwLockWriteGuard<'static, ()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        MACHINE_ALONE.with(|a| a.set(false));
    }
}

fn machine_alone() -> Alone {
    let guard = MACHINE.write().unwrap_or_else(|p| p.into_inner());
    MACHINE_ALONE.with(|a| a.set(true));
    Alone { _guard: guard }
}

fn python() -> Option<PathBuf> {
    let python = std::env::var_os("GPUPOOL_TEST_TORCH_PYTHON").map(PathBuf::from);
    if python.is_none() {
        assert!(
            std::env::var("GPUPOOL_REQUIRE_TORCH").as_deref() != Ok("1"),
            "GPUPOOL_REQUIRE_TORCH=1 but GPUPOOL_TEST_TORCH_PYTHON is not set"
        );
        eprintln!("no PyTorch given (GPUPOOL_TEST_TORCH_PYTHON); the PyTorch tests did not run");
    }
    python
}

/// Runs `script` with PyTorch through the shim (and the NVML shim); returns
/// (success, stdout, stderr with the call report).
fn run_torch(python: &PathBuf, server: &Server, script: &str) -> (bool, String, String) {
    run_python(python, server, &["-c", script])
}

/// Runs Python with `args` through the shim, as [`run_torch`] does.
fn run_python(python: &PathBuf, server: &Server, args: &[&str]) -> (bool, String, String) {
    run_python_with(python, server, args, &[])
}

/// [`run_python`] with more environment variables.
fn run_python_with(python: &PathBuf, server: &Server, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = shim_libs();
    let _shared = (!MACHINE_ALONE.with(|a| a.get())).then(|| MACHINE.read().unwrap_or_else(|p| p.into_inner()));
    let mut cmd = Command::new(python);
    cmd.args(args)
        .env("LD_LIBRARY_PATH", dir)
        .env("GPUPOOL_SERVER", &server.tcp)
        .env("GPUPOOL_LOG", "warn")
        .env("GPUPOOL_CALL_REPORT", "1")
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied());
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // No device range lay on the program's memory (the shim's own managed
    // mappings are not such).
    assert!(
        !stderr.contains("lies where this process has memory mapped"),
        "{args:?}: {stderr}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// The folder the Python tests find the shims in (`libcuda.so.1`, its
/// `libcuda.so` link, `libnvidia-ml.so.1`).
fn shim_libs() -> &'static PathBuf {
    // Made once: the tests run at once and would race to replace the links.
    static LIBS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIBS.get_or_init(|| {
        let dir = scratch_dir().join("torch-libs");
        link_libraries(
            &dir,
            &[
                ("libcuda.so.1", shim_dir().join("libcuda.so.1")),
                // What a linker finds for -lcuda (Triton 3.4 links so).
                ("libcuda.so", shim_dir().join("libcuda.so.1")),
                ("libnvidia-ml.so.1", nvml_shim()),
            ],
        );
        dir
    })
}

/// Tensors go to the (simulated) GPU and back through PyTorch's own paths:
/// pageable and pinned copies, device-to-device, a side stream, memory
/// queries and timed events. No kernel runs.
#[test]
fn pytorch_moves_tensors_through_gpupool() {
    let Some(python) = python() else { return };
    let server = Server::start();
    let script = r#"
import torch
assert torch.cuda.is_available() and torch.cuda.device_count() == 1
print("name", torch.cuda.get_device_name(0))
a = torch.arange(100000, dtype=torch.float32)
x = torch.empty(100000, device="cuda")
x.copy_(a)
y = torch.empty_like(x)
y.copy_(x)
print("roundtrip", torch.equal(a, y.cpu()))
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    z = a.pin_memory().to("cuda", non_blocking=True)
s.synchronize()
print("pinned", torch.equal(z.cpu(), a))
free, total = torch.cuda.mem_get_info()
print("memory", total, free < total)
e1 = torch.cuda.Event(enable_timing=True)
e2 = torch.cuda.Event(enable_timing=True)
e1.record(); w = x.cpu(); e2.record(); e2.synchronize()
print("events", e1.elapsed_time(e2) >= 0, e2.query())
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("name gpupool simulated GPU 0"), "{}", context());
    assert!(stdout.contains("roundtrip True"), "{}", context());
    assert!(stdout.contains("pinned True"), "{}", context());
    assert!(
        stdout.contains(&format!("memory {} True", 16384u64 << 20)),
        "{}",
        context()
    );
    assert!(stdout.contains("events True True"), "{}", context());
    // NVML answers the fabric query PyTorch makes on sm90 devices.
    assert!(!stderr.contains("nvmlDeviceGetGpuFabricInfoV failed"), "{}", context());
    // PyTorch's hot queries cost no round trip.
    let row = |call: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with(&format!("{call} ")))
            .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
    };
    // Hot queries are answered in the shim; PyTorch's stream pools (128
    // streams) and its events are created without waiting.
    for call in [
        "cuCtxGetDevice_v2",
        "cuDevicePrimaryCtxGetState",
        "cuPointerGetAttributes",
        "cuStreamCreateWithPriority",
        "cuEventCreate",
    ] {
        assert_eq!(
            row(call).as_deref(),
            Some("0"),
            "{call} went to the server:\n{}",
            context()
        );
    }
}

/// PyTorch's first kernel (the fill of `torch.ones`) is resolved from its
/// fat binaries and launched on the server; the software driver knows no
/// PyTorch kernel, refuses it, and the error comes back at the synchronise,
/// as an asynchronous error does.
#[test]
fn pytorch_first_kernel_reaches_the_server() {
    let Some(python) = python() else { return };
    let server = Server::start();
    let script = r#"
import torch
x = torch.ones(4, device="cuda")
print("launched")
try:
    torch.cuda.synchronize()
    print("synchronised")
except Exception as e:
    print("sync error:", e)
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("launched"), "{}", context());
    assert!(
        stdout.contains("sync error: CUDA error: operation not supported"),
        "{}",
        context()
    );
    let launch = stderr
        .lines()
        .find(|l| l.starts_with("cuLaunchKernel "))
        .unwrap_or_else(|| panic!("no launch arrived:\n{}", context()));
    let cols: Vec<&str> = launch.split_whitespace().collect();
    assert!(
        cols[1] != "0" && cols[5] == "0",
        "the launch itself failed: {launch}\n{}",
        context()
    );
    // The kernel came from a library registered in the shim (no round trip)
    // and shipped to the server at its first use.
    let row = |call: &str| -> Vec<String> {
        stderr
            .lines()
            .find(|l| l.starts_with(&format!("{call} ")))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        row("cuLibraryLoadData").get(4).map(String::as_str),
        Some("0"),
        "{}",
        context()
    );
    assert!(!row("cuLibraryGetKernel").is_empty(), "{}", context());
    assert!(
        cols[4] != "0",
        "the kernel's image was not shipped at its launch: {launch}"
    );
}

/// Mixed precision: cuBLASLt's half-precision GEMM heuristics ask for an
/// export table of their own (`1734dc26`), and crash without it; through
/// gpupool the GEMM gets as far as its kernel launch.
#[test]
fn pytorch_mixed_precision_gemm_gets_to_its_launch() {
    let Some(python) = python() else { return };
    let server = Server::start();
    let script = r#"
import torch
m = torch.nn.Linear(64, 128).cuda()
x = torch.empty(32, 64, device="cuda")
for _ in range(2):
    try:
        with torch.autocast("cuda"):
            y = m(x)
        torch.cuda.synchronize()
    except Exception as e:
        print("sync error:", e)
print("done")
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("done"), "{}", context());
    assert!(
        stdout.contains("sync error: CUDA error: operation not supported"),
        "{}",
        context()
    );
    assert!(!stderr.contains("does not serve this table"), "{}", context());
}

/// The round trips a run made, from the last line of its call report.
fn round_trips(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.starts_with("to the server: "))?;
    line.strip_prefix("to the server: ")?.split(' ').next()?.parse().ok()
}

/// A training step through gpupool waits for the server only where the
/// program synchronises: the benchmark's steps (`benches/torch_step.py`,
/// forward, backward and SGD or AdamW, with `torch.cuda.synchronize()`
/// before and after each) cost one round trip a step and nothing else (the
/// synchronise before a step, with nothing sent since the one after the
/// last, is answered in the shim);
/// launches, memsets, attribute sets, the allocator's work and cuDNN's
/// questions of the context's limits (the small GPT's attention) all
/// stream or are answered in the shim. The software driver skips PyTorch's kernels
/// (`GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`), so the numbers it computes are
/// meaningless; the calls are PyTorch's own. Runs of 25 and 50 steps differ
/// by 25 steps (their `loss.item()` reads, at the first and last step, are
/// the same in both); a first run fills the server's image cache, so that
/// both ship the same images.
#[test]
fn pytorch_training_steps_wait_only_where_they_synchronise() {
    let Some(python) = python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/torch_step.py");
    let bench = bench.to_str().expect("a UTF-8 path");
    for model in ["mlp", "cnn", "mlp_bf16", "gpt"] {
        let mut trips = Vec::new();
        for steps in ["21", "25", "50"] {
            let (ok, stdout, stderr) = run_python(&python, &server, &[bench, steps, model]);
            let context = format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
            assert!(ok && stdout.contains(&format!("BENCH {model}_step_ms")), "{context}");
            trips.push(round_trips(&stderr).unwrap_or_else(|| panic!("no call report: {context}")));
        }
        assert_eq!(
            trips[2] - trips[1],
            25,
            "{model}: 25 more steps cost {} round trips, not 1 per step",
            trips[2] as i64 - trips[1] as i64
        );
    }
}

/// (calls, round trips) of `cuEventQuery` in the shim's call report.
fn event_queries(stderr: &str) -> Option<(u64, u64)> {
    let row: Vec<&str> = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cuEventQuery"))?
        .split_whitespace()
        .collect();
    Some((row.get(1)?.parse().ok()?, row.get(4)?.parse().ok()?))
}

/// Training steps fed pinned batches (`pin_memory()` then
/// `.cuda(non_blocking=True)`, in a step function whose batch is freed when
/// it returns): PyTorch's pinned-memory allocator records an event for each
/// block when it is freed and queries it at the next allocation, a few
/// microseconds later. Each such query was a round trip; then, with the
/// server's notices told with replies, half of them (the first one's
/// answer brought the second's notice). Now a query of a record that young,
/// which nothing told to the program contradicts, is answered "not ready"
/// in the shim, the allocator takes another block, and the block's next
/// query finds its record told: almost none ask the server. The values are
/// meaningless (the software driver skips PyTorch's kernels); the calls
/// are PyTorch's own.
#[test]
fn pytorch_pinned_batches_answer_their_event_queries_in_the_shim() {
    let Some(python) = python() else { return };
    let _alone = machine_alone();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).cuda()
opt = torch.optim.Adam(m.parameters(), lr=0.01)
def step():
    xb = torch.randn(32, 64).pin_memory()
    yb = torch.randint(0, 10, (32,)).pin_memory()
    x, y = xb.cuda(non_blocking=True), yb.cuda(non_blocking=True)
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(60):
    step()
torch.cuda.synchronize()
print("pinned steps done")
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("pinned steps done"), "{}", context());
    let (queries, trips) =
        event_queries(&stderr).unwrap_or_else(|| panic!("no cuEventQuery in the call report: {}", context()));
    assert!(queries >= 100, "{queries} queries in 60 steps: {}", context());
    assert!(
        trips <= queries / 8,
        "{trips} of {queries} event queries were round trips: {}",
        context()
    );
}

/// Training steps that clip their gradients
/// (`torch.nn.utils.clip_grad_norm_`): PyTorch stages a scalar through
/// pinned memory each step and queries that block's event at the next
/// step, a step's work after its record. The server tells the completion
/// unasked while the program streams the step, and the shim takes the
/// notice in before it would ask: before unasked notices every one of
/// these queries was a round trip. Each step also computes on a side
/// stream a tensor the main stream uses (`record_stream`): the caching
/// allocator records an event when that tensor is freed and queries it at
/// its next allocation, right after, which the shim answers "not ready"
/// (a round trip a step before). The values are meaningless (the
/// software driver skips PyTorch's kernels); the calls are PyTorch's own.
#[test]
fn pytorch_gradient_clipping_steps_answer_their_event_queries_in_the_shim() {
    let Some(python) = python() else { return };
    let _alone = machine_alone();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
m = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)).cuda()
opt = torch.optim.AdamW(m.parameters())
x = torch.randn(64, 1024, device="cuda")
y = torch.randint(0, 10, (64,), device="cuda")
side = torch.cuda.Stream()
for _ in range(60):
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        z = x * 2
    torch.cuda.current_stream().wait_stream(side)
    z.record_stream(torch.cuda.current_stream())
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(z), y).backward()
    del z
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
torch.cuda.synchronize()
print("clipped steps done")
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("clipped steps done"), "{}", context());
    let (queries, trips) =
        event_queries(&stderr).unwrap_or_else(|| panic!("no cuEventQuery in the call report: {}", context()));
    assert!(queries >= 100, "{queries} queries in 60 steps: {}", context());
    assert!(
        trips <= queries / 4,
        "{trips} of {queries} event queries were round trips: {}",
        context()
    );
}

/// A training step captured as a CUDA graph (`benches/torch_step.py`'s
/// `mlp_graph`: forward, backward and SGD, captured by `torch.cuda.graph` on
/// a side stream after warm-up steps) replays through gpupool as one
/// streamed message and no round trip of its own: runs of 25 and of 50
/// replays differ by 25 streamed requests and the round trip a step of the
/// script's synchronise after the replay (the one before the next replay
/// is answered in the shim). The software driver records the captured
/// launches and replays them, skipping PyTorch's kernels
/// (`GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`).
#[test]
fn pytorch_cuda_graph_replays_cost_one_streamed_message() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/torch_step.py");
    let bench = bench.to_str().expect("a UTF-8 path");
    let streamed = |stderr: &str| -> Option<u64> {
        let line = stderr.lines().rev().find(|l| l.starts_with("to the server: "))?;
        line.split(", ").nth(1)?.split(' ').next()?.parse().ok()
    };
    let mut runs = Vec::new();
    // The first run fills the server's image cache; the other two differ
    // only in their replays.
    for steps in ["21", "25", "50"] {
        let (ok, stdout, stderr) = run_python(&python, &server, &[bench, steps, "mlp_graph"]);
        let context = format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
        assert!(ok && stdout.contains("BENCH mlp_graph_step_ms"), "{context}");
        let trips = round_trips(&stderr).unwrap_or_else(|| panic!("no call report: {context}"));
        let posted = streamed(&stderr).unwrap_or_else(|| panic!("no call report: {context}"));
        runs.push((trips, posted));
    }
    let (short, long) = (runs[1], runs[2]);
    assert_eq!(
        long.0 - short.0,
        25,
        "25 more replays cost {} round trips, not the script's 1 a step",
        long.0 as i64 - short.0 as i64
    );
    assert_eq!(
        long.1 - short.1,
        25,
        "25 more replays were {} streamed requests",
        long.1 as i64 - short.1 as i64
    );
}

/// `torch.multiprocessing` hands a CUDA tensor to a spawned process (its
/// own session of the server): the child reads it, writes into it, and the
/// parent sees the write. PyTorch shares the caching allocator's block with
/// `cudaIpcGetMemHandle` and orders it with an interprocess event; with
/// expandable segments it shares the segment's physical memory as a file
/// descriptor (`cuMemExportToShareableHandle`).
#[test]
fn pytorch_shares_a_cuda_tensor_with_another_process() {
    let Some(python) = python() else { return };
    let server = Server::start();
    let script = scratch_dir().join("torch_ipc.py");
    std::fs::write(
        &script,
        r#"
import torch
import torch.multiprocessing as mp

def child(inbox, outbox):
    t = inbox.get()
    outbox.put(float(t.cpu().sum()))
    t.copy_(torch.full((1000,), 2.0))
    torch.cuda.synchronize()
    outbox.put("written")
    del t

if __name__ == "__main__":
    mp.set_start_method("spawn")
    inbox, outbox = mp.Queue(), mp.Queue()
    x = torch.arange(1000, dtype=torch.float32).cuda()
    p = mp.Process(target=child, args=(inbox, outbox))
    p.start()
    inbox.put(x)
    print("child sum", outbox.get(timeout=120))
    print("child", outbox.get(timeout=120))
    torch.cuda.synchronize()
    print("parent sees", float(x.cpu().sum()))
    p.join()
    print("exit", p.exitcode)
"#,
    )
    .expect("write the script");
    for conf in ["", "expandable_segments:True"] {
        let (ok, stdout, stderr) = run_python_with(
            &python,
            &server,
            &[script.to_str().unwrap()],
            &[("PYTORCH_CUDA_ALLOC_CONF", conf)],
        );
        let context = || format!("{conf}: stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
        assert!(ok, "{}", context());
        assert!(stdout.contains("child sum 499500.0"), "{}", context());
        assert!(stdout.contains("child written"), "{}", context());
        assert!(stdout.contains("parent sees 2000.0"), "{}", context());
        assert!(stdout.contains("exit 0"), "{}", context());
    }
}

/// A CUDA graph under PyTorch's `cudaMallocAsync` allocator backend: its
/// allocations in the capture become the graph's memory, and the training
/// step replays, each replay one streamed launch; `debug_dump` writes the
/// graph's description.
#[test]
fn pytorch_cuda_graph_with_the_cuda_malloc_async_backend() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
x = torch.randn(256, 256, device="cuda")
m = torch.nn.Linear(256, 256).cuda()
opt = torch.optim.SGD(m.parameters(), lr=0.1)
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        m(x).sum().backward()
        opt.step()
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
g.enable_debug_mode()
opt.zero_grad(set_to_none=True)
with torch.cuda.graph(g):
    y = m(x).sum()
    y.backward()
    opt.step()
for _ in range(5):
    g.replay()
torch.cuda.synchronize()
print("backend", torch.cuda.get_allocator_backend())
print("replayed")
import os, sys
path = sys.argv[1]
g.debug_dump(path)
print("dumped", open(path).read().startswith("digraph"))
"#;
    let dot = scratch_dir().join("torch-graph.dot");
    let (ok, stdout, stderr) = run_python_with(
        &python,
        &server,
        &["-c", script, dot.to_str().unwrap()],
        &[("PYTORCH_CUDA_ALLOC_CONF", "backend:cudaMallocAsync")],
    );
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("backend cudaMallocAsync"), "{}", context());
    assert!(stdout.contains("replayed"), "{}", context());
    // `debug_dump` (cuGraphDebugDotPrint) wrote the graph to the file.
    assert!(stdout.contains("dumped True"), "{}", context());
    assert!(!stderr.contains("does not support"), "{}", context());
}

/// `torch.cond` and `while_loop` captured in a CUDA graph (PyTorch's
/// conditional-node path): PyTorch asks the capture for its graph and
/// dependencies, adds a conditional node there, makes the capture follow
/// it, and captures each body on a stream of its own into the node's body
/// graph; the graph then replays with the predicate changed. The software
/// driver skips PyTorch's kernels (`GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`),
/// so the values are not computed; the calls are checked.
#[test]
fn pytorch_cond_and_while_loop_in_a_cuda_graph() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/torch_cond_graph.py");
    let (ok, stdout, stderr) = run_python(&python, &server, &[script.to_str().expect("a UTF-8 path")]);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("replayed 8"), "{}", context());
    let row = |call: &str| {
        let line = stderr.lines().find(|l| l.split_whitespace().next() == Some(call));
        let cols: Vec<u64> = line
            .map(|l| l.split_whitespace().skip(1).filter_map(|c| c.parse().ok()).collect())
            .unwrap_or_default();
        (
            cols.first().copied().unwrap_or(0),
            line.is_some_and(|l| l.contains(" 0  server")),
        )
    };
    // Warm-up and capture each make an if node and a while node.
    for call in [
        "cuGraphConditionalHandleCreate",
        "cuStreamUpdateCaptureDependencies_v2",
        "cuStreamBeginCaptureToGraph",
    ] {
        let (count, clean) = row(call);
        assert!(
            count >= 4 && clean,
            "{call}: {count} calls, without errors {clean}\n{}",
            context()
        );
    }
    assert!(!stderr.contains("does not support"), "{}", context());
}

/// `torch.compile` through gpupool: Inductor compiles Triton kernels on the
/// client (the client has no GPU; Triton asks the remote device's
/// attributes) and loads each from the cubin file it wrote
/// (`cuModuleLoad`), which the shim reads and ships like any image. The
/// software driver skips the kernels (`GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`).
#[test]
fn pytorch_compile_loads_its_kernels_through_gpupool() {
    let Some(python) = python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let cache = scratch_dir().join("inductor-cache");
    let script = r#"
import torch
@torch.compile
def f(x, y):
    return torch.sin(x) * y + 1
x = torch.randn(1024, device="cuda")
y = torch.randn(1024, device="cuda")
z = f(x, y)
torch.cuda.synchronize()
print("compiled", tuple(z.shape), z.device.type)
"#;
    let (ok, stdout, stderr) = run_python_with(
        &python,
        &server,
        &["-c", script],
        &[
            ("TORCHINDUCTOR_CACHE_DIR", cache.to_str().unwrap()),
            ("TRITON_DEFAULT_FP_FUSION", "1"),
        ],
    );
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("compiled (1024,) cuda"), "{}", context());
    assert!(!stderr.contains("does not support"), "{}", context());
    assert!(
        stderr.lines().any(|l| l.starts_with("cuModuleLoad ")),
        "the kernel was not loaded from its file: {}",
        context()
    );
}

/// numba (`numba-cuda`, which the opt-in test command installs in a
/// virtual environment of its own): a `@cuda.jit` kernel is compiled on the client, linked and
/// loaded through gpupool (cuda-python's bindings, which keep handles as
/// signed integers), and launched on the server; device arrays go there and
/// back. The software driver skips the kernel.
#[test]
fn numba_kernels_load_and_launch_through_gpupool() {
    let Some(python) = numba_python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import numpy as np
from numba import cuda
@cuda.jit
def add(a, b, c):
    i = cuda.grid(1)
    if i < a.size:
        c[i] = a[i] + b[i]
a = np.arange(1000, dtype=np.float32)
b = np.ones(1000, dtype=np.float32)
da, db = cuda.to_device(a), cuda.to_device(b)
dc = cuda.device_array_like(a)
add[8, 128](da, db, dc)
cuda.synchronize()
print("back", np.array_equal(da.copy_to_host(), a), dc.copy_to_host().shape)
print("device", cuda.get_current_device().name.decode() if isinstance(cuda.get_current_device().name, bytes) else cuda.get_current_device().name)
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("back True (1000,)"), "{}", context());
    assert!(stdout.contains("device gpupool simulated GPU 0"), "{}", context());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("cuLaunchKernel ") || l.starts_with("cuLaunchKernelEx ")),
        "the kernel did not launch: {}",
        context()
    );
}

/// PyTorch's profiler with CUDA activities loads CUPTI, which asks the
/// driver for a tools export table and crashed the process without it; the
/// profile now completes (with the CPU's events: a remote GPU's activity
/// records are not offered), and a jiterator kernel (NVRTC on the client)
/// loads and launches.
#[test]
fn pytorch_profiler_and_jiterator_run_through_gpupool() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
from torch.profiler import profile, ProfilerActivity
x = torch.randn(256, 256, device="cuda")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    y = x @ x
    torch.cuda.synchronize()
print("profiled", len(p.events()) > 0)
double = torch.cuda.jiterator._create_jit_fn("template <typename T> T double_it(T x) { return x * 2; }")
print("jiterator", tuple(double(x).shape))
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("profiled True"), "{}", context());
    assert!(stdout.contains("jiterator (256, 256)"), "{}", context());
}

/// PyTorch's other CUDA libraries start and launch through gpupool: cuFFT
/// (`torch.fft`, whose plans ask the driver's tools module table for their
/// kernels and were refused with `CUFFT_INTERNAL_ERROR` without it),
/// cuSOLVER (`torch.linalg`) and cuSPARSE (a CSR product). The software
/// driver skips their kernels, so only shapes are checked; every call on the
/// way must succeed.
#[test]
fn pytorch_fft_linear_algebra_and_sparse_libraries_run_through_gpupool() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
d = torch.device("cuda")
x = torch.randn(64, 64, device=d)
print("fft", tuple(torch.fft.fft(x).shape), tuple(torch.fft.rfft2(x).shape),
      tuple(torch.fft.irfft(torch.fft.rfft(x, n=100), n=100).shape))
a = x @ x.T + 64 * torch.eye(64, device=d)
u, sv, v = torch.linalg.svd(x)
print("linalg", tuple(torch.linalg.solve(a, x).shape), tuple(torch.linalg.cholesky(a).shape),
      tuple(sv.shape), tuple(torch.linalg.eigh(a).eigenvalues.shape), tuple(torch.linalg.qr(x).R.shape))
i = torch.tensor([[0, 1, 2], [2, 0, 1]], device=d)
s = torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0, 3.0], device=d), (64, 64)).to_sparse_csr()
print("sparse", tuple((s @ x).shape))
torch.cuda.synchronize()
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("fft (64, 64) (64, 33) (64, 100)"), "{}", context());
    assert!(
        stdout.contains("linalg (64, 64) (64, 64) (64,) (64,) (64, 64)"),
        "{}",
        context()
    );
    assert!(stdout.contains("sparse (64, 64)"), "{}", context());
}

/// A NCCL process group of one rank initialises, all-reduces and is
/// destroyed through gpupool. NCCL asks whether a tensor's memory can be
/// shared by legacy IPC (`CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE`)
/// before it registers it; the shim answered 0 for `cuMemAlloc` memory, so
/// NCCL took it for memory mapped with `cuMemMap` and failed to register it
/// ("Cuda failure 1 'invalid argument'" from `cuMemRetainAllocationHandle`).
/// The software driver skips NCCL's kernels.
#[test]
fn pytorch_nccl_process_group_of_one_runs_through_gpupool() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let port = fixed_port();
    let script = format!(
        r#"
import os, torch
import torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
t = torch.ones(1024, device="cuda")
dist.all_reduce(t)
dist.barrier()
torch.cuda.synchronize()
print("all_reduce", tuple(t.shape), dist.get_world_size())
dist.destroy_process_group()
"#
    );
    let (ok, stdout, stderr) = run_torch(&python, &server, &script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("all_reduce (1024,) 1"), "{}", context());
}

/// Tensors move between two GPUs of one server as on a local machine: PyTorch
/// asks whether the GPUs reach each other (the server's driver says yes on
/// this double), enables peer access, and with the `cudaMallocAsync`
/// allocator gives the other GPU access to its pool, which the shim refused
/// before ("CUDA error: operation not supported" at the first copy).
#[test]
fn pytorch_copies_between_two_gpus_of_a_server() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[
        ("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1"),
        ("GPUPOOL_SOFT_DEVICE_COUNT", "2"),
    ]);
    let script = r#"
import torch
print("peer", torch.cuda.can_device_access_peer(0, 1))
a = torch.arange(4096, dtype=torch.float32).to("cuda:0")
b = a.to("cuda:1")
with torch.cuda.device(1):
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        c = b.to("cuda:0", non_blocking=True)
    s.synchronize()
print("moved", b.device, c.device, torch.equal(c.cpu(), torch.arange(4096, dtype=torch.float32)))
"#;
    for alloc in ["", "backend:cudaMallocAsync"] {
        let (ok, stdout, stderr) =
            run_python_with(&python, &server, &["-c", script], &[("PYTORCH_CUDA_ALLOC_CONF", alloc)]);
        let context = || {
            format!(
                "allocator {alloc:?}\nstdout: {stdout}\nstderr: {stderr}\nserver: {}",
                server.log()
            )
        };
        assert!(ok, "{}", context());
        assert!(stdout.contains("peer True"), "{}", context());
        assert!(stdout.contains("moved cuda:1 cuda:0 True"), "{}", context());
    }
}

/// A NCCL group of two ranks, two processes on two GPUs of one server,
/// forms through gpupool and connects each way directly between the GPUs
/// (NCCL's peer transport over memory the other rank's session exports as
/// a file descriptor), whether each rank sees both GPUs or, with its own
/// `CUDA_VISIBLE_DEVICES`, only its own (as SLURM binds them). Before, the
/// server's peer access was not offered and NVML answered no link, so NCCL
/// fell back to host memory the GPUs map, which a GPU across the network
/// cannot reach, and the first collective failed; NCCL's kernel launch,
/// whose packed argument block is shorter than the 4 KiB its kernel
/// declares, was refused; and a rank seeing one GPU failed its start-up
/// when NVML refused the other GPU's index. The software driver does not
/// run NCCL's kernels, so the collective's values are not checked.
#[test]
fn pytorch_nccl_group_of_two_ranks_connects_through_gpupool() {
    let Some(python) = python() else { return };
    // Two GPUs joined by NVLink, as NCCL then takes its peer transport on
    // any host (without NVLink it does so for two GPUs on AMD hosts only).
    let linked = "[[gpu]]\nordinal = 0\nnvlink_peers = [1]\n[[gpu]]\nordinal = 1\nnvlink_peers = [0]\n";
    let server = Server::start_configured(
        &[
            ("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1"),
            ("GPUPOOL_SOFT_DEVICE_COUNT", "2"),
        ],
        Some(linked),
    );
    let port = fixed_port();
    let script = format!(
        r#"
import os, sys, torch
import torch.distributed as dist
import torch.multiprocessing as mp
def run(rank, own):
    if own:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(rank)
    device = 0 if own else rank
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", device))
    t = torch.ones(4096, device="cuda")
    dist.all_reduce(t)
    dist.broadcast(t, 0)
    torch.cuda.synchronize()
    # One write, so the two ranks' lines do not interleave.
    sys.stdout.write(f"rank {{rank}} sees {{torch.cuda.device_count()}} all_reduce {{tuple(t.shape)}}\n")
    sys.stdout.flush()
    dist.destroy_process_group()
if __name__ == "__main__":
    own = sys.argv[1] == "own"
    if not own:
        print("peer", torch.cuda.can_device_access_peer(0, 1), torch.cuda.can_device_access_peer(1, 0))
    mp.spawn(run, args=(own,), nprocs=2)
"#
    );
    // The ranks are spawned processes, which find `run` in the script's file.
    let file = scratch_dir().join("nccl_two_ranks.py");
    std::fs::write(&file, script).unwrap();
    let env = [("NCCL_DEBUG", "INFO"), ("NCCL_DEBUG_SUBSYS", "INIT,P2P")];
    for (mode, sees) in [("shared", 2), ("own", 1)] {
        let (ok, stdout, stderr) = run_python_with(&python, &server, &[file.to_str().unwrap(), mode], &env);
        let context = || format!("{mode}\nstdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
        assert!(ok, "{}", context());
        if mode == "shared" {
            assert!(stdout.contains("peer True True"), "{}", context());
        }
        for rank in 0..2 {
            let line = format!("rank {rank} sees {sees} all_reduce (4096,)");
            assert!(stdout.contains(&line), "{}", context());
        }
        // Each rank's channels to the other go directly between the GPUs.
        let direct = |from: u32, to: u32| {
            stdout
                .lines()
                .chain(stderr.lines())
                .any(|l| l.contains(&format!(" : {from}[{from}] -> {to}[{to}] via P2P")))
        };
        assert!(direct(0, 1) && direct(1, 0), "{}", context());
    }
}

/// A NCCL ring of four ranks on four GPUs of one server connects every
/// rank to the next directly between the GPUs, where the server's GPUs are
/// joined by NVLink (NVML tells the links, so NCCL's topology has NVLink
/// paths) and where they are not. Without NVLink NCCL took two GPUs behind
/// different host bridges for too far apart for its peer transport (every
/// remote GPU is behind a host bridge of its own in the topology NCCL reads
/// on the client), moved data through shared host memory instead, and its
/// first collective failed; the shim now sets `NCCL_P2P_LEVEL=SYS` for a
/// session on a server with several GPUs (ARCHITECTURE.md, "Peer access
/// between a server's GPUs").
#[test]
fn pytorch_nccl_ring_of_four_ranks_connects_through_gpupool() {
    let Some(python) = python() else { return };
    let linked = (0..4)
        .map(|g| {
            let peers: Vec<String> = (0..4).filter(|p| *p != g).map(|p| p.to_string()).collect();
            format!("[[gpu]]\nordinal = {g}\nnvlink_peers = [{}]\n", peers.join(", "))
        })
        .collect::<String>();
    let port = fixed_port();
    let script = format!(
        r#"
import os, sys, torch
import torch.distributed as dist
import torch.multiprocessing as mp
def run(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=4, device_id=torch.device("cuda", rank))
    t = torch.ones(4096, device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    sys.stdout.write(f"rank {{rank}} all_reduce {{tuple(t.shape)}}\n")
    sys.stdout.flush()
    dist.destroy_process_group()
if __name__ == "__main__":
    mp.spawn(run, nprocs=4)
"#
    );
    let file = scratch_dir().join("nccl_four_ranks.py");
    std::fs::write(&file, script).unwrap();
    for topology in [Some(linked.as_str()), None] {
        let server = Server::start_configured(
            &[
                ("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1"),
                ("GPUPOOL_SOFT_DEVICE_COUNT", "4"),
            ],
            topology,
        );
        let env = [("NCCL_DEBUG", "INFO"), ("NCCL_DEBUG_SUBSYS", "INIT,P2P")];
        let (ok, stdout, stderr) = run_python_with(&python, &server, &[file.to_str().unwrap()], &env);
        let context = || format!("NVLink {}\nstdout: {stdout}\nstderr: {stderr}", topology.is_some());
        assert!(ok, "{}", context());
        for rank in 0..4u32 {
            assert!(
                stdout.contains(&format!("rank {rank} all_reduce (4096,)")),
                "{}",
                context()
            );
            let next = (rank + 1) % 4;
            let direct = format!(" : {rank}[{rank}] -> {next}[{next}] via P2P");
            assert!(
                stdout.lines().chain(stderr.lines()).any(|l| l.contains(&direct)),
                "{}",
                context()
            );
        }
    }
}

/// Processes forked after CUDA started (a child that exits normally, and
/// the data loader's workers) leave the parent's session working: before,
/// the child's exit handlers ended it, and the parent's next call failed
/// with "CUDA-capable device(s) is/are busy or unavailable".
#[test]
fn pytorch_forked_children_leave_the_parents_session_alone() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import os, sys, torch
x = torch.arange(1024.0).cuda()
torch.cuda.synchronize()
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    os.waitpid(pid, 0)
ds = torch.utils.data.TensorDataset(torch.arange(256.0).reshape(64, 4))
batches = [b.cuda(non_blocking=True) for (b,) in torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, pin_memory=True)]
torch.cuda.synchronize()
print("parent", x.cpu()[:2].tolist(), len(batches), batches[-1].cpu()[-1].tolist())
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(
        stdout.contains("parent [0.0, 1.0] 4 [252.0, 253.0, 254.0, 255.0]"),
        "{}",
        context()
    );
}

/// `torch.cuda.green_contexts` (driving the driver through cuda-bindings):
/// a green context of 16 SMs, made of the server driver's split of the
/// device, runs a stream of its own and its default stream; tensors copied
/// there and back keep their values (copies compute on the software
/// driver; PyTorch's kernels are skipped, so nothing else is checked), and
/// the stream names the green context as its own.
#[test]
fn pytorch_green_context_runs_through_gpupool() {
    let Some(python) = python() else { return };
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = r#"
import torch
from cuda.bindings import driver
from torch.cuda.green_contexts import GreenContext
host = torch.arange(1 << 16, dtype=torch.float32)
x = host.cuda()
g = GreenContext(num_sms=16)
s = g.Stream()
with torch.cuda.stream(s):
    y = x.clone()
    back = y.cpu()
s.synchronize()
err, ctx, green = driver.cuStreamGetCtx_v2(s.cuda_stream)
print("stream green", int(green) == int(g._green_ctx), int(ctx) != int(g._context))
err, res = driver.cuGreenCtxGetDevResource(g._green_ctx, driver.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM)
print("sms", res.sm.smCount)
print("copied", torch.equal(back, host))
del s, g
torch.cuda.synchronize()
print("done")
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("done"), "{}", context());
    assert!(stdout.contains("stream green True True"), "{}", context());
    assert!(stdout.contains("sms 16"), "{}", context());
    assert!(stdout.contains("copied True"), "{}", context());
}

/// CuPy (`cupy-cuda13x`, installed with numba): a `RawKernel` compiled by NVRTC on the client loads and runs
/// on the server, with its result checked; the kernel is one the software
/// driver knows by name, so it computes.
#[test]
fn cupy_raw_kernel_computes_through_gpupool() {
    let Some(python) = numba_python() else { return };
    let server = Server::start();
    let script = r#"
import cupy as cp
src = r'''
extern "C" __global__ void gp_fill_u32(unsigned *p, unsigned v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}'''
fill = cp.RawKernel(src, "gp_fill_u32")
d = cp.zeros(1000, dtype=cp.uint32)
fill((4,), (256,), (d, cp.uint32(7), cp.int32(1000)))
cp.cuda.Device().synchronize()
h = d.get()
print("filled", int(h.sum()), int(h.min()), int(h.max()))
"#;
    let (ok, stdout, stderr) = run_torch(&python, &server, script);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("filled 7000 7 7"), "{}", context());
}

/// cuda.core, NVIDIA's Python API over the driver, in the numba
/// environment (`tests/python/cuda_core_through_gpupool.py`): NVRTC's
/// cubin and PTX launched with pool memory, a captured graph between timed
/// events, the PCI address as the driver writes it, and a pool shared with
/// a spawned child process (`cuMemPoolExportToShareableHandle`,
/// `cuMemPoolExportPointer`), whose write the parent reads.
#[test]
fn cuda_core_compiles_launches_and_shares_a_pool_through_gpupool() {
    let Some(python) = numba_python() else { return };
    let server = Server::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/cuda_core_through_gpupool.py");
    let (ok, stdout, stderr) = run_python(&python, &server, &[script.to_str().unwrap()]);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    for line in [
        "saxpy cubin True",
        "saxpy ptx True",
        "graph and timing True",
        "shared pool True 0 True",
    ] {
        assert!(stdout.contains(line), "{line}: {}", context());
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("pci ") && l.ends_with(" True")),
        "{}",
        context()
    );
}

/// The Python with PyTorch's CUDA 12 build (`GPUPOOL_TEST_TORCH12_PYTHON`:
/// torch 2.8 for CUDA 12.8, in a virtual environment of its own).
fn torch12_python() -> Option<PathBuf> {
    let python = std::env::var_os("GPUPOOL_TEST_TORCH12_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!("no Python with PyTorch for CUDA 12 given (GPUPOOL_TEST_TORCH12_PYTHON); its test did not run");
    }
    python
}

/// PyTorch 2.8 built for CUDA 12.8 (cudart 12, cuBLAS 12, cuDNN 9 for CUDA
/// 12, NCCL 2.27, Triton 3.4): training steps of an MLP and a CNN,
/// `torch.compile` (Triton 3.4 links its launcher with `-lcuda`), and a
/// one-rank NCCL group, whose device code for every architecture (hundreds
/// of MiB) goes cut down to the server's and, where still large, in
/// pieces. Before, NCCL's first image was refused (over the frame limit).
#[test]
fn pytorch_for_cuda_12_trains_compiles_and_forms_an_nccl_group() {
    let Some(python) = torch12_python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let port = fixed_port();
    let cache = scratch_dir().join("inductor-cache-cu12");
    let script = format!(
        r#"
import os, torch
import torch.distributed as dist
assert torch.version.cuda.startswith("12."), torch.version.cuda
mlp = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).cuda()
cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).cuda()
for model, shape in ((mlp, (64, 256)), (cnn, (8, 3, 16, 16))):
    opt = torch.optim.AdamW(model.parameters())
    for _ in range(5):
        loss = model(torch.randn(*shape, device="cuda")).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss.item()
print("trained")
f = torch.compile(lambda x, y: torch.sin(x) * y + 1)
z = f(torch.randn(1024, device="cuda"), torch.randn(1024, device="cuda"))
torch.cuda.synchronize()
print("compiled", tuple(z.shape))
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
t = torch.ones(1024, device="cuda")
dist.all_reduce(t)
torch.cuda.synchronize()
dist.destroy_process_group()
print("nccl group of one")
"#
    );
    let (ok, stdout, stderr) = run_python_with(
        &python,
        &server,
        &["-c", &script],
        &[("TORCHINDUCTOR_CACHE_DIR", cache.to_str().unwrap())],
    );
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    for line in ["trained", "compiled (1024,)", "nccl group of one"] {
        assert!(stdout.contains(line), "{line}: {}", context());
    }
    assert!(!stderr.contains("does not support"), "{}", context());
    // cudart 12 asks for each library's module before its first launch.
    assert!(
        stderr.lines().any(|l| l.starts_with("cuLibraryGetModule ")),
        "{}",
        context()
    );
}

/// The Python with TensorFlow's CUDA 12 build (`GPUPOOL_TEST_TF_PYTHON`:
/// `tensorflow[and-cuda]` 2.21, in a virtual environment of its own).
fn tf_python() -> Option<PathBuf> {
    let python = std::env::var_os("GPUPOOL_TEST_TF_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!("no Python with TensorFlow given (GPUPOOL_TEST_TF_PYTHON); its test did not run");
    }
    python
}

/// TensorFlow 2.21 (XLA's StreamExecutor over the driver, CUDA 12.5
/// libraries from PyPI): the remote GPU is found and registered, a matmul
/// runs on it, and a Keras model fits an epoch. Its CUDA libraries are
/// named on the library path, as their wheels' folders are not all on
/// TensorFlow's own search path (cuSOLVER's is not).
#[test]
fn tensorflow_finds_the_gpu_and_fits_a_model_through_gpupool() {
    let Some(python) = tf_python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let site = python
        .parent()
        .and_then(|bin| bin.parent())
        .map(|venv| venv.join("lib"))
        .and_then(|lib| {
            std::fs::read_dir(&lib)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.join("site-packages").is_dir())
        })
        .map(|py| py.join("site-packages").join("nvidia"))
        .unwrap_or_else(|| panic!("no site-packages beside {}", python.display()));
    let mut path = vec![shim_libs().display().to_string()];
    for entry in std::fs::read_dir(&site).unwrap().flatten() {
        if entry.path().join("lib").is_dir() {
            path.push(entry.path().join("lib").display().to_string());
        }
    }
    let script = r#"
import numpy as np
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("gpus", len(gpus))
with tf.device("/GPU:0"):
    a = tf.random.normal((256, 256))
    b = tf.matmul(a, a)
print("matmul on", b.device.split(":")[-2])
m = tf.keras.Sequential([tf.keras.layers.Dense(64, activation="relu"), tf.keras.layers.Dense(10)])
m.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
m.fit(np.random.randn(256, 32).astype("float32"), np.random.randint(0, 10, 256), epochs=1, batch_size=64, verbose=0)
print("fitted")
"#;
    let path = path.join(":");
    let (ok, stdout, stderr) = run_python_with(&python, &server, &["-c", script], &[("LD_LIBRARY_PATH", &path)]);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    for line in ["gpus 1", "matmul on GPU", "fitted"] {
        assert!(stdout.contains(line), "{line}: {}", context());
    }
    assert!(!stderr.contains("does not support"), "{}", context());
}

/// The Python with JAX's CUDA 13 build (`GPUPOOL_TEST_JAX_PYTHON`, a
/// virtual environment of its own).
fn jax_python() -> Option<PathBuf> {
    let python = std::env::var_os("GPUPOOL_TEST_JAX_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!("no Python with JAX given (GPUPOOL_TEST_JAX_PYTHON); its test did not run");
    }
    python
}

/// JAX runs one computation over two GPUs of a server through gpupool: a
/// `pmap` whose `psum` XLA carries out with NCCL inside the process (peer
/// access between the GPUs enabled on the server's driver), and an array
/// moved from one GPU to the other. The software driver names its GPUs
/// alike here (`GPUPOOL_SOFT_ONE_MODEL=1`), as a real server's GPUs share
/// their model's name: XLA refuses to run one computation on devices of
/// different kinds. The software driver skips XLA's kernels, so values are
/// not checked.
#[test]
fn jax_pmap_runs_across_two_gpus_through_gpupool() {
    let Some(python) = jax_python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[
        ("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1"),
        ("GPUPOOL_SOFT_DEVICE_COUNT", "2"),
        ("GPUPOOL_SOFT_ONE_MODEL", "1"),
    ]);
    // As in tests/python/jax_through_gpupool.py, the check for a local
    // /dev/nvidiactl stands in for the device plugin's placeholder.
    let script = r#"
import jax._src.hardware_utils as hardware_utils
hardware_utils.has_visible_nvidia_gpu = lambda: True
import jax, jax.numpy as jnp
assert len(jax.devices()) == 2, jax.devices()
r = jax.pmap(lambda v: jax.lax.psum(v, "i"), axis_name="i")(jnp.arange(8.0).reshape(2, 4))
r.block_until_ready()
print("pmap", r.shape, sorted(d.id for d in r.devices()))
z = jax.device_put(jax.device_put(jnp.ones(16), jax.devices()[1]), jax.devices()[0])
z.block_until_ready()
print("moved", sorted(d.id for d in z.devices()))
"#;
    let (ok, stdout, stderr) = run_python_with(&python, &server, &["-c", script], &[]);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok, "{}", context());
    assert!(stdout.contains("pmap (2, 4) [0, 1]"), "{}", context());
    assert!(stdout.contains("moved [0]"), "{}", context());
    assert!(
        stderr.lines().any(|l| l.starts_with("cuCtxEnablePeerAccess ")),
        "no peer access was enabled: {}",
        context()
    );
}

/// JAX 0.10 through gpupool (`tests/python/jax_through_gpupool.py`): jitted
/// training steps with XLA's GEMM autotuning (its redzone checks set and
/// read pinned host memory as device memory), a scan of steps, and a
/// `while_loop` and a `cond` run as CUDA graphs with conditional nodes and
/// programmatic edges (XLA's command buffers for them, asked in
/// `XLA_FLAGS`). The software driver skips XLA's kernels
/// (`GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`); every call must succeed but the
/// one gpupool documents it refuses (`cuMemHostGetDevicePointer`).
#[test]
fn jax_runs_training_steps_and_control_flow_through_gpupool() {
    let Some(python) = jax_python() else { return };
    let _heavy = one_heavy_test_at_a_time();
    let server = Server::start_with(&[("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS", "1")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/jax_through_gpupool.py");
    let flags = "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1";
    let (ok, stdout, stderr) = run_python_with(
        &python,
        &server,
        &[script.to_str().expect("a UTF-8 path")],
        &[("XLA_FLAGS", flags)],
    );
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(ok && stdout.contains("JAX done"), "{}", context());
    // Rows of the call report: name, count, total, mean, round trips,
    // errors (and the last error in parentheses), where.
    let rows: Vec<Vec<&str>> = stderr
        .lines()
        .filter(|l| l.starts_with("cu"))
        .map(|l| l.split_whitespace().collect())
        .filter(|c: &Vec<&str>| c.len() > 6 && c[1].parse::<u64>().is_ok())
        .collect();
    let failing: Vec<&str> = rows
        .iter()
        .filter(|c| c[5] != "0" && c[0] != "cuMemHostGetDevicePointer_v2")
        .map(|c| c[0])
        .collect();
    assert!(failing.is_empty(), "calls that failed: {failing:?}\n{}", context());
    for call in ["cuGraphConditionalHandleCreate", "cuGraphAddNode_v2", "cuGraphLaunch"] {
        assert!(rows.iter().any(|c| c[0] == call), "no {call}\n{}", context());
    }
}
