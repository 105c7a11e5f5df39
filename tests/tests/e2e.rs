//! Whole-system tests: a C program on the driver API -> the gpupool shim
//! (`libcuda.so.1`) -> TCP or QUIC on loopback -> the GPU server -> the
//! software driver test double. Every result is checked by the program
//! against values it computed itself.

use gpupool_proto::codec;
use gpupool_proto::frame::{self, FLAG_WANTS_REPLY};
use gpupool_proto::handshake::{ClientInfo, Hello, Welcome};
use gpupool_proto::message::{Reply, Request};
use gpupool_tests::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

fn both(server: &Server) -> [String; 2] {
    [server.tcp.clone(), server.quic.clone()]
}

#[test]
fn ptx_kernels_run_with_results_checked() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["vadd"]);
        assert!(out.contains("OK vadd n=100000"), "{url}: {out}");
        assert!(out.contains("simulated"), "the device must say it is simulated: {out}");
    }
}

#[test]
fn library_kernels_resolve_and_launch() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["library"]);
        assert!(out.contains("OK library n=5000"), "{url}: {out}");
    }
}

/// (count, round trips) of one call in the shim's call report.
fn report_row(report: &str, call: &str) -> (u64, u64) {
    let cols = report_cols(report, call);
    (cols[1].parse().unwrap(), cols[4].parse().unwrap())
}

/// The columns of `call`'s row of the call report.
fn report_cols<'a>(report: &'a str, call: &str) -> Vec<&'a str> {
    report
        .lines()
        .find(|l| l.split_whitespace().next() == Some(call))
        .unwrap_or_else(|| panic!("{call} missing from the call report:\n{report}"))
        .split_whitespace()
        .collect()
}

