//! `gpupool-e2e-bench`: the end-to-end harness. In one run it measures the
//! bare transports (TCP and QUIC ping-pong and bulk streams on loopback) and
//! the same operations through gpupool (a driver-API program through the
//! shim to a GPU server), and prints each gpupool figure beside the bare
//! transport's, with the ratio; managed memory is set beside explicit
//! copies of the same size.
//!
//! ```text
//! gpupool-e2e-bench [--driver PATH] [--max-mib N] [--iters N] [--rounds N]
//! ```
//! Without `--driver` the server runs on the software driver (simulated GPU;
//! it measures the remoting path, not a GPU). Build first:
//! `cargo build --release --workspace`.

use anyhow::{bail, Context, Result};
use gpupool_proto::transport::{self, ClientTls, Polling, ServerUrl, SocketRead};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the bare TCP ends poll for before they block: gpupool's default
/// (`GPUPOOL_POLL_US`, the server's `poll_us`).
const POLL: Duration = Duration::from_micros(100);

struct Options {
    driver: Option<PathBuf>,
    max_mib: usize,
    iters: usize,
    rounds: usize,
}

fn main() -> Result<()> {
    let mut opts = Options {
        driver: None,
        max_mib: 256,
        iters: 2000,
        rounds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--driver" => opts.driver = Some(args.next().context("--driver PATH")?.into()),
            "--max-mib" => opts.max_mib = args.next().context("--max-mib N")?.parse()?,
            "--iters" => opts.iters = args.next().context("--iters N")?.parse()?,
            "--rounds" => opts.rounds = args.next().context("--rounds N")?.parse::<usize>()?.max(1),
            other => bail!("unknown argument {other}"),
        }
    }
    let bin = std::env::current_exe()?.parent().context("binary dir")?.to_path_buf();
    let sizes: Vec<usize> = std::iter::successors(Some(4096usize), |s| Some(s * 4))
        .take_while(|s| *s <= opts.max_mib << 20)
        .collect();
    let program = compile_program(&bin)?;
    let pool = Pool::start(&bin, &program, &opts)?;
    let quic = QuicPair::start()?;
    println!(
        "gpupool-server on {} ({}); bare transports: loopback echo and sink",
        pool.tcp_url,
        if pool.simulated { "simulated GPU" } else { "real driver" }
    );

    // Latency: bare and gpupool measured back to back, round after round,
    // so that drift on a busy machine hits both; the ratio is taken per
    // round and its median reported.
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = [
        "tcp: sync call p50",
        "tcp: 4-byte DtoH p50",
        "tcp: sync vs blocking bare",
        "tcp: host function p50",
        "tcp: alloc+free async p50",
        "tcp: managed 1 MiB read vs DtoH",
        "tcp: managed 1 MiB write vs HtoD",
        "quic: sync call p50",
        "quic: 4-byte DtoH p50",
        "quic: host function p50",
        "quic: alloc+free async p50",
    ]
    .iter()
    .map(|n| (n.to_string(), Vec::new(), Vec::new()))
    .collect();
    for round in 0..opts.rounds {
        let tcp_blocking = tcp_ping_pong(opts.iters, Duration::ZERO)?;
        let tcp_rtt = tcp_ping_pong(opts.iters, POLL)?;
        let tcp = pool.latency(false, opts.iters)?;
        let quic_rtt = quic.ping_pong(opts.iters)?;
        let q = pool.latency(true, opts.iters)?;
        println!(
            "round {round}: tcp bare {tcp_rtt:.1} µs (blocking {tcp_blocking:.1}), sync {:.1}, dtoh4 {:.1}, host fn {:.1}, alloc {:.1} | quic bare {quic_rtt:.1} µs, sync {:.1}, dtoh4 {:.1}, host fn {:.1}, alloc {:.1}",
            tcp[0], tcp[1], tcp[2], tcp[3], q[0], q[1], q[2], q[3]
        );
        for (row, (value, bare)) in rows.iter_mut().zip([
            (tcp[0], tcp_rtt),
            (tcp[1], tcp_rtt),
            (tcp[0], tcp_blocking),
            (tcp[2], tcp_rtt),
            (tcp[3], tcp_rtt),
            (tcp[4], tcp[5]),
            (tcp[6], tcp[7]),
            (q[0], quic_rtt),
            (q[1], quic_rtt),
            (q[2], quic_rtt),
            (q[3], quic_rtt),
        ]) {
            row.1.push(value);
            row.2.push(bare);
        }
    }
    let launches_tcp = pool.launches(false, opts.iters)?;
    let launches_quic = pool.launches(true, opts.iters)?;

    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>14}",
        "what (median of rounds)", "gpupool", "baseline", "ratio (median)"
    );
    for (name, values, bares) in &rows {
        let ratios: Vec<f64> = values.iter().zip(bares).map(|(v, b)| v / b).collect();
        println!(
            "{:<34} {:>10.1}µs {:>10.1}µs {:>13.2}x",
            name,
            median(values.clone()),
            median(bares.clone()),
            median(ratios)
        );
    }
    println!("{:<34} {:>12.0}", "tcp: async launches / s", launches_tcp);
    println!("{:<34} {:>12.0}", "quic: async launches / s", launches_quic);

    // Bandwidth: per transport and round, the bare stream at every size,
    // then gpupool's copies at every size; each figure is the median over
    // the rounds, and so is each ratio.
    println!();
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "transport", "size", "bare MB/s", "HtoD MB/s", "DtoH MB/s", "HtoD %", "DtoH %"
    );
    let bw_rounds = opts.rounds.min(3);
    for transport in ["tcp", "quic"] {
        let is_quic = transport == "quic";
        // size -> per round (bare, htod, dtoh)
        let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); sizes.len()];
        for _ in 0..bw_rounds {
            let mut bare = Vec::new();
            for &s in &sizes {
                bare.push(if is_quic { quic.bulk(s)? } else { tcp_bulk(s)? });
            }
            let bw = pool.bandwidth(is_quic, opts.max_mib)?;
            for (i, &s) in sizes.iter().enumerate() {
                if let Some(&(h, d)) = bw.get(&s) {
                    samples[i].push((bare[i], h, d));
                }
            }
        }
        for (i, &s) in sizes.iter().enumerate() {
            let v = &samples[i];
            if v.is_empty() {
                continue;
            }
            let pick = |f: &dyn Fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
            println!(
                "{:<10} {:>10} {:>12.0} {:>12.0} {:>12.0} {:>7.0}% {:>7.0}%",
                transport,
                human(s),
                pick(&|x| x.0),
                pick(&|x| x.1),
                pick(&|x| x.2),
                100.0 * pick(&|x| x.1 / x.0),
                100.0 * pick(&|x| x.2 / x.0)
            );
        }
    }
    Ok(())
}

