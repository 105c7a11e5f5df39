//! Accepting sessions: the daemon listens on TCP and QUIC, reads each
//! client's `Hello`, checks version and credentials, and starts a worker
//! process for the session. A TCP socket is handed to the worker whole; a
//! QUIC stream is relayed to the worker over a socket pair. A client's
//! crash, sticky error or leak stays inside its own worker.

use crate::config::ServerConfig;
use crate::images::ImageCache;
use crate::ipc::Registry;
use gpupool_broker::inventory::{Gpu, Nic};
use gpupool_proto::affinity::{affinity_of, CpuSet};
use gpupool_proto::codec;
use gpupool_proto::frame::{FrameHeader, HEADER_LEN};
use gpupool_proto::handshake::{gpu_uuid_string, Hello, MachineGpu, Welcome};
use gpupool_proto::lease::{unix_ms_now, LeaseClaims, LeasePublicKey};
use gpupool_proto::transport::{self, ServerIdentity};
use gpupool_proto::visible;
use gpupool_proto::ProtoError;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The hello must arrive within this long of connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Set for a worker whose session the daemon relays (QUIC).
const RELAYED_ENV: &str = "GPUPOOL_SESSION_RELAYED";
/// Set (hex) for a worker that terminates QUIC itself on the UDP socket at
/// fd 3: the ticket its client must present.
const TICKET_ENV: &str = "GPUPOOL_SESSION_TICKET";
/// The machine's GPUs the session's NVML describes (JSON of
/// `MachineGpu`s), from the daemon to its worker.
const MACHINE_ENV: &str = "GPUPOOL_SESSION_MACHINE";
/// How long a redirected client has to reach its worker.
const REDIRECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a worker gets its session's bytes.
enum SessionSocket {
    /// The client's TCP socket itself.
    Tcp,
    /// A socket pair; the daemon relays the QUIC stream.
    Relayed,
    /// A UDP socket of its own; the client comes back with this ticket.
    QuicDirect([u8; 32]),
}
/// Relay buffer of a QUIC session, each way.
const RELAY_BUFFER: usize = 1 << 20;
/// Largest hello accepted.
const MAX_HELLO: u64 = 64 << 10;
/// The IPC registry, under the state folder.
const IPC_DIR: &str = "ipc";

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerLauncher {
    pub exe: PathBuf,
    pub config_file: Option<PathBuf>,
}

/// Where the daemon listens, once bound.
#[derive(Debug, Clone)]
pub struct Bound {
    pub tcp: Option<std::net::SocketAddr>,
    pub quic: Option<(std::net::SocketAddr, String)>,
}

/// A running session, as the broker agent may end it.
struct LiveSession {
    pid: u32,
    /// The broker's lease id the client presented, when it presented one.
    lease: Option<String>,
    started: Instant,
}

struct Daemon {
    cfg: ServerConfig,
    /// This server's GPUs, by ordinal (their local CPUs pin workers).
    gpus: Vec<Gpu>,
    /// The machine's GPUs as NVML numbers them, with their peer links.
    machine: Vec<MachineGpu>,
    /// Sessions whose workers run (entries leave before the worker is
    /// reaped, so a pid here is never another process's).
    sessions: std::sync::Mutex<std::collections::HashMap<u64, LiveSession>>,
    /// The broker's key, when lease tokens are verified.
    lease_key: Option<LeasePublicKey>,
    launcher: WorkerLauncher,
    /// Where workers file the IPC handles of their sessions.
    ipc: Option<Registry>,
    next_session: AtomicU64,
    live: AtomicUsize,
}