/// `driver_check` with `args` and environment `env` through the shim:
/// (success, standard output, standard error), for the tests that look at
/// a failure or at the call report.
fn driver_check_run(server: &Server, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.args(args).envs(env.iter().copied());
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Context limits are asked of the server once and answered in the shim
/// after that (cuDNN's runtime-compiled engines ask one at every execution,
/// 16 round trips a step of a small transformer): a set is seen by the next
/// question, a reset context is back to its defaults, and the stack size,
/// which the driver raises itself, is always asked.
#[test]
fn context_limits_are_asked_once_until_set() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(&server, &["limits"], &[("GPUPOOL_CALL_REPORT", "1")]);
    assert!(
        ok && stdout.contains("OK limits"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    // 1 + 50 + 1 + 10 + 1 questions; the first, the one after the set,
    // the ten of the stack size and the one after the reset ask.
    assert_eq!(report_row(&stderr, "cuCtxGetLimit"), (63, 13), "{stderr}");
}

/// The server's worker dies while a program holds a session: the
/// program's next calls fail with `CUDA_ERROR_DEVICE_UNAVAILABLE` (46), at
/// once, and it goes on to exit normally: no hang, no signal (a write to
/// the closed connection raises no `SIGPIPE`).
#[test]
fn a_dead_server_fails_the_programs_calls_without_a_hang() {
    use std::io::Write as _;
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("outlive")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut program = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(program.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("HOLDING") {
        if std::io::BufRead::read_line(&mut stdout, &mut seen).unwrap_or(0) == 0 {
            panic!("the program ended before it held its session: {seen}\n{}", server.log());
        }
    }
    let worker = server.first_worker_pid() as i32;
    // SAFETY: kill(2) with the worker's pid and a signal number.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    assert!(
        server.wait_for_log("worker exited", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    program.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = program.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the program hangs after its server died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    let after = rest
        .lines()
        .find(|l| l.starts_with("AFTER"))
        .unwrap_or_else(|| panic!("{rest}"));
    for call in ["sync=46", "alloc=46", "copy2=46"] {
        assert!(after.contains(call), "{call}: {after}");
    }
}

/// A cache preference for a function or kernel the shim knows streams (no
/// round trip); a bad preference is refused in the shim.
#[test]
fn cache_preferences_stream() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(&server, &["library"], &[("GPUPOOL_CALL_REPORT", "1")]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    let (calls, trips) = report_row(&stderr, "cuFuncSetCacheConfig");
    assert!(calls >= 3 && trips == 0, "{calls} calls, {trips} round trips: {stderr}");
}

/// `CUDA_VISIBLE_DEVICES` that shows no device makes `cuInit` answer
/// `CUDA_ERROR_NO_DEVICE`, as the driver does, without a session: empty,
/// `-1`, or an index the session does not have (asked of the server). One
/// that shows the session's devices runs as without it.
#[test]
fn cuda_visible_devices_that_show_none_hide_the_gpu() {
    let server = Server::start();
    let run = |value: &str| driver_check_run(&server, &[], &[("CUDA_VISIBLE_DEVICES", value)]);
    for value in ["", "-1", "4"] {
        let (ok, _, stderr) = run(value);
        assert!(
            !ok && stderr.contains("cuInit(0) = 100 (CUDA_ERROR_NO_DEVICE)"),
            "CUDA_VISIBLE_DEVICES={value:?}: {stderr}"
        );
    }
    // Only the index the server was asked about made a session.
    assert_eq!(server.log().matches("session started").count(), 1, "{}", server.log());
    let (ok, stdout, stderr) = run("0");
    assert!(ok && stdout.contains("OK"), "stdout: {stdout}\nstderr: {stderr}");
}

/// `CUDA_VISIBLE_DEVICES` picks and orders the server's devices for the
/// session, numbered from 0, as the driver does for a local program: the
/// daemon hands the client's value to the session's worker, whose driver
/// reads it.
#[test]
fn cuda_visible_devices_picks_and_orders_the_servers_devices() {
    let server = Server::start_with(&[("GPUPOOL_SOFT_DEVICE_COUNT", "3")]);
    for (value, first, count) in [
        ("2", "GPU 2", 1),
        ("1,0", "GPU 1", 2),
        ("0,1,2", "GPU 0", 3),
        ("2,7,0", "GPU 2", 1),
    ] {
        let (ok, stdout, stderr) = driver_check_run(&server, &[], &[("CUDA_VISIBLE_DEVICES", value)]);
        let context = || format!("CUDA_VISIBLE_DEVICES={value}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(ok, "{}", context());
        assert!(
            stdout.contains(&format!("device 0: gpupool simulated {first} (soft driver)")),
            "{}",
            context()
        );
        assert!(stdout.contains(&format!("devices: {count}\n")), "{}", context());
    }
}

/// Peer access between two GPUs of one server is the server's driver's:
/// the shim answers `cuDeviceCanAccessPeer` and the peer attributes as that
/// driver does, and `cuCtxEnablePeerAccess` gives a context's kernels the
/// other device's memory there (a context not given it faults). Where the
/// driver links no devices, enabling is refused.
#[test]
fn peer_access_between_a_servers_gpus_is_its_drivers() {
    for (links, want, says) in [("1", "1", "OK peers rank 0"), ("0", "0", "OK peers none")] {
        let server = Server::start_with(&[("GPUPOOL_SOFT_DEVICE_COUNT", "2"), ("GPUPOOL_SOFT_PEER_ACCESS", links)]);
        let env = [("GPUPOOL_EXPECT_PEER_ACCESS", want), ("GPUPOOL_CHECK_PEER_FAULT", "1")];
        let (ok, stdout, stderr) = driver_check_run(&server, &["peers"], &env);
        assert!(
            ok && stdout.contains(says),
            "links {links}\nstdout: {stdout}\nstderr: {stderr}\nserver: {}",
            server.log()
        );
        // NCCL is told to take its peer transport between the session's
        // GPUs (it cannot see their PCI paths here), unless the program
        // chose a level or gpupool is told not to.
        assert!(stdout.contains("nccl p2p level SYS\n"), "{stdout}");
        for (var, value, level) in [
            ("NCCL_P2P_LEVEL", "PIX", "PIX"),
            ("GPUPOOL_NCCL_P2P_LEVEL", "0", "unset"),
        ] {
            let env = [(var, value), ("GPUPOOL_EXPECT_PEER_ACCESS", want)];
            let (ok, stdout, stderr) = driver_check_run(&server, &["peers"], &env);
            assert!(
                ok && stdout.contains(&format!("nccl p2p level {level}\n")),
                "{var}={value}\n{stdout}\n{stderr}"
            );
        }
    }
}

/// A child forked after the shim connected shares the parent's
/// connection: its calls fail (`CUDA_ERROR_NOT_INITIALIZED`) and its exit
/// handlers leave the parent's session alone. Before, a child that exited
/// normally ended the parent's session, and the parent's next call failed
/// with `CUDA_ERROR_DEVICE_UNAVAILABLE`.
#[test]
fn forked_children_leave_the_parents_session_alone() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(&server, &["fork"], &[("GPUPOOL_CALL_REPORT", "1")]);
    assert!(
        ok && stdout.contains("OK fork"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    // The parent's call report only: the children print none.
    assert_eq!(stderr.matches("gpupool call report").count(), 1, "{stderr}");
    assert_eq!(stdout.matches("OK fork").count(), 1, "{stdout}");
}

/// Driver calls made after the shim's exit handlers ran (a program's
/// library destructors at `exit`, after thread-local storage is gone) fail
/// cleanly, and the shim logs nothing from the torn-down process: before,
/// at debug level, each failed call's log line panicked (caught) in the log
/// writer, and the panic's message reached the program's standard error.
#[test]
fn calls_from_exit_handlers_fail_quietly() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(&server, &["exit-calls"], &[("GPUPOOL_LOG", "debug")]);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("OK before exit"), "stdout: {stdout}\nstderr: {stderr}");
    // The session has ended: both calls fail (the free with no device).
    let late = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OK late calls returned "))
        .unwrap_or_else(|| panic!("the exit handler did not run: {stdout}"));
    assert!(late.split(' ').all(|code| code != "0"), "late calls returned {late}");
    // Debug logging reached the log before exit, and nothing panicked.
    assert!(stderr.contains("call failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Calls of CUDA 12.5 and 13 that cudart looks up: a stream's context
/// with its (absent) green context, the potential cluster size (kept in the
/// shim as other occupancy answers), managed memory prefetched and
/// discarded in batches (and the batches it refuses), and an event for all
/// of a context's work, which follows a host function still running and
/// is refused while a stream of the context captures; the persisting L2
/// lines reset, the linear texture width (kept), and atomic capabilities
/// over the host link and between GPUs (none: neither is offered).
#[test]
fn cuda13_calls_cudart_looks_up() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("cuda13-calls").env("GPUPOOL_CALL_REPORT", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK cuda13 calls (cluster 8)"),
        "stdout: {stdout}\nstderr: {report}\nserver: {}",
        server.log()
    );
    assert_eq!(
        report_row(&report, "cuOccupancyMaxPotentialClusterSize"),
        (3, 1),
        "{report}"
    );
    // Cluster sizes probed as cuBLASLt does: one round trip for eight.
    assert_eq!(report_row(&report, "cuOccupancyMaxActiveClusters"), (8, 1), "{report}");
    assert_eq!(report_row(&report, "cuStreamGetCtx_v2"), (3, 0), "{report}");
    assert_eq!(
        report_row(&report, "cuDeviceGetTexture1DLinearMaxWidth"),
        (3, 2),
        "{report}"
    );
    assert_eq!(
        report_row(&report, "cuDeviceGetHostAtomicCapabilities"),
        (3, 0),
        "{report}"
    );
}

/// (round trips, streamed requests, writes) from a call report's last line.
fn traffic(report: &str) -> (u64, u64, u64) {
    let line = report
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("to the server: "))
        .unwrap_or_else(|| panic!("no traffic line: {report}"));
    let words: Vec<&str> = line.split(' ').collect();
    let at = |label: &str| -> u64 {
        let i = words
            .iter()
            .position(|w| w.trim_end_matches([',', ';']) == label)
            .unwrap();
        words[i - 1].parse().unwrap()
    };
    let writes = words[words.iter().position(|w| *w == "writes,").unwrap() - 1]
        .parse()
        .unwrap();
    (at("round"), at("streamed"), writes)
}

/// Streamed requests held back to go out in one write (`GPUPOOL_HOLD_US`)
/// keep their order and still go out in time: the programs' results are
/// the same as with every frame written at once, a host function the
/// program waits for with no further call runs (the flusher writes what
/// was held), and where the program posts back to back, fewer writes
/// carry the same frames.
#[test]
fn held_back_streamed_requests_keep_order_and_go_out_in_time() {
    let server = Server::start();
    for mode in ["vadd", "streams", "callbacks", "graph", "hostnodes", "ipc-late"] {
        let mut seen = Vec::new();
        for hold in ["0", "200"] {
            let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
            cmd.arg(mode)
                .env("GPUPOOL_HOLD_US", hold)
                .env("GPUPOOL_CALL_REPORT", "1");
            let out = run_with_timeout(cmd, Duration::from_secs(60));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success() && stdout.contains("OK "),
                "{mode} (hold {hold} µs): stdout: {stdout}\nstderr: {stderr}\nserver: {}",
                server.log()
            );
            let (trips, streamed, writes) = traffic(&stderr);
            if hold == "0" {
                assert!(
                    writes >= trips + streamed,
                    "{mode}: {writes} writes for {trips} + {streamed} frames"
                );
            } else if matches!(mode, "streams" | "graph") {
                // These post streamed requests back to back, so some share
                // a write however slow the machine; the others post a few
                // between waiting calls, and whether two fall within the
                // hold time is up to the machine's timing.
                assert!(
                    writes < trips + streamed,
                    "{mode}: nothing was held back ({writes} writes)"
                );
            }
            seen.push(
                stdout
                    .lines()
                    .filter(|l| l.starts_with("OK"))
                    .map(String::from)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(seen[0], seen[1], "{mode}: held back or not, the same results");
    }
}

/// Green contexts: the server's driver splits the device's SMs; a green
/// context of one group is a context of the session, running a kernel on
/// its default stream and on a stream of its own over the primary
/// context's memory, recording its work in an event; streams name it and
/// the primary context; what was allocated in it outlives it.
#[test]
fn green_contexts_partition_the_devices_sms() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("green");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK green 16 of 132 SMs"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    // A fault on a green stream, launched with the primary context
    // current, is kept for the stream's context and reported by its
    // synchronisation.
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.args(["green", "fault"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK green fault reported: 700"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
}

/// The driver's error log, kept in the shim: failed calls (refused by the
/// shim or failed on the server) reach callbacks and dumps in the driver's
/// format, the oldest are overwritten past 25,600 bytes, and every message
/// goes to `CUDA_LOG_FILE` as it is made.
#[test]
fn failed_calls_reach_the_error_log() {
    let server = Server::start();
    let dir = scratch_dir();
    let dump = dir.join("error-log-dump.log");
    let live = dir.join("error-log-live.log");
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("logs").arg(&dump).env("CUDA_LOG_FILE", &live);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK logs (2 told)"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    let dumped = std::fs::read_to_string(&dump).unwrap();
    assert!(dumped.len() <= 25_600 + 200, "{} bytes dumped", dumped.len());
    assert!(
        dumped
            .lines()
            .next()
            .unwrap()
            .ends_with("earlier log messages were truncated"),
        "{dumped}"
    );
    let last = dumped.lines().last().unwrap();
    assert!(
        last.ends_with("[CUDA][E] Returning 1 (CUDA_ERROR_INVALID_VALUE) from cuMemFree_v2"),
        "{last}"
    );
    // The live log has every message, the overwritten ones too: the flags
    // refused, 4 and 4 read by iterator, 500 more, the file refused.
    let live = std::fs::read_to_string(&live).unwrap();
    let lines: Vec<&str> = live.lines().collect();
    assert_eq!(lines.len(), 1 + 4 + 4 + 500 + 1, "{live}");
    assert!(lines[0].ends_with("from cuLogsCurrent"), "{live}");
    assert!(
        lines[1].contains("from cuMemFree_v2") && lines[3].contains("from cuMemAlloc_v2"),
        "{live}"
    );
    assert!(lines
        .last()
        .unwrap()
        .ends_with("Returning 301 (CUDA_ERROR_FILE_NOT_FOUND) from cuLogsDumpToFile"));
}

/// How many calls of `call` answered `CUDA_ERROR_NOT_READY`, from the
/// call report's errors column (`N (600)`: N errors, the last one 600).
fn not_ready_answers(report: &str, call: &str) -> u64 {
    let cols = report_cols(report, call);
    match (cols[5].parse::<u64>(), cols.get(6)) {
        (Ok(n), Some(&"(600)")) => n,
        _ => 0,
    }
}

/// The call report of `driver_check completions <phase>` through the shim.
fn completions_report(server: &Server, url: &str, phase: &str) -> String {
    completions_report_with(server, url, phase, &[])
}

/// As `completions_report`, with more environment for the program.
fn completions_report_with(server: &Server, url: &str, phase: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = through_shim(&c_program("driver_check"), url);
    cmd.args(["completions", phase]).env("GPUPOOL_CALL_REPORT", "1");
    cmd.envs(env.iter().copied());
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains(&format!("OK completions {phase}")),
        "{phase}: stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    stderr
}

/// Once the program has asked of an event, the server tells which of its
/// records completed, before its next reply and unasked while the session
/// is idle, and queries of a record told done are answered in the shim
/// (PyTorch's pinned-memory allocator queries an event per block every
/// step). A new record is a new question: the older answer does not
/// settle it. Device-to-host data behind a record is in the
/// program's memory when a query says done. Events the shim may not see
/// recorded (interprocess events, events of a graph's record node) are
/// always asked of the server, and so is every event once the context
/// broke (a kernel fault). The software driver runs pinned copies
/// beside the caller here, so records are not all done at once.
#[test]
fn event_queries_after_a_told_completion_cost_no_round_trip() {
    let server = Server::start_with(&[("GPUPOOL_SOFT_COPY_ENGINE", "1")]);
    for url in both(&server) {
        let report = completions_report(&server, &url, "local");
        let (queries, trips) = report_row(&report, "cuEventQuery");
        assert_eq!(queries, 100, "{url}: {report}");
        // The record completed while the program slept: the server told it
        // unasked, and the first query takes that notice in, so all 100
        // are answered here (without unasked notices the first was a round
        // trip, whose answer brought the notice; without notices all 100
        // were). So is the synchronise after them; the first one, the
        // question that starts the watching, is a round trip.
        assert_eq!(trips, 0, "{url}: {trips} of 100 queries were round trips:\n{report}");
        assert_eq!(report_row(&report, "cuEventSynchronize"), (2, 1), "{url}: {report}");
        completions_report(&server, &url, "data");
    }
    let url = &server.tcp;

    // A new record's query asks the server, or answers "not ready" while
    // the record is young: never done on the older record's answer. The
    // shim holds the streamed records back (100 ms) so that the server
    // cannot have told them before their queries.
    let hold = [("GPUPOOL_HOLD_US", "100000")];
    let report = completions_report_with(&server, url, "again", &hold);
    let (queries, trips) = report_row(&report, "cuEventQuery");
    assert_eq!(queries, 11, "{report}");
    let not_ready = not_ready_answers(&report, "cuEventQuery");
    assert!(
        trips + not_ready >= 10,
        "queries after new records were answered from older answers:\n{report}"
    );

    // Right after its record a query is "not ready" without asking; after
    // a synchronisation it is done (the synchronisation's answer brought
    // the notice), and so it is once an event recorded after it said done
    // (the driver_check program checks those answers).
    let report = completions_report_with(&server, url, "young", &hold);
    let (queries, _) = report_row(&report, "cuEventQuery");
    assert!(queries >= 40, "{report}");
    assert!(not_ready_answers(&report, "cuEventQuery") >= 5, "{report}");

    // A query after a kernel fault tells the fault.
    completions_report(&server, url, "fault");

    let report = completions_report(&server, url, "elsewhere");
    assert_eq!(report_row(&report, "cuEventQuery"), (10, 10), "{report}");
}

/// The server's side of watched records: their completions are told in a
/// notice just before the next reply to a request that asked for one, and
/// unasked while the session is idle (at most 16 notices until the client
/// shows it reads: a reply, or a request flagged `FLAG_NOTICES_TAKEN`);
/// not while the context keeps an error (the reply that tells the error
/// clears it); not for a record into a capture; and a new record ends the
/// older record's watch.
#[test]
fn watched_event_records_are_told_before_replies() {
    use gpupool_proto::message::{StreamRef, CLIENT_HANDLE_TAG, NOTICE_ID};
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    // A missing reply fails the test instead of hanging it.
    s.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let event = CLIENT_HANDLE_TAG | 21;
    s.post(&Request::EventCreate {
        ctx,
        flags: 2,
        id: event,
    });
    let watched = |event, stream, generation| Request::EventRecordWatched {
        ctx,
        event,
        stream,
        generation,
    };
    // (the generations told before its reply, the reply) of a request.
    let ask = |s: &mut RawSession, request: &Request| -> (Vec<(u64, u64)>, Reply) {
        let id = s.send(request);
        let mut told = Vec::new();
        loop {
            match s.next_reply() {
                (NOTICE_ID, Reply::EventsDone { events }) => told.extend(events),
                (got, reply) if got == id => return (told, reply),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    };
    let settle = || std::thread::sleep(Duration::from_millis(50));
    let query = Request::EventQuery { ctx, event };
    s.post(&watched(event, StreamRef::Legacy, 1));
    settle();
    assert_eq!(ask(&mut s, &query), (vec![(event, 1)], Reply::Status(0)));
    // Told unasked: the record completed while the session was idle.
    s.post(&watched(event, StreamRef::Legacy, 2));
    settle();
    assert_eq!(
        s.frames_within(Duration::from_millis(100)),
        [(
            NOTICE_ID,
            Reply::EventsDone {
                events: vec![(event, 2)]
            }
        )]
    );
    assert_eq!(ask(&mut s, &query), (vec![], Reply::Status(0)));
    // While the context keeps an error, completions are not told; the
    // synchronising call that tells the error tells them after it.
    let unknown = CLIENT_HANDLE_TAG | 99;
    s.post(&watched(unknown, StreamRef::Legacy, 1));
    s.post(&watched(event, StreamRef::Legacy, 3));
    settle();
    let (told, info) = ask(&mut s, &Request::MemGetInfo { ctx });
    assert!(told.is_empty() && info.status() == 0, "{told:?} {info:?}");
    assert_eq!(ask(&mut s, &query), (vec![(event, 3)], Reply::Status(400)));
    s.post(&watched(event, StreamRef::Legacy, 4));
    settle();
    assert_eq!(ask(&mut s, &query), (vec![(event, 4)], Reply::Status(0)));
    // Into a capture: a node, not a record.
    let stream = CLIENT_HANDLE_TAG | 22;
    s.post(&Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id: stream,
    });
    let sref = StreamRef::Handle(stream);
    assert_eq!(
        ask(
            &mut s,
            &Request::StreamBeginCapture {
                ctx,
                stream: sref,
                mode: 2
            }
        ),
        (vec![], Reply::Status(0))
    );
    s.post(&watched(event, sref, 5));
    let (told, ended) = ask(&mut s, &Request::StreamEndCapture { ctx, stream: sref });
    assert!(matches!(ended, Reply::Handle(_)), "{ended:?}");
    settle();
    let (later, _) = ask(&mut s, &query);
    assert!(
        !told.contains(&(event, 5)) && !later.contains(&(event, 5)),
        "a captured record was told done"
    );
    // A new record ends the older one's watch; only the latest counts.
    for generation in 6..=9 {
        s.post(&watched(event, StreamRef::Legacy, generation));
    }
    settle();
    let (told, reply) = ask(&mut s, &query);
    assert_eq!(reply, Reply::Status(0));
    assert!(told.contains(&(event, 9)), "{told:?}");
    // At most 16 notices go unasked until the client shows that it reads:
    // a reply, or a request flagged FLAG_NOTICES_TAKEN.
    let quiet = || std::thread::sleep(Duration::from_millis(10));
    for generation in 11..=50 {
        s.post(&watched(event, StreamRef::Legacy, generation));
        quiet();
    }
    let unasked = s.frames_within(Duration::from_millis(100));
    assert_eq!(unasked.len(), 16, "{unasked:?}");
    assert!(unasked
        .iter()
        .all(|f| matches!(f, (NOTICE_ID, Reply::EventsDone { .. }))));
    s.post_flagged(&watched(event, StreamRef::Legacy, 51), frame::FLAG_NOTICES_TAKEN);
    let told = s.frames_within(Duration::from_millis(100));
    assert_eq!(
        told,
        [(
            NOTICE_ID,
            Reply::EventsDone {
                events: vec![(event, 51)]
            }
        )],
        "after the flag"
    );
    // Destroyed while watched: the session goes on.
    s.post(&watched(event, StreamRef::Legacy, 10));
    s.post(&Request::EventDestroy { ctx, event });
    settle();
    let (_, reply) = ask(&mut s, &query);
    assert_eq!(reply, Reply::Status(400), "the destroyed event is gone");
}

/// A tensor map encoded again with the same arguments is the shim's
/// answer; a refusal the shim can judge (rank 6) costs no round trip.
#[test]
fn tensor_maps_are_encoded_once_per_arguments() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("queries").env("GPUPOOL_CALL_REPORT", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stderr);
    // Two encodes of one map (one round trip), three refused by the
    // driver, one by the shim.
    assert_eq!(report_row(&report, "cuTensorMapEncodeTiled"), (6, 4));
    assert_eq!(report_row(&report, "cuTensorMapReplaceAddress"), (2, 2));
    assert_eq!(report_row(&report, "cuTensorMapEncodeIm2col"), (1, 1));
}

#[test]
fn repeated_queries_are_answered_in_the_shim() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("library").env("GPUPOOL_CALL_REPORT", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stderr);
    // Kernel names come from the image itself: no round trip for the four
    // it has; the one it lacks the server's driver is asked of (the
    // library's load, then the lookup), so that a name the shim's reading
    // missed is still found.
    assert_eq!(report_row(&report, "cuLibraryGetKernel"), (5, 2));
    // The same question twice costs one round trip.
    assert_eq!(
        report_row(&report, "cuOccupancyMaxActiveBlocksPerMultiprocessor"),
        (2, 1)
    );
    let (calls, trips) = report_row(&report, "cuKernelGetFunction");
    assert_eq!(calls, 2);
    assert!(
        trips <= 2,
        "the second lookup of a kernel's function went to the server"
    );
    assert_eq!(report_row(&report, "cuDevicePrimaryCtxGetState").1, 0);
    // A set repeating the value the driver took is answered in the shim;
    // a new value, a read-only attribute, a refused value, and a set after
    // one through the kernel's function go to the server.
    assert_eq!(report_row(&report, "cuKernelSetAttribute"), (6, 5));
    assert_eq!(report_row(&report, "cuFuncSetAttribute"), (2, 1));
    // An attribute read after a set of it is asked again; one the driver
    // does not have is refused from the shim the second time; the others
    // came with the first answer, all of them in one round trip, as the
    // function's ten did.
    assert_eq!(report_row(&report, "cuKernelGetAttribute"), (8, 3));
    assert_eq!(report_row(&report, "cuFuncGetAttribute"), (10, 1));
}

/// Stream capture and graphs: launches, a device copy and a memset captured
/// on a stream replay from the graph on the server with new inputs each
/// time; a graph launch is one streamed message; a copy from the program's
/// memory in a capture is refused at once and the capture fails at its end.
#[test]
fn captured_graphs_replay_on_the_server() {
    let server = Server::start();
    for url in both(&server) {
        let mut cmd = through_shim(&c_program("driver_check"), &url);
        cmd.arg("graph").env("GPUPOOL_CALL_REPORT", "1");
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("OK graph n=4096"),
            "{url}: {stdout}\n{report}"
        );
        assert_eq!(report_row(&report, "cuGraphLaunch"), (21, 0), "{url}");
        assert_eq!(report_row(&report, "cuStreamIsCapturing").1, 0, "{url}");
        assert_eq!(report_row(&report, "cuStreamGetCaptureInfo").1, 0, "{url}");
    }
}

/// Host nodes of graphs, captured and built (a child graph's copied in
/// twice): the program's functions run at every launch, in order behind the
/// work before them, and synchronising waits for them; an update gives the
/// executable graph the new graph's functions.
#[test]
fn graph_host_nodes_run_in_the_program_at_every_launch() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["hostnodes"]);
        assert!(out.contains("OK hostnodes counted=16"), "{url}: {out}");
    }
}

#[test]
fn asynchronous_error_is_reported_at_the_next_synchronise() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["fault"]);
        assert!(out.contains("OK fault reported at synchronize: 700"), "{url}: {out}");
    }
}