fn human(s: usize) -> String {
    if s >= 1 << 30 {
        format!("{} GiB", s >> 30)
    } else if s >= 1 << 20 {
        format!("{} MiB", s >> 20)
    } else {
        format!("{} KiB", s >> 10)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Ping-pong of a request-sized message (a frame header plus a small
/// message) over TCP, echoed by a thread. With a non-zero `poll`, both ends
/// poll for up to that long before they block, as gpupool's shim and worker
/// do by default; with zero they block at once.
fn tcp_ping_pong(iters: usize, poll: Duration) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut w = s.try_clone()?;
        let mut r = Polling::new(SocketRead(s), poll);
        let mut buf = [0u8; 48];
        while r.read_exact(&mut buf).is_ok() {
            w.write_all(&buf)?;
        }
        Ok(())
    });
    let c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut w = c.try_clone()?;
    let mut r = Polling::new(SocketRead(c), poll);
    let mut buf = [7u8; 48];
    let mut lat = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        w.write_all(&buf)?;
        r.read_exact(&mut buf)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(w);
    drop(r);
    let _ = echo.join();
    Ok(median(lat))
}

/// Throughput of sending `size` bytes and getting a one-byte acknowledgement
/// (the sink polls, as gpupool's worker does).
fn tcp_bulk(size: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<()> {
        let (s, _) = listener.accept()?;
        let mut ack = s.try_clone()?;
        let mut s = Polling::new(SocketRead(s), POLL);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let mut left = size;
            while left > 0 {
                let n = s.read(&mut buf[..left.min(1 << 20)])?;
                if n == 0 {
                    return Ok(());
                }
                left -= n;
            }
            ack.write_all(&[1])?;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let data = vec![1u8; size];
    let reps = ((256usize << 20) / size).clamp(3, 2000);
    let t = Instant::now();
    for _ in 0..reps {
        c.write_all(&data)?;
        let mut ack = [0u8];
        c.read_exact(&mut ack)?;
    }
    let mbps = (size * reps) as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(c);
    let _ = sink.join();
    Ok(mbps)
}

/// A QUIC server (echo / sink) and a blocking client, as the shim uses them.
struct QuicPair {
    _runtime: tokio::runtime::Runtime,
    url: ServerUrl,
}

impl QuicPair {
    fn start() -> Result<QuicPair> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let dir = std::env::temp_dir().join(format!("gpupool-bench-{}", std::process::id()));
        let identity = transport::load_or_create_server_identity(None, None, &dir)?;
        let endpoint =
            runtime.block_on(async { transport::quic_server_endpoint(&identity, "127.0.0.1:0".parse().unwrap()) })?;
        let addr = endpoint.local_addr()?;
        runtime.spawn(async move {
            while let Some(inc) = endpoint.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = inc.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            // First byte picks the mode: 0 echo 48-byte messages, 1 sink with ack.
                            let mut mode = [0u8; 9];
                            if recv.read_exact(&mut mode).await.is_err() {
                                return;
                            }
                            let size = u64::from_le_bytes(mode[1..9].try_into().unwrap()) as usize;
                            if mode[0] == 0 {
                                let mut buf = [0u8; 48];
                                while recv.read_exact(&mut buf).await.is_ok() {
                                    if send.write_all(&buf).await.is_err() {
                                        return;
                                    }
                                }
                            } else {
                                let mut buf = vec![0u8; 1 << 20];
                                loop {
                                    let mut left = size;
                                    while left > 0 {
                                        match recv.read(&mut buf[..left.min(1 << 20)]).await {
                                            Ok(Some(n)) => left -= n,
                                            _ => return,
                                        }
                                    }
                                    if send.write_all(&[1]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        });
                    }
                });
            }
        });
        let url = ServerUrl::parse(&format!("quic://{addr}?fingerprint={}", identity.fingerprint))?;
        Ok(QuicPair { _runtime: runtime, url })
    }

    fn connect(&self, mode: u8, size: usize) -> Result<transport::ClientStream> {
        let mut c = transport::connect(&self.url, &ClientTls::Pinned)?;
        let mut hdr = [0u8; 9];
        hdr[0] = mode;
        hdr[1..].copy_from_slice(&(size as u64).to_le_bytes());
        c.writer.write_all(&hdr)?;
        Ok(c)
    }

    fn ping_pong(&self, iters: usize) -> Result<f64> {
        let mut c = self.connect(0, 0)?;
        let mut buf = [7u8; 48];
        let mut lat = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            c.writer.write_all(&buf)?;
            c.reader.read_exact(&mut buf)?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(median(lat))
    }

    fn bulk(&self, size: usize) -> Result<f64> {
        let mut c = self.connect(1, size)?;
        let data = vec![1u8; size];
        let reps = ((256usize << 20) / size).clamp(3, 2000);
        let t = Instant::now();
        for _ in 0..reps {
            c.writer.write_all(&data)?;
            let mut ack = [0u8];
            c.reader.read_exact(&mut ack)?;
        }
        Ok((size * reps) as f64 / t.elapsed().as_secs_f64() / 1e6)
    }
}