/// Bind the configured listeners and serve until the process is stopped.
/// `on_ready` is told the bound addresses (with the QUIC fingerprint). With
/// `inventory` (the server's GPUs and NICs) workers are pinned to the CPUs
/// near their GPUs (`pin_workers`), and with a broker configured the server
/// registers with it and heartbeats.
pub async fn serve(
    cfg: ServerConfig,
    launcher: WorkerLauncher,
    inventory: Option<(Vec<Gpu>, Vec<Nic>)>,
    machine: Vec<MachineGpu>,
    on_ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    let tcp = if cfg.listen_tcp.is_empty() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&cfg.listen_tcp)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on tcp {}: {e}", cfg.listen_tcp))?,
        )
    };
    let quic = if cfg.listen_quic.is_empty() {
        None
    } else {
        let identity: ServerIdentity =
            transport::load_or_create_server_identity(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref(), &cfg.state_dir)?;
        let addr = tokio::net::lookup_host(&cfg.listen_quic)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("no address for {}", cfg.listen_quic))?;
        let endpoint = transport::quic_server_endpoint(&identity, addr)?;
        Some((endpoint, identity.fingerprint))
    };
    if tcp.is_none() && quic.is_none() {
        anyhow::bail!("no listener configured: set listen_tcp and/or listen_quic");
    }
    let bound = Bound {
        tcp: tcp.as_ref().map(|l| l.local_addr()).transpose()?,
        quic: quic
            .as_ref()
            .map(|(e, fp)| e.local_addr().map(|a| (a, fp.clone())))
            .transpose()?,
    };
    let lease_key = match cfg.lease_public_key()? {
        None if !cfg.broker.is_empty() => {
            let cfg = cfg.clone();
            Some(tokio::task::spawn_blocking(move || crate::registration::fetch_public_key(&cfg)).await??)
        }
        key => key,
    };
    if lease_key.is_some() {
        tracing::info!(server = %cfg.server_id, "verifying lease tokens with the broker's public key");
    }
    let endpoint = match inventory {
        Some(_) if !cfg.broker.is_empty() => Some(crate::registration::advertised_url(&cfg, &bound)?),
        _ => None,
    };
    let gpus = inventory.as_ref().map(|(g, _)| g.clone()).unwrap_or_default();
    // Made before the first session, so every worker finds it.
    let ipc = match Registry::create(&cfg.state_dir.join(IPC_DIR)) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(dir = %cfg.state_dir.join(IPC_DIR).display(), "no IPC between sessions: cannot make its registry: {e}");
            None
        }
    };
    on_ready(&bound);
    let daemon = Arc::new(Daemon {
        lease_key,
        cfg,
        sessions: Default::default(),
        gpus,
        machine,
        launcher,
        ipc,
        next_session: AtomicU64::new(1),
        live: AtomicUsize::new(0),
    });
    if let (Some((gpus, nics)), Some(endpoint)) = (inventory, endpoint) {
        tracing::info!(broker = %daemon.cfg.broker, %endpoint, gpus = gpus.len(), "registering with the broker");
        let sessions: Arc<dyn crate::registration::Sessions> = Arc::clone(&daemon) as _;
        crate::registration::start(&daemon.cfg, endpoint, gpus, nics, sessions)?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = tcp {
        let d = Arc::clone(&daemon);
        tasks.spawn(async move { d.accept_tcp(listener).await });
    }
    if let Some((endpoint, _)) = quic {
        let d = Arc::clone(&daemon);
        tasks.spawn(async move { d.accept_quic(endpoint).await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

impl Daemon {
    async fn accept_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let d = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = d.start_tcp(stream).await {
                    tracing::warn!(%peer, "session not started: {e}");
                }
            });
        }
    }

    async fn start_tcp(self: Arc<Self>, mut stream: tokio::net::TcpStream) -> anyhow::Result<()> {
        stream.set_nodelay(true)?;
        let Some((hello, lease)) = self.handshake(&mut stream).await? else {
            return Ok(());
        };
        let std_stream = stream.into_std()?;
        std_stream.set_nonblocking(false)?;
        let fd: OwnedFd = std_stream.into();
        self.spawn_worker(fd, &hello, lease, SessionSocket::Tcp)
    }

    async fn accept_quic(self: Arc<Self>, endpoint: quinn::Endpoint) -> anyhow::Result<()> {
        while let Some(incoming) = endpoint.accept().await {
            let d = Arc::clone(&self);
            tokio::spawn(async move {
                let peer = incoming.remote_address();
                if let Err(e) = d.start_quic(incoming).await {
                    tracing::warn!(%peer, "session not started: {e}");
                }
            });
        }
        Ok(())
    }

    async fn start_quic(self: Arc<Self>, incoming: quinn::Incoming) -> anyhow::Result<()> {
        let connection = incoming.await?;
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await??;
        let mut duplex = Duplex {
            r: &mut recv,
            w: &mut send,
        };
        let Some((hello, lease)) = self.handshake(&mut duplex).await? else {
            return Ok(());
        };
        if self.cfg.quic_direct {
            match self.session_socket(connection.local_ip()) {
                Ok(socket) => {
                    let port = socket.local_addr()?.port();
                    let ticket = random_ticket()?;
                    self.spawn_worker(socket.into(), &hello, lease, SessionSocket::QuicDirect(ticket))?;
                    let mut out = Vec::new();
                    gpupool_proto::frame::encode_frame(
                        &mut out,
                        0,
                        0,
                        &Welcome::Redirect { port, ticket },
                        &[],
                        MAX_HELLO,
                    )?;
                    send.write_all(&out).await?;
                    let _ = send.finish();
                    // The client closes this connection once it has the
                    // redirect; do not drop it before.
                    let _ = tokio::time::timeout(REDIRECT_TIMEOUT, connection.closed()).await;
                    return Ok(());
                }
                Err(e) => tracing::warn!(
                    "no UDP port for a direct QUIC session ({e}); relaying this session through the daemon"
                ),
            }
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        self.spawn_worker(theirs.into(), &hello, lease, SessionSocket::Relayed)?;
        ours.set_nonblocking(true)?;
        let ours = tokio::net::UnixStream::from_std(ours)?;
        let (from_worker, mut to_worker) = ours.into_split();
        // Buffers the size of a copy chunk: a bulk copy crosses the relay in
        // a few large writes rather than thousands of small ones.
        let upstream = async move {
            let mut recv = tokio::io::BufReader::with_capacity(RELAY_BUFFER, &mut recv);
            let _ = tokio::io::copy_buf(&mut recv, &mut to_worker).await;
            let _ = to_worker.shutdown().await;
        };
        let downstream = async move {
            let mut from_worker = tokio::io::BufReader::with_capacity(RELAY_BUFFER, from_worker);
            let _ = tokio::io::copy_buf(&mut from_worker, &mut send).await;
            let _ = send.finish();
            let _ = send.stopped().await;
        };
        tokio::join!(upstream, downstream);
        connection.close(0u32.into(), b"session ended");
        Ok(())
    }

    /// A UDP socket for one direct QUIC session, on the address the client
    /// reached and a port of `quic_session_ports` (any free port when that
    /// is empty).
    fn session_socket(&self, local_ip: Option<std::net::IpAddr>) -> anyhow::Result<std::net::UdpSocket> {
        let ip = local_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let (first, last) = self.cfg.quic_session_port_range()?;
        let mut last_error = None;
        for port in first..=last {
            match std::net::UdpSocket::bind((ip, port)) {
                Ok(s) => return Ok(s),
                Err(e) => last_error = Some(e),
            }
        }
        Err(anyhow::anyhow!(
            "ports {first}-{last} on {ip}: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        ))
    }

    /// Read and check the hello. `None` means the client was refused (and
    /// told why); otherwise the hello, with the lease it holds when it
    /// presented a token.
    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> anyhow::Result<Option<(Hello, Option<LeaseClaims>)>> {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream))
            .await
            .map_err(|_| anyhow::anyhow!("no hello within {HELLO_TIMEOUT:?}"))??;
        let mut lease = None;
        let refusal = if let Err(e) = hello.validate() {
            Some(e.to_string())
        } else if let Err(reason) = check_lease(
            self.lease_key.as_ref(),
            self.cfg.require_lease,
            &self.cfg.server_id,
            hello.lease_token.as_deref(),
            unix_ms_now(),
        )
        .map(|claims| lease = claims)
        {
            Some(reason)
        } else if let Some(Err(reason)) = lease.as_ref().map(|l| lease_devices(&self.gpus, l)) {
            Some(format!("server {}: {reason}", self.cfg.server_id))
        } else if self.live.load(Ordering::Relaxed) >= self.cfg.max_sessions {
            Some(format!(
                "server {} is at its limit of {} sessions",
                self.cfg.server_id, self.cfg.max_sessions
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::warn!(client = ?hello.client, "refusing session: {reason}");
            let mut out = Vec::new();
            gpupool_proto::frame::encode_frame(&mut out, 0, 0, &Welcome::Refused { reason }, &[], MAX_HELLO)?;
            stream.write_all(&out).await?;
            stream.flush().await?;
            return Ok(None);
        }
        Ok(Some((hello, lease)))
    }

    fn spawn_worker(
        self: &Arc<Self>,
        fd: OwnedFd,
        hello: &Hello,
        lease: Option<LeaseClaims>,
        socket: SessionSocket,
    ) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let client = format!("{}/{}/{}", hello.client.host, hello.client.pid, hello.client.program);
        let mut cmd = std::process::Command::new(&self.launcher.exe);
        cmd.arg("worker").arg("--session").arg(session.to_string());
        if let Some(c) = &self.launcher.config_file {
            cmd.arg("--config").arg(c);
        }
        cmd.env("GPUPOOL_CLIENT", &client);
        // The devices the session may use: its lease's GPUs (by UUID, which
        // the worker's driver finds whatever this daemon shows), else those
        // this daemon's own CUDA_VISIBLE_DEVICES shows, else all. The
        // client's CUDA_VISIBLE_DEVICES picks among them, read against that
        // list; the worker's driver numbers them from 0 for the session, as
        // for a local program.
        let leased = lease.as_ref().and_then(|l| lease_devices(&self.gpus, l).ok());
        let own = leased.or_else(|| std::env::var("CUDA_VISIBLE_DEVICES").ok());
        let client_value = match &hello.visible_devices {
            Some(v) if v.len() <= visible::MAX_LEN && !v.contains('\0') => Some(v.as_str()),
            Some(_) => {
                tracing::warn!(client = %client, "ignoring a CUDA_VISIBLE_DEVICES too long or holding a NUL byte");
                None
            }
            None => None,
        };
        match (client_value, own) {
            (Some(v), own) => {
                cmd.env("CUDA_VISIBLE_DEVICES", visible::compose(own.as_deref(), v));
            }
            (None, Some(own)) if lease.is_some() => {
                cmd.env("CUDA_VISIBLE_DEVICES", own);
            }
            (None, _) => {}
        }
        // The GPUs NVML describes to the session: the machine's, or its
        // lease's.
        let machine = match &lease {
            Some(l) => {
                let uuids: Vec<[u8; 16]> = self
                    .machine
                    .iter()
                    .map(|g| g.uuid)
                    .filter(|u| l.gpus.iter().any(|lg| lg.uuid == gpu_uuid_string(u)))
                    .collect();
                MachineGpu::keep_only(&self.machine, &uuids)
            }
            None => self.machine.clone(),
        };
        if let Ok(text) = serde_json::to_string(&machine) {
            cmd.env(MACHINE_ENV, text);
        }
        // The driver's own variables the program set (CUDA_LAUNCH_BLOCKING,
        // CUDA_DEVICE_MAX_CONNECTIONS, ...) are the worker's driver's.
        for (name, value) in gpupool_proto::handshake::accepted_driver_env(&hello.driver_env) {
            cmd.env(name, value);
        }
        cmd.env_remove(RELAYED_ENV).env_remove(TICKET_ENV);
        match socket {
            SessionSocket::Tcp => {}
            SessionSocket::Relayed => {
                cmd.env(RELAYED_ENV, "1");
            }
            SessionSocket::QuicDirect(ticket) => {
                cmd.env(TICKET_ENV, hex(&ticket));
            }
        }
        let cpus = if self.cfg.pin_workers {
            worker_cpus(&self.gpus, lease.as_ref())
        } else {
            Vec::new()
        };
        let cpu_set = CpuSet::new(&cpus);
        let raw = fd.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls run:
        // dup2 puts the session's socket at fd 3 (clearing close-on-exec),
        // prctl ties the worker's life to the daemon's, sched_setaffinity
        // pins it (the set was built before the fork; a refusal leaves the
        // worker unpinned, which the daemon reports below).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(set) = &cpu_set {
                    let _ = set.apply(0);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start worker {}: {e}", self.launcher.exe.display()))?;
        drop(fd);
        self.live.fetch_add(1, Ordering::Relaxed);
        let pid = child.id();
        let lease = lease.map(|c| c.lease_id);
        tracing::info!(session, client = %client, pid, lease = %lease.as_deref().unwrap_or("-"), "session started");
        if cpu_set.is_some() {
            match affinity_of(pid as i32) {
                Some(now) if now == cpus => {
                    tracing::info!(session, cpus = ?cpus, "worker pinned to the CPUs near its GPUs")
                }
                now => {
                    tracing::warn!(session, wanted = ?cpus, now = ?now, "could not pin the worker to the CPUs near its GPUs")
                }
            }
        }
        self.sessions_lock().insert(
            session,
            LiveSession {
                pid,
                lease,
                started: Instant::now(),
            },
        );
        let d = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("session-{session}"))
            .spawn(move || {
                wait_without_reaping(pid);
                d.sessions_lock().remove(&session);
                let status = child.wait();
                // Its handles name nothing any more, however it ended.
                if let Some(ipc) = &d.ipc {
                    ipc.remove_session(session);
                }
                d.live.fetch_sub(1, Ordering::Relaxed);
                match status {
                    Ok(s) if s.success() => tracing::info!(session, "worker exited"),
                    Ok(s) => tracing::warn!(session, "worker exited abnormally: {s}"),
                    Err(e) => tracing::warn!(session, "cannot wait for worker: {e}"),
                }
            })?;
        Ok(())
    }
}

impl Daemon {
    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, LiveSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::registration::Sessions for Daemon {
    fn end_unleased(&self, active: &[u64], asked: Instant) -> usize {
        let sessions = self.sessions_lock();
        let mut ended = 0;
        for (id, s) in sessions.iter() {
            let Some(lease) = &s.lease else { continue };
            if s.started >= asked || active.iter().any(|a| a.to_string() == *lease) {
                continue;
            }
            tracing::warn!(
                session = id,
                lease = %lease,
                "ending the session: its lease is no longer active at the broker (lost, preempted or released)"
            );
            // SAFETY: plain syscall on a pid that is ours and not yet reaped
            // (entries leave the table before their worker is reaped, and
            // the table is locked).
            if unsafe { libc::kill(s.pid as libc::pid_t, libc::SIGKILL) } == 0 {
                ended += 1;
            }
        }
        ended
    }
}

/// The CPUs a session's worker runs on: those near the GPUs of its lease, or
/// near any GPU of this server for a session without one. Empty when the
/// GPUs name none (no sysfs entry, as on the software driver).
pub fn worker_cpus(gpus: &[Gpu], lease: Option<&LeaseClaims>) -> Vec<u32> {
    let mut cpus: Vec<u32> = gpus
        .iter()
        .filter(|g| lease.is_none_or(|l| l.gpus.iter().any(|lg| lg.uuid == g.uuid)))
        .flat_map(|g| g.local_cpus.iter().copied())
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The `CUDA_VISIBLE_DEVICES` that shows a session the GPUs of its lease,
/// in the lease's order: their UUIDs. A lease naming a GPU this server does
/// not have is refused, with the reason.
pub fn lease_devices(gpus: &[Gpu], lease: &LeaseClaims) -> Result<String, String> {
    if lease.gpus.is_empty() {
        return Err(format!("lease {} names no GPU", lease.lease_id));
    }
    let mut uuids = Vec::with_capacity(lease.gpus.len());
    for g in &lease.gpus {
        if !gpus.iter().any(|own| own.uuid == g.uuid) {
            return Err(format!(
                "lease {} names GPU {}, which this server does not have",
                lease.lease_id, g.uuid
            ));
        }
        if g.uuid.contains(',') {
            return Err(format!("lease {} names a GPU as {:?}", lease.lease_id, g.uuid));
        }
        uuids.push(g.uuid.as_str());
    }
    Ok(uuids.join(","))
}

/// Wait until the process `pid` (a child) has exited, leaving it to be
/// reaped afterwards.
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: waitid with WNOWAIT only reads the child's state into
        // `info`, a zeroed siginfo_t we own.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Checks a client's lease token against the broker's public key, without
/// asking the broker: signature, expiry, and that it names this server.
/// Without a key, only `require_lease` asks that some token be present.
pub fn check_lease(
    key: Option<&LeasePublicKey>,
    require_lease: bool,
    server_id: &str,
    token: Option<&str>,
    now_ms: u64,
) -> Result<Option<LeaseClaims>, String> {
    match (key, token) {
        (Some(key), Some(token)) => key
            .verify(token, server_id, now_ms)
            .map(Some)
            .map_err(|e| format!("server {server_id} refuses the lease token: {e}")),
        (Some(_), None) => Err(format!(
            "server {server_id} requires a lease token signed by the gpupool broker (set GPUPOOL_LEASE_TOKEN)"
        )),
        (None, None) if require_lease => Err(
            "this server requires a lease token from the gpupool broker (set GPUPOOL_LEASE_TOKEN or GPUPOOL_BROKER)"
                .into(),
        ),
        (None, _) => Ok(None),
    }
}

async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Hello, ProtoError> {
    let mut hb = [0u8; HEADER_LEN];
    stream.read_exact(&mut hb).await?;
    let header = FrameHeader::decode(&hb, MAX_HELLO)?;
    if header.bulk_len != 0 {
        return Err(ProtoError::Malformed("hello carries bulk data".into()));
    }
    let mut msg = vec![0u8; header.msg_len as usize];
    stream.read_exact(&mut msg).await?;
    codec::decode(&msg)
}

/// A QUIC stream pair as one async read/write object.
struct Duplex<'a> {
    r: &'a mut quinn::RecvStream,
    w: &'a mut quinn::SendStream,
}

impl AsyncRead for Duplex<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.r).poll_read(cx, buf)
    }
}