/// `CUDA_LAUNCH_BLOCKING=1`, which PyTorch's every CUDA error message
/// suggests for debugging, makes a faulting kernel's launch return its
/// fault, through gpupool as with a local driver: the shim waits for each
/// launch's answer, and the program's value is the server's driver's (the
/// hello carries the driver's variables the program set). Before, it was
/// ignored and the fault surfaced at a later call.
#[test]
fn cuda_launch_blocking_makes_a_launch_return_its_kernels_fault() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(
        &server,
        &["fault"],
        &[("CUDA_LAUNCH_BLOCKING", "1"), ("GPUPOOL_CALL_REPORT", "1")],
    );
    assert!(
        ok && stdout.contains("OK fault reported at synchronize: 700"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    // The launch itself answered the fault, after a round trip.
    let cols = report_cols(&stderr, "cuLaunchKernel");
    assert_eq!(cols[5..7], ["1", "(700)"], "{stderr}");
    assert!(stderr.contains("0 streamed requests"), "{stderr}");
}

/// The driver's variables the program sets are its session's driver's
/// on the server (`CUDA_DEVICE_MAX_CONNECTIONS`, which Megatron-LM sets to
/// 1 to order its kernels); variables naming the program's paths, and
/// others, are not passed on.
#[test]
fn the_programs_driver_variables_reach_its_worker() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.args(["hold", "1"])
        .env("CUDA_DEVICE_MAX_CONNECTIONS", "1")
        .env("CUDA_MODULE_LOADING", "EAGER")
        .env("CUDA_CACHE_PATH", "/nonexistent/cache")
        .stdout(std::process::Stdio::piped());
    let mut holder = cmd.spawn().unwrap();
    let seen = output_until_holding(&mut holder);
    let pid = server
        .log()
        .lines()
        .find(|l| l.contains("session started"))
        .and_then(|l| l.split(" pid=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no worker pid: {seen}\n{}", server.log()));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for want in ["CUDA_DEVICE_MAX_CONNECTIONS=1", "CUDA_MODULE_LOADING=EAGER"] {
        assert!(
            vars.iter().any(|v| v == want),
            "{want} missing from the worker's environment: {vars:?}"
        );
    }
    assert!(!vars.iter().any(|v| v.starts_with("CUDA_CACHE_PATH=")), "{vars:?}");
}

#[test]
fn out_of_bounds_copies_are_refused() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["oob"]);
        assert!(out.contains("OK out-of-bounds refused"), "{url}: {out}");
    }
}

/// The software driver's copy engine makes the server's pinned staging
/// copies run beside the worker, as a GPU's DMA does: a staging buffer
/// reused, or a copy answered, before its device copy is done gives wrong
/// bytes here.
const COPY_ENGINE: (&str, &str) = ("GPUPOOL_SOFT_COPY_ENGINE", "1");

#[test]
fn large_copies_are_chunked_and_exact() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain(both(&engine)) {
        let out = driver_check(&url, &["big", "20"]);
        assert!(out.contains("OK big 20 MiB"), "{url}: {out}");
    }
}

/// Pitched allocations, 2D copies (bands of whole rows, rows wider than a
/// copy chunk, device to device) and memsets, unified-address copies and
/// host registration, checked byte by byte, gaps between rows included.
#[test]
fn two_dimensional_and_unified_copies_are_exact() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["copies2d"]);
        assert!(out.contains("OK copies2d"), "{url}: {out}");
    }
}

/// Host functions run in the program, in order, after the data before them
/// landed, with no further call needed to deliver them; synchronising calls
/// and queries wait for exactly the functions their work follows (a
/// function that waits does not hold up an unrelated stream). Over TCP and
/// QUIC, and with the copy engine, where the driver's thread calls the
/// server's host function while the worker may be waiting for a request.
#[test]
fn host_functions_run_in_the_program_in_stream_order() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["callbacks"]);
        assert!(out.contains("OK callbacks 12 host functions"), "{url}: {out}");
    }
}

/// The entry points CUDA 13.5's `cuda.h` adds are exported, so a program
/// built with it that links them by name loads; those gpupool implements
/// answer: the parameter counts of a function and of a kernel (from the
/// server driver's layout), and host functions with a sync mode, in order.
#[test]
fn cuda_13_5_entry_points_are_exported_and_answered() {
    let server = Server::start();
    let out = driver_check(&server.tcp, &["cuda135"]);
    assert!(out.contains("OK cuda135 params 4 0 3 host functions 2"), "{out}");
}

/// A driver may give a function the handle of one whose module was
/// unloaded (a real driver's allocator does; the software driver does under
/// `GPUPOOL_SOFT_REUSE_HANDLES=1`): what the server and the shim knew of
/// the freed function (its parameter layout) is not taken for the new one.
/// Modules and then libraries of one kernel each, with different layouts,
/// are loaded, run and unloaded in turn.
#[test]
fn a_freed_functions_handle_given_to_another_is_not_mistaken_for_it() {
    let server = Server::start_with(&[("GPUPOOL_SOFT_REUSE_HANDLES", "1")]);
    let out = driver_check(&server.tcp, &["reuse"]);
    assert!(out.contains("OK reuse 8 rounds"), "{out}");
    assert!(
        out.contains("a freed function's handle was given to another 3 times"),
        "the double must have reused the handles for the test to mean anything: {out}"
    );
    assert!(
        out.contains("a destroyed context's handle was given to the next: yes"),
        "{out}"
    );
}

/// A synchronise does not hold the program's other threads: while one
/// thread's stream waits for a word that another thread writes later, the
/// other thread's copies and queries are answered, and each kind of
/// synchronise (stream, event, context) returns once the write is done.
/// Before synchronises were waited for off the session's thread, this
/// hung. Over TCP and QUIC.
#[test]
fn a_synchronise_waits_without_holding_the_programs_other_threads() {
    let server = Server::start();
    for url in [&server.tcp, &server.quic] {
        let out = driver_check(url, &["sync-threads"]);
        assert!(out.contains("OK sync-threads"), "{url}: {out}");
    }
}

