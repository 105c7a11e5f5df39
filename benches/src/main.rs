//! `gpupool-e2e-bench`: the end-to-end harness. In one run it measures the
//! bare transports (TCP and QUIC ping-pong and bulk streams on loopback) and
//! the same operations through gpupool (a driver-API program through the
//! shim to a GPU server), and prints each gpupool figure beside the bare
//! transport's, with the ratio.
//!
//! ```text
//! gpupool-e2e-bench [--driver PATH] [--max-mib N] [--iters N]
//! ```
//! Without `--driver` the server runs on the software driver (simulated GPU;
//! it measures the remoting path, not a GPU). Build first:
//! `cargo build --release --workspace`.

use anyhow::{bail, Context, Result};
use gpupool_proto::transport::{self, ClientTls, ServerUrl};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Options {
    driver: Option<PathBuf>,
    max_mib: usize,
    iters: usize,
}

fn main() -> Result<()> {
    let mut opts = Options {
        driver: None,
        max_mib: 256,
        iters: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--driver" => opts.driver = Some(args.next().context("--driver PATH")?.into()),
            "--max-mib" => opts.max_mib = args.next().context("--max-mib N")?.parse()?,
            "--iters" => opts.iters = args.next().context("--iters N")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let bin = std::env::current_exe()?.parent().context("binary dir")?.to_path_buf();
    let sizes: Vec<usize> = std::iter::successors(Some(4096usize), |s| Some(s * 4))
        .take_while(|s| *s <= opts.max_mib << 20)
        .collect();

    println!("== bare transports (loopback)");
    let tcp_rtt = tcp_ping_pong(opts.iters)?;
    let quic = QuicPair::start()?;
    let quic_rtt = quic.ping_pong(opts.iters)?;
    println!("tcp  round trip p50 {:.1} µs", tcp_rtt);
    println!("quic round trip p50 {:.1} µs", quic_rtt);
    let mut tcp_bw = Vec::new();
    let mut quic_bw = Vec::new();
    for &s in &sizes {
        tcp_bw.push(tcp_bulk(s)?);
        quic_bw.push(quic.bulk(s)?);
    }

    println!("== through gpupool");
    let program = compile_program(&bin)?;
    let results_tcp = run_gpupool(&bin, &program, &opts, false)?;
    let results_quic = run_gpupool(&bin, &program, &opts, true)?;

    println!();
    println!("{:<34} {:>12} {:>12} {:>8}", "what", "gpupool", "bare", "ratio");
    for (name, res, rtt) in [("tcp", &results_tcp, tcp_rtt), ("quic", &results_quic, quic_rtt)] {
        println!(
            "{:<34} {:>10.1}µs {:>10.1}µs {:>7.2}x",
            format!("{name}: sync call (cuCtxSynchronize) p50"),
            res.sync_us,
            rtt,
            res.sync_us / rtt
        );
        println!(
            "{:<34} {:>10.1}µs {:>10.1}µs {:>7.2}x",
            format!("{name}: 4-byte DtoH p50"),
            res.dtoh4_us,
            rtt,
            res.dtoh4_us / rtt
        );
        println!(
            "{:<34} {:>12.0} {:>12} {:>8}",
            format!("{name}: async launches / s"),
            res.launches,
            "-",
            "-"
        );
    }
    println!();
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "transport", "size", "bare MB/s", "HtoD MB/s", "DtoH MB/s", "HtoD %", "DtoH %"
    );
    for (name, res, bare) in [("tcp", &results_tcp, &tcp_bw), ("quic", &results_quic, &quic_bw)] {
        for (i, &s) in sizes.iter().enumerate() {
            if let Some(&(h, d)) = res.bw.get(&s) {
                println!(
                    "{:<10} {:>10} {:>12.0} {:>12.0} {:>12.0} {:>7.0}% {:>7.0}%",
                    name,
                    human(s),
                    bare[i],
                    h,
                    d,
                    100.0 * h / bare[i],
                    100.0 * d / bare[i]
                );
            }
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
/// message) over TCP, echoed by a thread.
fn tcp_ping_pong(iters: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 48];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut buf = [7u8; 48];
    let mut lat = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        c.write_all(&buf)?;
        c.read_exact(&mut buf)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    let _ = echo.join();
    Ok(median(lat))
}

/// Throughput of sending `size` bytes and getting a one-byte acknowledgement.
fn tcp_bulk(size: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
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
            s.write_all(&[1])?;
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

struct GpupoolResults {
    sync_us: f64,
    dtoh4_us: f64,
    launches: f64,
    bw: std::collections::HashMap<usize, (f64, f64)>,
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

fn run_gpupool(bin: &Path, program: &Path, opts: &Options, quic: bool) -> Result<GpupoolResults> {
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
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|u| u.starts_with(if quic { "quic://" } else { "tcp://" }))
        .context("server ready line")?
        .to_string();
    let run = |args: &[String]| -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .env("LD_LIBRARY_PATH", &shim_dir)
            .env("GPUPOOL_SERVER", &url)
            .output()?;
        if !out.status.success() {
            bail!("benchmark program failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let bench = run(&["bench".into(), opts.iters.to_string()])?;
    let bw = run(&["bw".into(), opts.max_mib.to_string()])?;
    let _ = server.kill();
    let _ = server.wait();
    let mut r = GpupoolResults {
        sync_us: 0.0,
        dtoh4_us: 0.0,
        launches: 0.0,
        bw: Default::default(),
    };
    for l in bench.lines().chain(bw.lines()) {
        if l.starts_with("BENCH sync_roundtrip_us") {
            r.sync_us = field(l, "p50=").unwrap_or(0.0);
        } else if l.starts_with("BENCH dtoh4_us") {
            r.dtoh4_us = field(l, "p50=").unwrap_or(0.0);
        } else if l.starts_with("BENCH launches_per_s") {
            r.launches = l.split_whitespace().last().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        } else if l.starts_with("BENCH bw") {
            if let (Some(s), Some(h), Some(d)) = (field(l, "size="), field(l, "htod_MBps="), field(l, "dtoh_MBps=")) {
                r.bw.insert(s as usize, (h, d));
            }
        }
    }
    println!(
        "{} ({}): {}",
        url.split("?").next().unwrap_or(&url),
        if simulated { "simulated GPU" } else { "real driver" },
        bench
            .lines()
            .filter(|l| l.starts_with("BENCH"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(r)
}