impl AsyncWrite for Duplex<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(std::pin::Pin::new(&mut *self.w), cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(std::pin::Pin::new(&mut *self.w), cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut *self.w), cx)
    }
}

/// Run one session in this (worker) process over the socket at `fd`.
pub fn run_worker(cfg: &ServerConfig, session_id: u64, fd: OwnedFd) -> anyhow::Result<()> {
    let client = std::env::var("GPUPOOL_CLIENT").unwrap_or_default();
    let span = tracing::info_span!("session", id = session_id, client = %client);
    let _enter = span.enter();
    if let Ok(ticket) = std::env::var(TICKET_ENV) {
        let ticket = parse_ticket(&ticket).ok_or_else(|| anyhow::anyhow!("{TICKET_ENV} is not a session ticket"))?;
        let identity =
            transport::load_or_create_server_identity(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref(), &cfg.state_dir)?;
        let listener = transport::DirectQuicListener::new(std::net::UdpSocket::from(fd), &identity)?;
        let mut stream = accept_redirected(&listener, &ticket, Instant::now() + REDIRECT_TIMEOUT)?;
        let result = serve_session(cfg, session_id, &mut stream.reader, &mut stream.writer);
        stream.writer.finish(Duration::from_secs(1));
        stream.close("session ended");
        return result;
    }
    let reader = std::fs::File::from(fd);
    let mut writer = reader.try_clone()?;
    // A client's TCP socket is polled between requests; a QUIC session's
    // socket pair is fed by the daemon's runtime, which polling would only
    // starve of a core.
    let relayed = std::env::var_os(RELAYED_ENV).is_some();
    let poll = if relayed { 0 } else { cfg.poll_us };
    let mut reader = transport::Polling::new(transport::SocketRead(reader), Duration::from_micros(poll));
    serve_session(cfg, session_id, &mut reader, &mut writer)
}