/// A context synchronise with nothing sent since the context's last one
/// succeeded is answered in the shim: of seven synchronises, the first, the
/// one after a memset and the two after a faulting kernel ask the server
/// (the fault is told by both, as by the driver).
#[test]
fn an_idle_contexts_synchronise_is_answered_in_the_shim() {
    let server = Server::start();
    let (ok, stdout, stderr) = driver_check_run(&server, &["ctx-sync-idle"], &[("GPUPOOL_CALL_REPORT", "1")]);
    assert!(
        ok && stdout.contains("OK ctx-sync-idle"),
        "stdout: {stdout}\nstderr: {stderr}\nserver: {}",
        server.log()
    );
    assert_eq!(report_row(&stderr, "cuCtxSynchronize"), (7, 4), "{stderr}");
}

/// A synchronise answered late keeps its place in the request order: it
/// answers the error a streamed call left before it, not one left by a
/// call after it (the next synchronise answers that one), and requests
/// sent after it are answered first while its stream waits.
#[test]
fn a_synchronise_answered_late_answers_the_errors_before_it() {
    use gpupool_proto::message::CLIENT_HANDLE_TAG;
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let flag = s.zeroed_word(ctx);
    let waiting = s.create_stream(ctx, CLIENT_HANDLE_TAG | 60);
    let other = s.create_stream(ctx, CLIENT_HANDLE_TAG | 61);
    // A streamed error before the synchronise: a memset out of bounds.
    s.post(&Request::Memset {
        ctx,
        stream: other,
        dst: flag,
        value: 0,
        elem_size: 4,
        count: 1 << 20,
    });
    s.word_op(ctx, waiting, flag, false);
    let sync = s.send(&Request::StreamSynchronize { ctx, stream: waiting });
    let query = s.send(&Request::StreamQuery { ctx, stream: waiting });
    // A streamed error after it: a wait for an event that does not exist.
    s.post(&Request::StreamWaitEvent {
        ctx,
        stream: other,
        event: CLIENT_HANDLE_TAG | 62,
        flags: 0,
    });
    let (first, answer) = s.next_reply();
    assert_eq!(
        (first, answer),
        (query, Reply::Status(600)),
        "the query after the waiting synchronise is answered first, not ready"
    );
    s.word_op(ctx, other, flag, true);
    let (id, answer) = s.next_reply();
    assert_eq!((id, answer), (sync, Reply::Status(1)), "the error before it");
    assert_eq!(
        s.call(&Request::StreamSynchronize { ctx, stream: other }, &[]),
        Reply::Status(400),
        "the error after it, at the next synchronise"
    );
    assert_eq!(
        s.call(&Request::StreamQuery { ctx, stream: waiting }, &[]),
        Reply::Status(0)
    );
}

/// A client that goes while its synchronise and its copy back wait, for a
/// write that will never come, loses nothing: the session ends, and frees
/// what it held, without waiting for them.
#[test]
fn a_session_whose_synchronise_waits_for_good_still_ends_and_frees() {
    use gpupool_proto::message::CLIENT_HANDLE_TAG;
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let flag = s.zeroed_word(ctx);
    let waiting = s.create_stream(ctx, CLIENT_HANDLE_TAG | 80);
    s.word_op(ctx, waiting, flag, false);
    s.send(&Request::MemcpyDtoH {
        ctx,
        stream: waiting,
        src: flag,
        len: 4096,
        sync: false,
    });
    s.send(&Request::StreamSynchronize { ctx, stream: waiting });
    s.send(&Request::CtxSynchronize { ctx });
    // Answered: the three above are parked.
    let query = s.send(&Request::StreamQuery { ctx, stream: waiting });
    assert_eq!(s.next_reply(), (query, Reply::Status(600)));
    drop(s);
    assert!(
        server.wait_for_log("session ended (client disconnected)", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(
        server.wait_for_log("freed 1 allocations (4096 bytes), 1 streams", Duration::from_secs(10)),
        "{}",
        server.log()
    );
}

/// A device-to-host copy behind a stream wait is answered when its stream
/// gets there, and requests after it are answered meanwhile; its data
/// comes before any answer that tells of work after it (here an event
/// recorded behind it), and before its own answer.
#[test]
fn a_copy_back_answered_late_comes_before_what_tells_of_work_after_it() {
    use gpupool_proto::message::CLIENT_HANDLE_TAG;
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let flag = s.zeroed_word(ctx);
    let waiting = s.create_stream(ctx, CLIENT_HANDLE_TAG | 70);
    let other = s.create_stream(ctx, CLIENT_HANDLE_TAG | 71);
    let event = CLIENT_HANDLE_TAG | 72;
    s.post(&Request::EventCreate {
        ctx,
        flags: 2,
        id: event,
    });
    s.word_op(ctx, waiting, flag, false);
    let copy = s.send(&Request::MemcpyDtoH {
        ctx,
        stream: waiting,
        src: flag,
        len: 4096,
        sync: false,
    });
    s.post(&Request::EventRecord {
        ctx,
        event,
        stream: waiting,
    });
    let query = s.send(&Request::EventQuery { ctx, event });
    assert_eq!(
        s.next_reply(),
        (query, Reply::Status(600)),
        "answered while the copy waits"
    );
    s.word_op(ctx, other, flag, true);
    let sync = s.send(&Request::EventSynchronize { ctx, event });
    let mut frames = Vec::new();
    while frames.last().map(|(id, _)| *id) != Some(sync) {
        frames.push(s.next_reply());
    }
    assert_eq!(
        frames,
        vec![
            (copy, Reply::Data { offset: 0 }),
            (copy, Reply::Done(0)),
            (sync, Reply::Status(0))
        ],
        "the copy's data and answer before the synchronise of the event behind it"
    );
}

/// A capture that refused a copy, abandoned with its context: a stream of a
/// later context that the driver gives the same handle (the software
/// driver gives freed handles again) captures as any other.
#[test]
fn a_capture_abandoned_with_its_context_is_not_taken_for_a_later_streams() {
    use gpupool_proto::message::CLIENT_HANDLE_TAG;
    let server = Server::start();
    let (mut s, _primary) = RawSession::open_with_context(&server);
    let mut ids = CLIENT_HANDLE_TAG | 40;
    let mut capture_in_new_context = |s: &mut RawSession, copy: bool| {
        let Reply::Handle(ctx) = s.call(&Request::CtxCreate { device: 0, flags: 0 }, &[]) else {
            panic!("no context");
        };
        ids += 1;
        let sref = s.create_stream(ctx, ids);
        s.begin_capture(ctx, sref);
        if copy {
            let Reply::Pointer(dst) = s.call(&Request::MemAlloc { ctx, size: 4096 }, &[]) else {
                panic!("no allocation");
            };
            let copy = Request::MemcpyHtoD {
                ctx,
                stream: sref,
                dst,
                offset: 0,
                total: 16,
            };
            s.post_with(&copy, &[7u8; 16]);
            let info = s.call(&Request::StreamCaptureInfo { ctx, stream: sref }, &[]);
            assert!(matches!(info, Reply::CaptureInfo { .. } | Reply::Status(_)), "{info:?}");
            assert!(matches!(s.call(&Request::CtxDestroy { ctx }, &[]), Reply::Status(_)));
            None
        } else {
            Some(s.call(&Request::StreamEndCapture { ctx, stream: sref }, &[]))
        }
    };
    capture_in_new_context(&mut s, true);
    let ended = capture_in_new_context(&mut s, false).expect("an end");
    assert!(
        matches!(ended, Reply::Handle(_)),
        "the later stream's capture: {ended:?}"
    );
}

/// A pointer is host or device memory, never both: device memory is held
/// in the program's address space, so nothing of the program is mapped
/// there; and an allocation the server's driver places on a page the
/// program has mapped (the software driver is told where it will put
/// device memory, and the program maps a page there first) is made again
/// elsewhere, leaving the program's page alone.
#[test]
fn device_memory_never_lies_on_the_programs_memory() {
    const AT: (&str, &str) = ("GPUPOOL_SOFT_DEVICE_ADDRESS", "0x1e0000000000");
    let server = Server::start_with(&[AT]);
    let (ok, out, err) = driver_check_run(&server, &["uva"], &[("GPUPOOL_LOG", "debug"), AT]);
    assert!(ok && out.contains("OK uva"), "{out}\n{err}");
    assert!(out.contains("had a page where device memory was to go: yes"), "{out}");
    assert!(
        err.contains("device addresses lay on the program's memory; allocated again"),
        "the server's driver must have placed an allocation on the program's page: {err}"
    );
}

/// Stream-ordered allocation from the default pool and from a pool of the
/// program's own, in stream order before one synchronise; pool attributes
/// and the device's current pool are the server driver's.
#[test]
fn stream_ordered_allocation_and_pools() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["pools"]);
        assert!(out.contains("OK pools"), "{url}: {out}");
    }
}

/// Virtual memory management as PyTorch's expandable segments use it:
/// physical pieces mapped one after another into a reservation are one
/// range to copies and kernels.
#[test]
fn mapped_pieces_of_a_reservation_are_one_range() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["vmm"]);
        assert!(out.contains("OK vmm"), "{url}: {out}");
    }
}

/// CUDA arrays, 2D and layered: copies between host memory, device memory
/// and arrays (whole, a sub-rectangle, layers by 3D copies, out of bounds
/// refused), a texture over an array and one over pitched device memory read
/// by a kernel, and a surface written in place by one.
#[test]
fn arrays_textures_and_surfaces() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["arrays"]);
        assert!(out.contains("OK arrays 37x19"), "{url}: {out}");
    }
}

/// Managed memory is one pointer on both sides: host writes reach kernels
/// and copies, kernels' results reach host reads (by several threads at
/// once), over each transport.
#[test]
fn managed_memory_is_coherent_between_host_and_kernels() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["managed"]);
        assert!(out.contains("OK managed n=300001"), "{url}: {out}");
    }
}

/// Two processes, two sessions of one server: a handle made in one opens the
/// same memory in the other, which reads what a kernel wrote there and
/// writes back what the first then reads; an interprocess event is waited
/// for across them; freed memory's handle opens nothing.
#[test]
fn memory_and_events_are_shared_between_sessions_of_one_server() {
    let plain = Server::start();
    let engine = Server::start_with(&[COPY_ENGINE]);
    for url in both(&plain).into_iter().chain([engine.tcp.clone()]) {
        let out = driver_check(&url, &["ipc"]);
        assert!(out.contains("OK ipc-child"), "{url}: {out}");
        assert!(out.contains("OK ipc-gone"), "{url}: {out}");
        assert!(out.contains("OK ipc: memory and an event"), "{url}: {out}");
    }
}

/// Physical memory exported as a file descriptor (as PyTorch's expandable
/// segments share it) is mapped by another process, another session of the
/// server, which reads it and writes it; the first sees the write.
#[test]
fn physical_memory_travels_as_a_file_descriptor_between_sessions() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["vmm-ipc"]);
        assert!(out.contains("OK vmm-ipc-child"), "{url}: {out}");
        assert!(out.contains("OK vmm-ipc granularity"), "{url}: {out}");
    }
}

/// A code image larger than a frame (48 MiB) reaches the server in pieces
/// and its kernel runs; loaded again, it is named, not sent.
#[test]
fn a_code_image_larger_than_a_frame_goes_in_pieces() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("big-image").env("GPUPOOL_CALL_REPORT", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK big-image 48 MiB"),
        "{stdout}\n{stderr}\n{}",
        server.log()
    );
    // Sent once: about 48 MiB in all, not twice that.
    let sent: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split(" bytes sent")
                .next()
                .filter(|_| l.starts_with("to the server"))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no traffic line: {stderr}"));
    assert!((48 << 20..80 << 20).contains(&sent), "{sent} bytes sent: {stderr}");
}