fn compile_program(bin: &Path) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let out = bin.join("gpupool-bench-driver-check");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(root.join("tests/c/driver_check.c"))
        .arg("-ldl")
        .status()?;
    if !status.success() {
        bail!("compiling the benchmark program failed");
    }
    Ok(out)
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// A gpupool-server on loopback (TCP and QUIC) and the benchmark program,
/// run through the shim against it.
struct Pool {
    server: std::process::Child,
    program: PathBuf,
    shim_dir: PathBuf,
    tcp_url: String,
    quic_url: String,
    simulated: bool,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Pool {
    fn start(bin: &Path, program: &Path, opts: &Options) -> Result<Pool> {
        let shim_dir = bin.join("gpupool-bench-shim");
        std::fs::create_dir_all(&shim_dir)?;
        let link = shim_dir.join("libcuda.so.1");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin.join("libcuda.so"), &link)?;
        let (driver, simulated) = match &opts.driver {
            Some(d) => (d.clone(), false),
            None => (bin.join("libgpupool_softcuda.so"), true),
        };
        let mut cmd = Command::new(bin.join("gpupool-server"));
        cmd.args([
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-quic",
            "127.0.0.1:0",
            "--driver",
        ])
        .arg(&driver);
        if simulated {
            cmd.arg("--simulated");
        }
        let mut server = cmd
            .env("GPUPOOL_LOG", "warn")
            .env("GPUPOOL_STATE_DIR", std::env::temp_dir().join("gpupool-bench-server"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start gpupool-server (build with cargo build --release --workspace)")?;
        let mut line = String::new();
        BufReader::new(server.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let url = |scheme: &str| {
            line.split_whitespace()
                .find(|u| u.starts_with(scheme))
                .map(str::to_string)
                .context("server ready line")
        };
        Ok(Pool {
            tcp_url: url("tcp://")?,
            quic_url: url("quic://")?,
            server,
            program: program.to_path_buf(),
            shim_dir,
            simulated,
        })
    }

    fn run(&self, quic: bool, args: &[String]) -> Result<String> {
        let out = Command::new(&self.program)
            .args(args)
            .env("LD_LIBRARY_PATH", &self.shim_dir)
            .env("GPUPOOL_SERVER", if quic { &self.quic_url } else { &self.tcp_url })
            .output()?;
        if !out.status.success() {
            bail!("benchmark program failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// p50s in µs: a synchronising call, a 4-byte device-to-host copy, a
    /// host function from enqueue to its run, a stream-ordered allocation
    /// with its free; a host read of 1 MiB of device-held managed memory
    /// and a 1 MiB device-to-host copy; a launch after the host wrote
    /// 1 MiB of managed memory and a 1 MiB host-to-device copy.
    fn latency(&self, quic: bool, iters: usize) -> Result<[f64; 8]> {
        let out = self.run(quic, &["latency".into(), iters.to_string()])?;
        let p50 = |key: &str| {
            out.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| field(l, "p50="))
                .with_context(|| format!("no {key} line in {out:?}"))
        };
        Ok([
            p50("BENCH sync_roundtrip_us")?,
            p50("BENCH dtoh4_us")?,
            p50("BENCH hostfn_us")?,
            p50("BENCH alloc_async_us")?,
            p50("BENCH managed_read_1mib_us")?,
            p50("BENCH dtoh_1mib_us")?,
            p50("BENCH managed_writeback_1mib_us")?,
            p50("BENCH htod_1mib_us")?,
        ])
    }

    fn launches(&self, quic: bool, iters: usize) -> Result<f64> {
        let out = self.run(quic, &["bench".into(), iters.to_string()])?;
        out.lines()
            .find(|l| l.starts_with("BENCH launches_per_s"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .context("no launch rate line")
    }

    /// Size -> (host-to-device, device-to-host) MB/s.
    fn bandwidth(&self, quic: bool, max_mib: usize) -> Result<std::collections::HashMap<usize, (f64, f64)>> {
        let out = self.run(quic, &["bw".into(), max_mib.to_string()])?;
        let mut bw = std::collections::HashMap::new();
        for l in out.lines().filter(|l| l.starts_with("BENCH bw")) {
            if let (Some(s), Some(h), Some(d)) = (field(l, "size="), field(l, "htod_MBps="), field(l, "dtoh_MBps=")) {
                bw.insert(s as usize, (h, d));
            }
        }
        Ok(bw)
    }
}