/// Wait for the redirected client: the first connection whose hello carries
/// `ticket`. Others are refused and closed; at `deadline` the worker gives up.
fn accept_redirected(
    listener: &transport::DirectQuicListener,
    ticket: &[u8; 32],
    deadline: Instant,
) -> anyhow::Result<transport::DirectQuicStream> {
    loop {
        let mut stream = listener
            .accept(deadline)
            .map_err(|e| anyhow::anyhow!("the redirected client did not arrive: {e}"))?;
        stream.reader.set_deadline(Some(deadline));
        let mut msg = Vec::new();
        let hello = gpupool_proto::frame::read_frame(&mut stream.reader, &mut msg, MAX_HELLO).and_then(|h| {
            gpupool_proto::frame::skip_bulk(&mut stream.reader, h.bulk_len)?;
            codec::decode::<Hello>(&msg)
        });
        stream.reader.set_deadline(None);
        let refusal = match &hello {
            Ok(h) if h.validate().is_err() => Some("hello is not valid".to_string()),
            Ok(h) if h.session_ticket.is_some_and(|t| same_ticket(&t, ticket)) => None,
            Ok(_) => Some("this port serves another session".to_string()),
            Err(e) => Some(format!("no hello: {e}")),
        };
        let Some(reason) = refusal else {
            return Ok(stream);
        };
        tracing::warn!(peer = %stream.peer, "refusing a connection to the session's port: {reason}");
        let mut scratch = Vec::new();
        let _ = gpupool_proto::frame::write_frame(
            &mut stream.writer,
            &mut scratch,
            0,
            0,
            &Welcome::Refused { reason },
            &[],
            MAX_HELLO,
        );
        stream.writer.finish(Duration::from_millis(200));
        stream.close("refused");
    }
}