/// A pool made shareable as a file descriptor travels to another session
/// of the same server (a child process), and so does an allocation of it,
/// by its export data: the child reads what the parent wrote and scales
/// it, the parent sees the result. Pools and memory that were not made
/// exportable, and descriptors or data that name nothing, are refused.
#[test]
fn memory_pools_travel_as_file_descriptors_between_sessions() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["pool-ipc"]);
        assert!(out.contains("OK pool-ipc-child"), "{url}: {out}");
        assert!(out.contains("OK pool-ipc\n"), "{url}: {out}");
    }
}

/// An IPC handle opens on the server that made it, in any session there,
/// while its session lives; another server (or the same one after the
/// session ended) refuses it, telling which.
#[test]
fn ipc_handles_open_only_on_their_server_while_their_session_lives() {
    let home = Server::start();
    let other = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &home.tcp);
    cmd.arg("ipc-hold").stdout(std::process::Stdio::piped());
    let mut holder = cmd.spawn().unwrap();
    let seen = output_until_holding(&mut holder);
    let handle = seen
        .lines()
        .find_map(|l| l.strip_prefix("HANDLE "))
        .unwrap_or_else(|| panic!("no handle: {seen}"))
        .to_string();
    assert_eq!(handle.len(), 128, "{seen}");
    let opened = driver_check(&home.tcp, &["ipc-refused", &handle, "0"]);
    let elsewhere = driver_check(&other.tcp, &["ipc-refused", &handle, "801"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(opened.contains("OK ipc-refused 0"), "{opened}");
    assert!(elsewhere.contains("OK ipc-refused 801"), "{elsewhere}");
    assert!(
        other.wait_for_log("made by another server", Duration::from_secs(5)),
        "{}",
        other.log()
    );
    let start = std::time::Instant::now();
    while home.log().matches("worker exited").count() < 2 && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = driver_check(&home.tcp, &["ipc-refused", &handle, "400"]);
    assert!(after.contains("OK ipc-refused 400"), "{after}");
}

#[test]
fn stream_context_and_device_queries_are_answered() {
    let server = Server::start();
    let out = driver_check(&server.tcp, &["queries"]);
    assert!(out.contains("OK queries"), "{out}");
}

#[test]
fn async_copies_land_before_a_query_says_done() {
    let server = Server::start_with(&[COPY_ENGINE]);
    for url in both(&server) {
        let out = driver_check(&url, &["streams"]);
        assert!(out.contains("OK streams"), "{url}: {out}");
    }
}

/// Six threads share the one connection, each on its own stream: their
/// async copies, launches, queries and sync calls interleave, whichever
/// thread reads the connection delivers the others' replies and data, and
/// every value comes back right.
#[test]
fn threads_share_one_connection_and_get_their_own_results() {
    let server = Server::start_with(&[COPY_ENGINE]);
    for url in both(&server) {
        let out = driver_check(&url, &["threads"]);
        assert!(out.contains("OK 6 threads"), "{url}: {out}");
    }
}

#[test]
fn unsupported_call_fails_loudly_by_name() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("unsupported");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not support cuMipmappedArrayCreate"),
        "the log must name the call: {stderr}"
    );
}

#[test]
fn killed_client_memory_is_freed() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.args(["hold", "8"]).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let seen = output_until_holding(&mut child);
    let held = 8 * 1024 * 1024 + 4096;
    assert!(seen.contains(&format!("HOLDING {held}")), "{seen}");
    child.kill().unwrap();
    child.wait().unwrap();
    let line = format!("freed 2 allocations ({held} bytes)");
    assert!(
        server.wait_for_log(&line, Duration::from_secs(15)),
        "server did not free the killed client's memory; log:\n{}",
        server.log()
    );
    assert!(
        server.wait_for_log("worker exited", Duration::from_secs(15)),
        "worker process did not exit:\n{}",
        server.log()
    );
}

fn hello_frame(version: u32) -> Vec<u8> {
    let mut hello = Hello::new(
        None,
        ClientInfo {
            host: "test".into(),
            pid: 1,
            program: "e2e".into(),
        },
    );
    hello.version = version;
    let mut out = Vec::new();
    frame::encode_frame(&mut out, 0, FLAG_WANTS_REPLY, &hello, &[], 1 << 20).unwrap();
    out
}

fn read_welcome(stream: &mut TcpStream) -> Welcome {
    let mut msg = Vec::new();
    let h = frame::read_frame(stream, &mut msg, 1 << 20).unwrap();
    frame::skip_bulk(stream, h.bulk_len).unwrap();
    codec::decode(&msg).unwrap()
}