/// 32 bytes from the kernel's random source.
fn random_ticket() -> std::io::Result<[u8; 32]> {
    let mut ticket = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut ticket)?;
    Ok(ticket)
}

/// Compare tickets in time independent of where they differ.
fn same_ticket(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_ticket(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Serve one session: load the driver, welcome the client, run its requests
/// until it goes, and free what it held.
fn serve_session<R: gpupool_proto::transport::WaitRead, W: Write>(
    cfg: &ServerConfig,
    session_id: u64,
    reader: &mut R,
    writer: &mut W,
) -> anyhow::Result<()> {
    use crate::worker::{SessionEnd, Worker};
    let driver = match crate::driver::Driver::load(&cfg.driver) {
        Ok(d) => d,
        Err(e) => {
            let reason = match (&e, std::env::var("CUDA_VISIBLE_DEVICES")) {
                // The client's CUDA_VISIBLE_DEVICES (its worker's) shows none.
                (crate::driver::LoadError::Init { status: 100, .. }, Ok(v)) => {
                    let reason = format!(
                        "CUDA_VISIBLE_DEVICES={v:?} shows none of server {}'s GPUs",
                        cfg.server_id
                    );
                    tracing::info!("{reason}");
                    reason
                }
                _ => {
                    let reason = format!("server {} cannot serve GPUs: {e}", cfg.server_id);
                    tracing::error!("{reason}");
                    reason
                }
            };
            let mut scratch = Vec::new();
            gpupool_proto::frame::write_frame(
                writer,
                &mut scratch,
                0,
                0,
                &Welcome::Refused { reason },
                &[],
                MAX_HELLO,
            )?;
            return Ok(());
        }
    };
    let mut info = Worker::session_info(&driver, session_id, &cfg.server_id, cfg.simulated);
    if let Some(machine) = std::env::var(MACHINE_ENV)
        .ok()
        .and_then(|m| serde_json::from_str::<Vec<MachineGpu>>(&m).ok())
    {
        info.machine = machine;
    }
    let images = ImageCache::open(&cfg.state_dir.join("images"), cfg.image_cache_mib << 20);
    let ipc = match Registry::open(&cfg.state_dir.join(IPC_DIR)) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!("no IPC registry: {e}");
            None
        }
    };
    // A kernel's printf output, and a failed device assert's message, go to
    // the client (this is the session's own process: its standard output
    // and standard error are the client's from now on; its log lines keep
    // going where standard error went).
    let output = crate::worker::output::Captured::stdout()
        .map_err(|e| tracing::warn!("the driver's output stays on the server: {e}"))
        .ok();
    let errors = crate::move_logs_off_stderr()
        .and_then(|()| crate::worker::output::Captured::stderr())
        .map_err(|e| tracing::warn!("the driver's error output stays on the server: {e}"))
        .ok();
    let mut worker = Worker::new(&driver, session_id, cfg.max_frame)
        .with_image_cache(images)
        .with_ipc(ipc)
        .with_output(output.into_iter().chain(errors).collect());
    worker.welcome(writer, info)?;
    let (end, freed) = worker.serve(reader, writer);
    let how = match &end {
        SessionEnd::Disconnected => "client disconnected".to_string(),
        SessionEnd::ProtocolViolation(why) => format!("protocol violation: {why}"),
        SessionEnd::Io(why) => format!("connection failed: {why}"),
    };
    if matches!(end, SessionEnd::ProtocolViolation(_)) {
        tracing::warn!("session ended ({how}); closing it");
    }
    tracing::info!(
        calls = worker.calls,
        allocations = freed.allocations,
        bytes = freed.bytes,
        streams = freed.streams,
        events = freed.events,
        modules = freed.modules,
        contexts = freed.contexts,
        "session ended ({how}): freed {} allocations ({} bytes), {} streams, {} events, {} modules, {} contexts",
        freed.allocations,
        freed.bytes,
        freed.streams,
        freed.events,
        freed.modules,
        freed.contexts
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpupool_proto::lease::{LeaseGpu, LeaseSigner};

    fn token(signer: &LeaseSigner, server: &str, expires_at_ms: u64) -> String {
        signer.sign(&LeaseClaims {
            lease_id: "12".into(),
            server_id: server.into(),
            gpus: vec![LeaseGpu {
                uuid: "GPU-0".into(),
                compute_milli: 500,
                memory_mib: 2048,
            }],
            tenant: "t".into(),
            issued_at_ms: 1_000,
            expires_at_ms,
        })
    }

    #[test]
    fn tickets_round_trip_through_hex_and_compare_whole() {
        let ticket: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let text = hex(&ticket);
        assert_eq!(text.len(), 64);
        assert_eq!(parse_ticket(&text), Some(ticket));
        assert_eq!(parse_ticket(&text[..62]), None);
        assert_eq!(parse_ticket(&format!("{}zz", &text[..62])), None);
        let mut other = ticket;
        other[31] ^= 0x80;
        assert!(same_ticket(&ticket, &ticket));
        assert!(!same_ticket(&ticket, &other));
    }

    #[test]
    fn workers_run_near_and_show_the_gpus_of_their_lease() {
        let gpu = |uuid: &str, cpus: &[u32]| Gpu {
            local_cpus: cpus.to_vec(),
            ..Gpu::plain(uuid, "H100", 80 << 10)
        };
        let gpus = vec![gpu("GPU-a", &[2, 3]), gpu("GPU-b", &[0, 1]), gpu("GPU-c", &[0, 1])];
        let claims = |uuids: &[&str]| LeaseClaims {
            lease_id: "1".into(),
            server_id: "s".into(),
            gpus: uuids
                .iter()
                .map(|u| gpupool_proto::lease::LeaseGpu {
                    uuid: u.to_string(),
                    compute_milli: 1000,
                    memory_mib: 1,
                })
                .collect(),
            tenant: "t".into(),
            issued_at_ms: 0,
            expires_at_ms: 1,
        };
        assert_eq!(worker_cpus(&gpus, Some(&claims(&["GPU-a"]))), vec![2, 3]);
        assert_eq!(worker_cpus(&gpus, Some(&claims(&["GPU-b", "GPU-c"]))), vec![0, 1]);
        assert_eq!(worker_cpus(&gpus, None), vec![0, 1, 2, 3]);
        assert!(worker_cpus(&gpus, Some(&claims(&["GPU-z"]))).is_empty());
        // A session's worker shows the lease's GPUs, in the lease's order;
        // a lease naming a GPU this server lacks, or none, is refused.
        assert_eq!(
            lease_devices(&gpus, &claims(&["GPU-c", "GPU-a"])).unwrap(),
            "GPU-c,GPU-a"
        );
        let refused = lease_devices(&gpus, &claims(&["GPU-a", "GPU-z"])).unwrap_err();
        assert!(refused.contains("GPU-z, which this server does not have"), "{refused}");
        assert!(lease_devices(&gpus, &claims(&[])).is_err());
    }

    #[test]
    fn lease_tokens_are_verified_without_the_broker() {
        let broker = LeaseSigner::from_seed([3; 32]);
        let key = broker.public_key();
        let good = token(&broker, "gpu-a", 10_000);
        let claims = check_lease(Some(&key), false, "gpu-a", Some(&good), 5_000)
            .unwrap()
            .unwrap();
        assert_eq!(claims.lease_id, "12");
        let refused = |token: Option<&str>, server: &str, now: u64| {
            check_lease(Some(&key), false, server, token, now).unwrap_err()
        };
        assert!(refused(Some(&good), "gpu-a", 10_000).contains("expired"));
        assert!(refused(Some(&good), "gpu-b", 5_000).contains("not this server"));
        assert!(refused(None, "gpu-a", 5_000).contains("requires a lease token"));
        let forged = token(&LeaseSigner::from_seed([4; 32]), "gpu-a", 10_000);
        assert!(refused(Some(&forged), "gpu-a", 5_000).contains("signature"));
        let mut tampered = good.clone();
        tampered.insert(10, 'A');
        assert!(refused(Some(&tampered), "gpu-a", 5_000).contains("refuses the lease token"));
        // Without a key: presence only, and only when required.
        assert!(check_lease(None, true, "gpu-a", None, 0).is_err());
        assert_eq!(check_lease(None, true, "gpu-a", Some("anything"), 0), Ok(None));
        assert_eq!(check_lease(None, false, "gpu-a", None, 0), Ok(None));
    }

    #[test]
    fn public_key_is_read_as_text_or_from_a_file() {
        let key = LeaseSigner::from_seed([5; 32]).public_key();
        let mut cfg = ServerConfig::default();
        assert_eq!(cfg.lease_public_key().unwrap(), None);
        cfg.apply_env(|k| (k == "GPUPOOL_BROKER_PUBLIC_KEY").then(|| key.to_text()))
            .unwrap();
        assert_eq!(cfg.lease_public_key().unwrap(), Some(key));
        let path = std::env::temp_dir().join(format!("gpupool-broker-key-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", key.to_text())).unwrap();
        cfg.broker_public_key = Some(path.display().to_string());
        assert_eq!(cfg.lease_public_key().unwrap(), Some(key));
        std::fs::write(&path, "ed25519:short").unwrap();
        assert!(cfg.lease_public_key().is_err());
        let _ = std::fs::remove_file(&path);
        cfg.broker_public_key = Some("/no/such/key/file".into());
        assert!(cfg.lease_public_key().is_err());
    }
}