#[test]
fn malformed_frames_end_that_session_only() {
    let server = Server::start();
    // Garbage instead of a hello.
    let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // A good hello, then a frame claiming 1 GiB, then a frame that does not decode.
    for bad in [
        frame::FrameHeader {
            id: 1,
            flags: 0,
            msg_len: 8,
            bulk_len: 1 << 30,
        }
        .encode()
        .to_vec(),
        {
            let mut f = frame::FrameHeader {
                id: 2,
                flags: 1,
                msg_len: 4,
                bulk_len: 0,
            }
            .encode()
            .to_vec();
            f.extend_from_slice(&[0xee, 0xee, 0xee, 0xee]);
            f
        },
    ] {
        let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
        s.write_all(&hello_frame(gpupool_proto::PROTOCOL_VERSION)).unwrap();
        assert!(matches!(read_welcome(&mut s), Welcome::Accepted(_)));
        s.write_all(&bad).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "server answered a malformed frame");
    }
    assert!(
        server.wait_for_log("protocol violation", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    // The server still serves others.
    let out = driver_check(&server.tcp, &["vadd"]);
    assert!(out.contains("OK vadd"));
}

#[test]
fn wrong_protocol_version_is_refused_with_a_reason() {
    let server = Server::start();
    let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
    s.write_all(&hello_frame(99)).unwrap();
    match read_welcome(&mut s) {
        Welcome::Refused { reason } => assert!(reason.contains("version"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn lease_is_required_when_configured() {
    let server = Server::start_with(&[("GPUPOOL_REQUIRE_LEASE", "true")]);
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires a lease token"), "{stderr}");
}

#[test]
fn quic_refuses_an_unpinned_or_wrong_certificate() {
    let server = Server::start();
    let addr = server.quic.split('?').next().unwrap().to_string();
    for url in [addr.clone(), format!("{addr}?fingerprint={}", "00".repeat(32))] {
        let mut cmd = through_shim(&c_program("driver_check"), &url);
        cmd.arg("vadd");
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert!(!out.status.success(), "{url} should not connect");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cuInit") && (stderr.contains("fingerprint")),
            "{url}: {stderr}"
        );
    }
}

#[test]
fn no_server_configured_is_a_clear_error() {
    let mut cmd = through_shim(&c_program("driver_check"), "");
    cmd.env_remove("GPUPOOL_SERVER").arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GPUPOOL_SERVER is not set"), "{stderr}");
}

/// One session spoken at the protocol level, for tests of server behaviour
/// the shim hides.
struct RawSession {
    stream: TcpStream,
    next_id: u64,
    msg: Vec<u8>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl RawSession {
    /// A non-blocking stream of `ctx` that the client names `id`.
    fn create_stream(&mut self, ctx: u64, id: u64) -> gpupool_proto::message::StreamRef {
        self.post(&Request::StreamCreate {
            ctx,
            flags: 1,
            priority: 0,
            id,
        });
        gpupool_proto::message::StreamRef::Handle(id)
    }

    /// A zeroed 4 KiB allocation of `ctx`, whose first word streams wait
    /// for.
    fn zeroed_word(&mut self, ctx: u64) -> u64 {
        let Reply::Pointer(word) = self.call(&Request::MemAlloc { ctx, size: 4096 }, &[]) else {
            panic!("no allocation");
        };
        let zero = Request::Memset {
            ctx,
            stream: gpupool_proto::message::StreamRef::Legacy,
            dst: word,
            value: 0,
            elem_size: 4,
            count: 1024,
        };
        assert!(matches!(self.call(&zero, &[]), Reply::Status(0)));
        word
    }

    /// Stream `stream` waits until the word at `addr` is at least 1, or
    /// (`write`) writes 1 there; streamed.
    fn word_op(&mut self, ctx: u64, stream: gpupool_proto::message::StreamRef, addr: u64, write: bool) {
        use gpupool_proto::message::MemOp;
        let (value, wide, flags) = (1, false, 0);
        let op = if write {
            MemOp::Write {
                addr,
                value,
                wide,
                flags,
            }
        } else {
            MemOp::Wait {
                addr,
                value,
                wide,
                flags,
            }
        };
        self.post(&Request::StreamMemOps {
            ctx,
            stream,
            ops: vec![op],
        });
    }

    /// Begin a capture (relaxed mode) on `stream`, which the server takes.
    fn begin_capture(&mut self, ctx: u64, stream: gpupool_proto::message::StreamRef) {
        let begin = Request::StreamBeginCapture { ctx, stream, mode: 2 };
        assert!(matches!(self.call(&begin, &[]), Reply::Status(0)));
    }

    fn open(server: &Server) -> RawSession {
        let mut stream = TcpStream::connect(server.tcp_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(&hello_frame(gpupool_proto::PROTOCOL_VERSION)).unwrap();
        assert!(matches!(read_welcome(&mut stream), Welcome::Accepted(_)));
        RawSession {
            stream,
            next_id: 1,
            msg: Vec::new(),
            log: server.log_handle(),
        }
    }

    /// A session with device 0's primary context retained.
    fn open_with_context(server: &Server) -> (RawSession, u64) {
        let mut s = RawSession::open(server);
        let Reply::Handle(ctx) = s.call(&Request::PrimaryCtxRetain { device: 0 }, &[]) else {
            panic!("no primary context");
        };
        (s, ctx)
    }

    /// Send a request streamed: no reply is asked for.
    fn post(&mut self, request: &Request) {
        self.post_with(request, &[]);
    }

    /// Send a request streamed, with frame flags.
    fn post_flagged(&mut self, request: &Request, flags: u32) {
        self.next_id += 1;
        let mut out = Vec::new();
        frame::encode_frame(&mut out, self.next_id, flags, request, &[], 1 << 30).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// The frames the server sends within `wait`, without asking: (id,
    /// reply) each.
    fn frames_within(&mut self, wait: Duration) -> Vec<(u64, Reply)> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut frames = Vec::new();
        loop {
            match frame::read_frame(&mut self.stream, &mut self.msg, 1 << 20) {
                Ok(h) => {
                    frame::skip_bulk(&mut self.stream, h.bulk_len).unwrap();
                    frames.push((h.id, codec::decode(&self.msg).unwrap()));
                }
                Err(gpupool_proto::ProtoError::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break
                }
                Err(e) => panic!("{e:?}; server log:\n{}", self.log.lock().unwrap()),
            }
        }
        self.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        frames
    }

    /// Send a request with a bulk tail, streamed.
    fn post_with(&mut self, request: &Request, bulk: &[u8]) {
        self.next_id += 1;
        let mut out = Vec::new();
        frame::encode_frame(&mut out, self.next_id, 0, request, bulk, 1 << 30).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Send a request that wants a reply without waiting for it; returns
    /// its id.
    fn send(&mut self, request: &Request) -> u64 {
        self.next_id += 1;
        let mut out = Vec::new();
        frame::encode_frame(&mut out, self.next_id, FLAG_WANTS_REPLY, request, &[], 1 << 30).unwrap();
        self.stream.write_all(&out).unwrap();
        self.next_id
    }

    /// The next reply, whichever request it answers: (its id, the reply).
    fn next_reply(&mut self) -> (u64, Reply) {
        let h = frame::read_frame(&mut self.stream, &mut self.msg, 1 << 20)
            .unwrap_or_else(|e| panic!("{e:?}; server log:\n{}", self.log.lock().unwrap()));
        frame::skip_bulk(&mut self.stream, h.bulk_len).unwrap();
        (h.id, codec::decode(&self.msg).unwrap())
    }

    fn call(&mut self, request: &Request, bulk: &[u8]) -> Reply {
        self.next_id += 1;
        let mut out = Vec::new();
        frame::encode_frame(&mut out, self.next_id, FLAG_WANTS_REPLY, request, bulk, 1 << 30).unwrap();
        self.stream.write_all(&out).unwrap();
        // Data frames of a device-to-host copy come before its final reply;
        // notices (the driver's output) may too.
        loop {
            let h = frame::read_frame(&mut self.stream, &mut self.msg, 1 << 20)
                .unwrap_or_else(|e| panic!("{e:?}; server log:\n{}", self.log.lock().unwrap()));
            frame::skip_bulk(&mut self.stream, h.bulk_len).unwrap();
            if h.id == gpupool_proto::message::NOTICE_ID {
                continue;
            }
            assert_eq!(h.id, self.next_id);
            match codec::decode(&self.msg).unwrap() {
                Reply::Data { .. } => continue,
                r => return r,
            }
        }
    }
}

/// The PTX module of the C test programs, as the bytes a program passes.
fn test_ptx() -> Vec<u8> {
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("c/kernels.ptx.h")).unwrap();
    let mut ptx = String::new();
    for line in header.lines().filter(|l| l.starts_with('"')) {
        let body = line.trim_end_matches(';').trim().trim_matches('"');
        ptx.push_str(&body.replace("\\n", "\n").replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    assert!(ptx.contains(".entry gp_vector_add"));
    // Programs pass PTX NUL-terminated, and the shim sends the NUL.
    ptx.push('\0');
    ptx.into_bytes()
}

/// An image sent in pieces (`ImagePart`) loads once all its pieces are
/// there and its hash holds; pieces out of order, past the announced
/// length, over the limit, or an image whose bytes do not have the hash
/// named, leave nothing to load, and the session goes on.
#[test]
fn images_in_pieces_load_only_whole_and_as_named() {
    let server = Server::start();
    let image = test_ptx();
    let sha256: [u8; 32] = Sha256::digest(&image).into();
    let total = image.len() as u64;
    let half = image.len() / 2;
    let mut s = RawSession::open(&server);
    let part = |offset: usize| Request::ImagePart {
        sha256,
        offset: offset as u64,
        total,
    };
    // The second half first: nothing to load.
    s.post_with(&part(half), &image[half..]);
    assert!(matches!(
        s.call(&Request::LibraryLoad { sha256 }, &[]),
        Reply::ImageUnknown
    ));
    // A gap between the pieces.
    s.post_with(&part(0), &image[..half - 1]);
    s.post_with(&part(half), &image[half..]);
    assert!(matches!(
        s.call(&Request::LibraryLoad { sha256 }, &[]),
        Reply::ImageUnknown
    ));
    // More than announced.
    let short = Request::ImagePart {
        sha256,
        offset: 0,
        total: half as u64,
    };
    s.post_with(&short, &image);
    assert!(matches!(
        s.call(&Request::LibraryLoad { sha256 }, &[]),
        Reply::ImageUnknown
    ));
    // Bytes that do not have the hash named.
    let mut other = image.clone();
    other[10] ^= 1;
    s.post_with(&part(0), &other[..half]);
    s.post_with(&part(half), &other[half..]);
    assert!(matches!(
        s.call(&Request::LibraryLoad { sha256 }, &[]),
        Reply::ImageUnknown
    ));
    // Over the limit.
    let huge = Request::ImagePart {
        sha256,
        offset: 0,
        total: gpupool_proto::message::MAX_IMAGE_BYTES + 1,
    };
    s.post_with(&huge, &image[..16]);
    assert!(matches!(
        s.call(&Request::LibraryLoad { sha256 }, &[]),
        Reply::ImageUnknown
    ));
    // In order and whole: it loads, and its kernels are there.
    s.post_with(&part(0), &image[..half]);
    s.post_with(&part(half), &image[half..]);
    let Reply::Handle(lib) = s.call(&Request::LibraryLoad { sha256 }, &[]) else {
        panic!("the image sent in pieces did not load:\n{}", server.log());
    };
    let found = s.call(
        &Request::LibraryGetKernel {
            library: lib,
            name: "gp_vector_add".into(),
        },
        &[],
    );
    assert!(matches!(found, Reply::Handle(_)), "{found:?}");
}

#[test]
fn images_are_shipped_once_per_server_and_checked_by_content() {
    let server = Server::start();
    let image = test_ptx();
    let sha256: [u8; 32] = Sha256::digest(&image).into();

    let mut a = RawSession::open(&server);
    assert!(
        matches!(a.call(&Request::LibraryLoad { sha256 }, &[]), Reply::ImageUnknown),
        "a server that never saw the image asks for it"
    );
    let lib = match a.call(&Request::LibraryLoad { sha256 }, &image) {
        Reply::Handle(h) => h,
        other => panic!("library load with the image failed: {other:?}\n{}", server.log()),
    };
    let Reply::Handle(_) = a.call(
        &Request::LibraryGetKernel {
            library: lib,
            name: "gp_vector_add".into(),
        },
        &[],
    ) else {
        panic!("kernel lookup failed");
    };

    // Another session of the same server loads it by hash alone.
    let mut b = RawSession::open(&server);
    let Reply::Handle(lib_b) = b.call(&Request::LibraryLoad { sha256 }, &[]) else {
        panic!("second session could not load the cached image by hash");
    };
    assert!(matches!(
        b.call(
            &Request::LibraryGetKernel {
                library: lib_b,
                name: "gp_scale".into(),
            },
            &[],
        ),
        Reply::Handle(_)
    ));

    // A client cannot file bytes under another image's hash: the server
    // files what it receives under the hash it computes itself.
    let mut other = image.clone();
    let pos = other.windows(13).position(|w| w == b"gp_vector_add").unwrap();
    other[pos..pos + 13].copy_from_slice(b"gp_vector_sub");
    let claimed = Sha256::digest(b"some other image").into();
    assert!(matches!(
        b.call(&Request::LibraryLoad { sha256: claimed }, &other),
        Reply::Handle(_)
    ));
    let mut c = RawSession::open(&server);
    assert!(
        matches!(
            c.call(&Request::LibraryLoad { sha256: claimed }, &[]),
            Reply::ImageUnknown
        ),
        "a claimed hash must not name bytes that do not have it"
    );
    let real: [u8; 32] = Sha256::digest(&other).into();
    assert!(matches!(
        c.call(&Request::LibraryLoad { sha256: real }, &[]),
        Reply::Handle(_)
    ));
    // An image the driver refuses is not kept.
    let junk = b"\x7fELF this is not a cubin".to_vec();
    assert!(matches!(
        c.call(&Request::LibraryLoad { sha256: Sha256::digest(&junk).into() }, &junk),
        Reply::Status(s) if s != 0
    ));
    assert!(matches!(
        c.call(
            &Request::LibraryLoad {
                sha256: Sha256::digest(&junk).into()
            },
            &[]
        ),
        Reply::ImageUnknown
    ));
}

/// Cache preferences reach the server's driver, which judges the value;
/// the server takes them only for the session's own kernels and functions.
#[test]
fn cache_preferences_reach_the_driver_for_the_sessions_own_kernels() {
    use gpupool_proto::message::CacheTarget;
    let server = Server::start();
    let image = test_ptx();
    let sha256: [u8; 32] = Sha256::digest(&image).into();
    let mut a = RawSession::open(&server);
    let Reply::Handle(ctx) = a.call(&Request::PrimaryCtxRetain { device: 0 }, &[]) else {
        panic!("no context");
    };
    let Reply::Handle(lib) = a.call(&Request::LibraryLoad { sha256 }, &image) else {
        panic!("library load failed\n{}", server.log());
    };
    let Reply::Handle(kernel) = a.call(
        &Request::LibraryGetKernel {
            library: lib,
            name: "gp_scale".into(),
        },
        &[],
    ) else {
        panic!("kernel lookup failed");
    };
    let Reply::Handle(func) = a.call(&Request::KernelGetFunction { ctx, kernel }, &[]) else {
        panic!("no function for the kernel");
    };
    let set = |target, config| Request::SetCacheConfig { ctx, target, config };
    let on_kernel = CacheTarget::Kernel { kernel, device: 0 };
    for target in [CacheTarget::Context, CacheTarget::Function(func), on_kernel] {
        assert!(
            matches!(a.call(&set(target, 2), &[]), Reply::Status(0)),
            "{target:?}: prefer L1 refused\n{}",
            server.log()
        );
        // The driver judges the value (CUDA_ERROR_INVALID_VALUE).
        assert!(
            matches!(a.call(&set(target, 9), &[]), Reply::Status(1)),
            "{target:?}: preference 9 taken"
        );
    }
    // Another session cannot name this one's kernel or function.
    let mut b = RawSession::open(&server);
    let Reply::Handle(ctx_b) = b.call(&Request::PrimaryCtxRetain { device: 0 }, &[]) else {
        panic!("no context");
    };
    for target in [CacheTarget::Function(func), on_kernel] {
        assert!(
            matches!(
                b.call(
                    &Request::SetCacheConfig {
                        ctx: ctx_b,
                        target,
                        config: 1
                    },
                    &[]
                ),
                Reply::Status(400)
            ),
            "{target:?} of another session taken"
        );
    }
}

#[test]
fn kept_errors_are_returned_once_by_a_synchronous_copy() {
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let Reply::Pointer(ptr) = s.call(&Request::MemAlloc { ctx, size: 4096 }, &[]) else {
        panic!("no allocation");
    };
    // A streamed launch of a function the session never looked up fails on
    // the server; its error is kept for the context.
    let bad_launch = |s: &mut RawSession| {
        let launch = Request::Launch(gpupool_proto::message::Launch {
            ctx,
            func: 0xdead_0000,
            kernel: false,
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem: 0,
            stream: gpupool_proto::message::StreamRef::Legacy,
            attrs: Vec::new(),
        });
        s.post(&launch);
    };
    let dtoh = |sync| Request::MemcpyDtoH {
        ctx,
        stream: gpupool_proto::message::StreamRef::Legacy,
        src: ptr,
        len: 16,
        sync,
    };
    bad_launch(&mut s);
    // An asynchronous copy does not report (or clear) it...
    assert!(matches!(s.call(&dtoh(false), &[]), Reply::Done(0)));
    // ...a synchronous one reports it once...
    assert!(matches!(s.call(&dtoh(true), &[]), Reply::Done(400)));
    assert!(matches!(s.call(&dtoh(true), &[]), Reply::Done(0)));
    // ...and so does any synchronising call.
    bad_launch(&mut s);
    assert!(matches!(
        s.call(&Request::CtxSynchronize { ctx }, &[]),
        Reply::Status(400)
    ));
    assert!(matches!(
        s.call(&Request::CtxSynchronize { ctx }, &[]),
        Reply::Status(0)
    ));
}

/// One QUIC exchange at the protocol level: connect to `url`, send a hello
/// with `ticket`, read the welcome. The connection is returned so that the
/// caller decides when it closes.
fn quic_hello(url: &str, ticket: Option<[u8; 32]>) -> (Welcome, gpupool_proto::transport::ClientStream) {
    use gpupool_proto::transport::{self, ClientTls, ServerUrl};
    let url = ServerUrl::parse(url).unwrap();
    let mut stream = transport::connect(&url, &ClientTls::Pinned).unwrap();
    let mut hello = Hello::new(
        None,
        ClientInfo {
            host: "test".into(),
            pid: 1,
            program: "e2e".into(),
        },
    );
    hello.session_ticket = ticket;
    let mut out = Vec::new();
    frame::encode_frame(&mut out, 0, FLAG_WANTS_REPLY, &hello, &[], 1 << 20).unwrap();
    stream.writer.write_all(&out).unwrap();
    let mut msg = Vec::new();
    let h = frame::read_frame(&mut stream.reader, &mut msg, 1 << 20).unwrap();
    frame::skip_bulk(&mut stream.reader, h.bulk_len).unwrap();
    (codec::decode(&msg).unwrap(), stream)
}

/// A QUIC session is handed to its worker on a port of its own; that port
/// serves only the client holding the session's ticket.
#[test]
fn a_redirected_session_port_serves_only_its_ticket() {
    let server = Server::start();
    let (welcome, first) = quic_hello(&server.quic, None);
    let Welcome::Redirect { port, ticket } = welcome else {
        panic!("expected a redirect, got {welcome:?}");
    };
    (first.close)();
    let fingerprint = server.quic.split("fingerprint=").nth(1).unwrap();
    let session_url = format!("quic://127.0.0.1:{port}?fingerprint={fingerprint}");
    let mut wrong = ticket;
    wrong[0] ^= 1;
    for bad in [None, Some(wrong)] {
        match quic_hello(&session_url, bad).0 {
            Welcome::Refused { reason } => assert!(reason.contains("another session"), "{reason}"),
            other => panic!("a connection without the ticket got {other:?}"),
        }
    }
    match quic_hello(&session_url, Some(ticket)).0 {
        Welcome::Accepted(info) => assert!(info.simulated && !info.devices.is_empty(), "{info:?}"),
        other => panic!("the ticket holder got {other:?}"),
    }
}

/// With direct sessions off, the daemon relays QUIC sessions itself; the
/// program sees no difference.
#[test]
fn quic_sessions_are_relayed_when_direct_sessions_are_off() {
    let server = Server::start_with(&[("GPUPOOL_QUIC_DIRECT", "false")]);
    let (welcome, first) = quic_hello(&server.quic, None);
    assert!(matches!(welcome, Welcome::Accepted(_)), "{welcome:?}");
    (first.close)();
    for mode in ["vadd", "threads"] {
        let out = driver_check(&server.quic, &[mode]);
        assert!(out.contains("OK"), "{mode}: {out}");
    }
}

/// A program that exits ends its QUIC session at once: the server frees what
/// it held then, not after the connection's idle timeout (30 s).
#[test]
fn a_quic_session_ends_when_its_program_exits() {
    let server = Server::start();
    let out = driver_check(&server.quic, &["vadd"]);
    assert!(out.contains("OK vadd"), "{out}");
    assert!(
        server.wait_for_log("session ended (client disconnected)", Duration::from_secs(5)),
        "the session outlived its program:\n{}",
        server.log()
    );
}

/// A session's worker runs on the CPUs near its GPU (here as the
/// configuration describes them: the software driver has no PCI device).
#[test]
fn a_worker_is_pinned_to_the_cpus_near_its_gpu() {
    let server = Server::start_configured(&[], Some("[[gpu]]\nordinal = 0\nlocal_cpus = [0]\n"));
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("hold").stdout(std::process::Stdio::piped());
    let mut program = cmd.spawn().unwrap();
    output_until_holding(&mut program);
    let pinned = server.wait_for_log("worker pinned to the CPUs near its GPUs", Duration::from_secs(10));
    let pid = server.first_worker_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = program.kill();
    let _ = program.wait();
    assert!(pinned, "{}", server.log());
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Cpus_allowed_list:") && l.ends_with("\t0")),
        "{status}"
    );
}

/// Streams and events the client names are created without a reply and
/// used by their names; a name that is not a client handle, or one already
/// in use, is refused (at the next synchronise, as a streamed call's error).
#[test]
fn client_named_streams_and_events_are_checked() {
    use gpupool_proto::message::{StreamRef, CLIENT_HANDLE_TAG};
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let stream = CLIENT_HANDLE_TAG | 7;
    let event = CLIENT_HANDLE_TAG | 8;
    let create_stream = |id| Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id,
    };
    s.post(&create_stream(stream));
    s.post(&Request::EventCreate {
        ctx,
        flags: 0,
        id: event,
    });
    s.post(&Request::EventRecord {
        ctx,
        event,
        stream: StreamRef::Handle(stream),
    });
    let sync_stream = |s: &mut RawSession| {
        s.call(
            &Request::StreamSynchronize {
                ctx,
                stream: StreamRef::Handle(stream),
            },
            &[],
        )
    };
    assert!(matches!(sync_stream(&mut s), Reply::Status(0)));
    assert!(matches!(
        s.call(&Request::EventQuery { ctx, event }, &[]),
        Reply::Status(0)
    ));
    // A name in use, and one without the client tag, are refused.
    for bad in [stream, 0x7f00_1234] {
        s.post(&create_stream(bad));
        assert!(
            matches!(s.call(&Request::CtxSynchronize { ctx }, &[]), Reply::Status(1)),
            "name {bad:#x} was accepted"
        );
    }
    // Destroyed, the name no longer resolves.
    s.post(&Request::StreamDestroy { ctx, stream });
    assert!(matches!(sync_stream(&mut s), Reply::Status(400)));
}

/// The server keeps copies through its staging buffers out of captures
/// whatever the client does (a capture would keep the staging buffer's
/// address, which later copies reuse): a copy on a capturing stream is
/// refused with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and the capture ends
/// as invalidated. Graph handles are checked against the client's own.
#[test]
fn the_server_keeps_staging_copies_out_of_captures() {
    use gpupool_proto::message::{StreamRef, CLIENT_HANDLE_TAG};
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let stream = CLIENT_HANDLE_TAG | 9;
    s.post(&Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id: stream,
    });
    let Reply::Pointer(dst) = s.call(&Request::MemAlloc { ctx, size: 4096 }, &[]) else {
        panic!("no allocation");
    };
    let sref = StreamRef::Handle(stream);
    let begin = Request::StreamBeginCapture {
        ctx,
        stream: sref,
        mode: 2,
    };
    assert!(matches!(s.call(&begin, &[]), Reply::Status(0)));
    // Ends on another stream, which is not capturing, change nothing.
    let other = CLIENT_HANDLE_TAG | 10;
    s.post(&Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id: other,
    });
    for _ in 0..2 {
        let end_other = Request::StreamEndCapture {
            ctx,
            stream: StreamRef::Handle(other),
        };
        assert!(matches!(s.call(&end_other, &[]), Reply::Status(401)));
    }
    let copy = Request::MemcpyHtoD {
        ctx,
        stream: sref,
        dst,
        offset: 0,
        total: 16,
    };
    // Streamed, so nothing synchronises the capturing stream: a driver
    // would capture this copy from the pinned staging buffer.
    s.post_with(&copy, &[7u8; 16]);
    assert!(matches!(
        s.call(&Request::StreamEndCapture { ctx, stream: sref }, &[]),
        Reply::Status(901)
    ));
    // The refusal was kept and comes back at the next synchronise.
    assert!(matches!(
        s.call(&Request::CtxSynchronize { ctx }, &[]),
        Reply::Status(900)
    ));
    // A capture that holds no copy gives a graph; unknown graphs are refused.
    assert!(matches!(s.call(&begin, &[]), Reply::Status(0)));
    let Reply::Handle(graph) = s.call(&Request::StreamEndCapture { ctx, stream: sref }, &[]) else {
        panic!("no graph");
    };
    let instantiate = |graph| Request::GraphInstantiate { ctx, graph, flags: 0 };
    assert!(matches!(s.call(&instantiate(graph + 16), &[]), Reply::Status(1)));
    let Reply::Handle(exec) = s.call(&instantiate(graph), &[]) else {
        panic!("no executable graph");
    };
    s.post(&Request::GraphLaunch {
        ctx,
        exec: exec + 16,
        stream: sref,
    });
    assert!(matches!(
        s.call(&Request::CtxSynchronize { ctx }, &[]),
        Reply::Status(1)
    ));
    s.post(&Request::GraphLaunch {
        ctx,
        exec,
        stream: sref,
    });
    assert!(matches!(
        s.call(&Request::StreamSynchronize { ctx, stream: sref }, &[]),
        Reply::Status(0)
    ));
    // A capture refused a copy, then its stream destroyed under it: a new
    // stream the driver gives the same handle (the software driver gives
    // freed handles again) captures as any other.
    s.begin_capture(ctx, sref);
    s.post_with(&copy, &[7u8; 16]);
    assert!(matches!(
        s.call(&Request::StreamDestroy { ctx, stream }, &[]),
        Reply::Status(_)
    ));
    let fresh_ref = s.create_stream(ctx, CLIENT_HANDLE_TAG | 11);
    s.begin_capture(ctx, fresh_ref);
    let end_fresh = Request::StreamEndCapture { ctx, stream: fresh_ref };
    let ended = s.call(&end_fresh, &[]);
    assert!(matches!(ended, Reply::Handle(_)), "the new stream's capture: {ended:?}");
}

/// Conditional nodes, edge data and a capture's graph, as the server checks
/// them whatever the client sends: handles it did not make, shapes the
/// driver does not have, a body destroyed alone or used after its graph
/// went, edge data that does not match, and capture calls on a stream that
/// is not capturing, each refused with `CUDA_ERROR_INVALID_VALUE` (or
/// `CUDA_ERROR_ILLEGAL_STATE`), the session going on.
#[test]
fn conditional_nodes_and_capture_graphs_are_checked() {
    use gpupool_proto::message::{GraphNode, StreamRef, CLIENT_HANDLE_TAG};
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let status = |r: Reply| match r {
        Reply::Status(st) => st,
        other => panic!("expected a status, got {other:?}"),
    };
    let Reply::Handle(graph) = s.call(&Request::GraphCreate { ctx }, &[]) else {
        panic!("no graph");
    };
    let make_handle = |graph| Request::GraphConditionalHandleCreate {
        ctx,
        graph,
        default: 0,
        flags: 0,
    };
    // A graph the session does not have.
    assert_eq!(status(s.call(&make_handle(graph ^ 0x10), &[])), 1);
    let Reply::Handle(h) = s.call(&make_handle(graph), &[]) else {
        panic!("no conditional handle");
    };
    let add = |graph, node| Request::GraphAddNode {
        ctx,
        graph,
        deps: Vec::new(),
        edges: Vec::new(),
        node,
    };
    let cond = |handle, kind, size| GraphNode::Conditional { handle, kind, size };
    // A handle the session never made; kinds and sizes the driver lacks.
    for bad in [
        cond(h ^ 0x5a5a, 0, 1),
        cond(h, 7, 1),
        cond(h, 0, 3),
        cond(h, 1, 2),
        cond(h, 2, 0),
    ] {
        assert_eq!(status(s.call(&add(graph, bad.clone()), &[])), 1, "{bad:?} was accepted");
    }
    let Reply::Conditional { node, bodies } = s.call(&add(graph, cond(h, 0, 2)), &[]) else {
        panic!("no conditional node");
    };
    assert_eq!(bodies.len(), 2);
    // A body is a graph of the session: nodes go into it.
    assert!(matches!(
        s.call(&add(bodies[0], GraphNode::Empty), &[]),
        Reply::Handle(_)
    ));
    // Edge data: one per dependency, and for kernel nodes only.
    let with_edges = |deps: Vec<u64>, edges: Vec<u64>| Request::GraphAddNode {
        ctx,
        graph,
        deps,
        edges,
        node: GraphNode::Empty,
    };
    assert_eq!(status(s.call(&with_edges(vec![node], vec![0x1_0001]), &[])), 1);
    assert_eq!(status(s.call(&with_edges(vec![node], vec![0x1_0001, 0]), &[])), 1);
    let dependency = |edges: Vec<u64>| Request::GraphAddDependencies {
        ctx,
        graph,
        from: vec![node],
        to: vec![node],
        edges,
    };
    assert_eq!(status(s.call(&dependency(vec![0, 0]), &[])), 1);
    // Destroying a body alone is refused; with its graph it goes.
    assert!(matches!(
        s.call(&Request::GraphDestroy { ctx, graph: bodies[1] }, &[]),
        Reply::Status(1)
    ));
    assert!(matches!(
        s.call(&Request::GraphDestroy { ctx, graph }, &[]),
        Reply::Status(0)
    ));
    assert_eq!(status(s.call(&add(bodies[0], GraphNode::Empty), &[])), 1);
    assert_eq!(status(s.call(&make_handle(bodies[0]), &[])), 1);
    // A capture's graph, asked of a stream that is not capturing.
    let stream = CLIENT_HANDLE_TAG | 0x70;
    s.post(&Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id: stream,
    });
    let sref = StreamRef::Handle(stream);
    assert_eq!(
        status(s.call(&Request::StreamCaptureInfo { ctx, stream: sref }, &[])),
        401
    );
    let update = |deps: Vec<u64>, flags| Request::StreamUpdateCaptureDependencies {
        ctx,
        stream: sref,
        deps,
        edges: Vec::new(),
        flags,
    };
    assert_eq!(status(s.call(&update(Vec::new(), 1), &[])), 401);
    // Capturing: the graph comes back and takes nodes; dependencies must
    // be its nodes, and the flags the driver's.
    let begin = Request::StreamBeginCapture {
        ctx,
        stream: sref,
        mode: 2,
    };
    assert_eq!(status(s.call(&begin, &[])), 0);
    let Reply::CaptureInfo {
        graph: captured, deps, ..
    } = s.call(&Request::StreamCaptureInfo { ctx, stream: sref }, &[])
    else {
        panic!("no capture info");
    };
    assert!(deps.is_empty());
    let Reply::Handle(added) = s.call(&add(captured, GraphNode::Empty), &[]) else {
        panic!("no node added to the capture's graph");
    };
    assert_eq!(status(s.call(&update(vec![added], 2), &[])), 1);
    assert_eq!(
        status(s.call(&update(vec![node], 1), &[])),
        1,
        "a node of a destroyed graph"
    );
    assert_eq!(status(s.call(&update(vec![added], 1), &[])), 0);
    let Reply::CaptureInfo { deps, .. } = s.call(&Request::StreamCaptureInfo { ctx, stream: sref }, &[]) else {
        panic!("no capture info");
    };
    assert_eq!(deps, vec![added]);
    let Reply::Handle(ended) = s.call(&Request::StreamEndCapture { ctx, stream: sref }, &[]) else {
        panic!("the capture did not end with a graph");
    };
    assert_eq!(ended, captured);
    assert!(matches!(
        s.call(&Request::CtxSynchronize { ctx }, &[]),
        Reply::Status(0)
    ));
}

/// Graphs changed after they are built, as the server checks them: a node
/// read back as the driver holds it; work of another kind, nodes and edges
/// the session does not have, conditional and memory nodes removed alone,
/// a child graph node's graph destroyed alone, and launch attributes that
/// are not a kernel node's, each refused, the session going on; a clone's
/// host nodes renamed as asked.
#[test]
fn graph_edits_are_checked() {
    use gpupool_proto::message::{GraphNode, CLIENT_HANDLE_TAG};
    let server = Server::start();
    let (mut s, ctx) = RawSession::open_with_context(&server);
    let status = |r: Reply| match r {
        Reply::Status(st) => st,
        other => panic!("expected a status, got {other:?}"),
    };
    let Reply::Pointer(ptr) = s.call(&Request::MemAlloc { ctx, size: 4096 }, &[]) else {
        panic!("no memory");
    };
    let Reply::Handle(graph) = s.call(&Request::GraphCreate { ctx }, &[]) else {
        panic!("no graph");
    };
    let add = |graph, deps: Vec<u64>, node| Request::GraphAddNode {
        ctx,
        graph,
        deps,
        edges: Vec::new(),
        node,
    };
    let memset = GraphNode::Memset {
        dst: ptr,
        pitch: 0,
        value: 0x11,
        elem_size: 1,
        width: 64,
        height: 1,
    };
    let Reply::Handle(set) = s.call(&add(graph, Vec::new(), memset.clone()), &[]) else {
        panic!("no memset node");
    };
    let copy = GraphNode::Copy {
        dst: ptr + 2048,
        src: ptr,
        len: 64,
    };
    let Reply::Handle(cp) = s.call(&add(graph, vec![set], copy.clone()), &[]) else {
        panic!("no copy node");
    };
    // Read back as made.
    let get = |node| Request::GraphNodeGet { ctx, node };
    let Reply::Node { node: got, .. } = s.call(&get(set), &[]) else {
        panic!("no memset read back");
    };
    assert!(matches!(got, GraphNode::Memset { dst, value: 0x11, elem_size: 1, width: 64, .. } if dst == ptr));
    let Reply::Node { node: got, .. } = s.call(&get(cp), &[]) else {
        panic!("no copy read back");
    };
    assert_eq!(got, copy);
    // Nodes the session does not have; work of another kind; a copy
    // outside the session's memory.
    assert_eq!(status(s.call(&get(set + 0x1000_0000), &[])), 1);
    let node_set = |node, params| Request::GraphNodeSet { ctx, node, params };
    assert_eq!(status(s.call(&node_set(set, copy.clone()), &[])), 1);
    let outside = GraphNode::Copy {
        dst: ptr + 4090,
        src: ptr,
        len: 64,
    };
    assert_eq!(status(s.call(&node_set(cp, outside), &[])), 1);
    let moved = GraphNode::Copy {
        dst: ptr + 1024,
        src: ptr,
        len: 32,
    };
    assert_eq!(status(s.call(&node_set(cp, moved.clone()), &[])), 0);
    let Reply::Node { node: got, .. } = s.call(&get(cp), &[]) else {
        panic!("no copy read back");
    };
    assert_eq!(got, moved);
    // Edges: lengths must match, and the edge be there.
    let remove = |from: Vec<u64>, to: Vec<u64>| Request::GraphRemoveDependencies {
        ctx,
        graph,
        from,
        to,
        edges: Vec::new(),
    };
    assert_eq!(status(s.call(&remove(vec![set, set], vec![cp]), &[])), 1);
    assert_eq!(status(s.call(&remove(vec![set], vec![cp + 0x1000_0000]), &[])), 1);
    assert_eq!(status(s.call(&remove(vec![set], vec![cp]), &[])), 0);
    assert_ne!(
        status(s.call(&remove(vec![set], vec![cp]), &[])),
        0,
        "an edge removed twice"
    );
    // Launch attributes are a kernel node's, and events are not among them.
    let attr = |node, attr, set| Request::GraphKernelNodeAttribute { ctx, node, attr, set };
    assert_eq!(status(s.call(&attr(set, 8, None), &[])), 1);
    // Memory and conditional nodes go only with their graph.
    let Reply::Pair(alloc, _) = s.call(
        &add(graph, Vec::new(), GraphNode::MemAlloc { device: 0, size: 4096 }),
        &[],
    ) else {
        panic!("no allocation node");
    };
    let destroy = |node| Request::GraphDestroyNode { ctx, node };
    assert_eq!(status(s.call(&destroy(alloc as u64), &[])), 801);
    let Reply::Handle(h) = s.call(
        &Request::GraphConditionalHandleCreate {
            ctx,
            graph,
            default: 0,
            flags: 0,
        },
        &[],
    ) else {
        panic!("no conditional handle");
    };
    let cond = GraphNode::Conditional {
        handle: h,
        kind: 0,
        size: 1,
    };
    let Reply::Conditional { node: cn, .. } = s.call(&add(graph, Vec::new(), cond), &[]) else {
        panic!("no conditional node");
    };
    assert_eq!(status(s.call(&destroy(cn), &[])), 801);
    // Other nodes go, answered with their graph.
    let Reply::Pair(of, token) = s.call(&destroy(cp), &[]) else {
        panic!("the copy node was not removed");
    };
    assert_eq!((of as u64, token), (graph, 0));
    assert_eq!(status(s.call(&get(cp), &[])), 1, "a removed node read back");
    // A child graph node's graph is the node's: not destroyed alone.
    let Reply::Handle(inner) = s.call(&Request::GraphCreate { ctx }, &[]) else {
        panic!("no graph");
    };
    assert!(matches!(
        s.call(&add(inner, Vec::new(), memset.clone()), &[]),
        Reply::Handle(_)
    ));
    let Reply::Handle(holder) = s.call(&Request::GraphCreate { ctx }, &[]) else {
        panic!("no graph");
    };
    let Reply::Handle(child) = s.call(&add(holder, Vec::new(), GraphNode::Child { graph: inner }), &[]) else {
        panic!("no child graph node");
    };
    let Reply::Node {
        node: GraphNode::Child { graph: own },
        ..
    } = s.call(&get(child), &[])
    else {
        panic!("no child graph read back");
    };
    assert_ne!(own, inner, "the node's graph is a copy");
    assert_eq!(status(s.call(&Request::GraphDestroy { ctx, graph: own }, &[])), 1);
    // A clone: host nodes named by the tokens given are renamed.
    let token = CLIENT_HANDLE_TAG | 0x4000;
    let Reply::Handle(host) = s.call(&add(holder, Vec::new(), GraphNode::Host { token }), &[]) else {
        panic!("no host node");
    };
    let fresh = CLIENT_HANDLE_TAG | 0x4010;
    let clone = |tokens| Request::GraphClone {
        ctx,
        graph: holder,
        tokens,
    };
    // A new name already taken is refused, and no clone is made.
    assert_eq!(status(s.call(&clone(vec![(token, token)]), &[])), 1);
    let Reply::Cloned {
        graph: copy_of,
        renamed,
    } = s.call(&clone(vec![(token, fresh)]), &[])
    else {
        panic!("no clone");
    };
    assert_eq!(renamed, vec![token]);
    let Reply::Handle(found) = s.call(
        &Request::GraphFindInClone {
            ctx,
            node: host,
            clone: copy_of,
        },
        &[],
    ) else {
        panic!("the host node was not found in the clone");
    };
    assert_ne!(found, host);
    assert_eq!(
        status(s.call(
            &Request::GraphFindInClone {
                ctx,
                node: host + 0x1000_0000,
                clone: copy_of,
            },
            &[]
        )),
        1
    );
    // The host node of the original goes with its token told.
    let Reply::Pair(_, gone) = s.call(&destroy(host), &[]) else {
        panic!("the host node was not removed");
    };
    assert_eq!(gone, token as i64);
    for g in [copy_of, holder, inner, graph] {
        assert_eq!(status(s.call(&Request::GraphDestroy { ctx, graph: g }, &[])), 0);
    }
    assert_eq!(status(s.call(&Request::CtxSynchronize { ctx }, &[])), 0);
}
