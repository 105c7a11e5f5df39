//! `gpupool`: the administrator's command line over the broker's API.
//!
//! ```text
//! gpupool [--broker URL] [--token TOKEN] [--json] COMMAND ...
//! ```
//! `--broker` defaults to `GPUPOOL_BROKER_URL` (else http://127.0.0.1:7080),
//! `--token` to `GPUPOOL_BROKER_ADMIN_TOKEN`. The URL may list the brokers of
//! a pool, comma-separated: each call goes on down the list until the leader
//! answers. Tables for people by default; `--json` prints the API's JSON as
//! it came.

use anyhow::{bail, Context};
use gpupool_broker::client::Client;
use serde_json::{json, Value};

const USAGE: &str = "usage: gpupool [--broker URL] [--token TOKEN] [--json] COMMAND

commands:
  pool                              the pool at a glance
  servers                           servers and their state
  gpus                              every GPU with its free capacity
  slices                            every granted GPU or slice
  leases                            leases (active, queued, recently ended)
  lease ID                          one lease, with its token when active
  tenants                           tenants, usage and quotas
  quota set TENANT [--gpus N] [--memory-mib N]
                                    set a tenant's quota (omit a limit to lift it)
  cordon SERVER | uncordon SERVER | drain SERVER
  request (--gpus N | --slice-memory-mib M --compute F) [--model M]
          [--min-memory-mib M] [--server S] [--numa N] [--priority P]
          [--tenant T] [--ttl-ms MS] [--holder TEXT]
                                    request a lease (compute F is a share, 0.25)
  renew ID | release ID
  explain ID                        why a lease was placed where it is
  explain (request options)         what placement would do now, changing nothing
  public-key                        the key GPU servers verify lease tokens with";

fn main() {
    if let Err(e) = run() {
        eprintln!("gpupool: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut url = std::env::var("GPUPOOL_BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:7080".into());
    let mut token = std::env::var("GPUPOOL_BROKER_ADMIN_TOKEN").ok();
    let mut as_json = false;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--broker" => url = args.next().context("--broker needs a URL")?,
            "--token" => token = Some(args.next().context("--token needs a value")?),
            "--json" => as_json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => rest.push(a),
        }
    }
    let client = Client::new(&url, token)?;
    let Some((command, args)) = rest.split_first() else {
        bail!("no command given\n{USAGE}");
    };
    let (value, table): (Value, fn(&Value) -> String) = match (command.as_str(), args) {
        ("pool", []) => (client.call("GET", "/v1/pools", None)?, pool_table),
        ("servers", []) => (client.call("GET", "/v1/servers", None)?, servers_table),
        ("gpus", []) => (client.call("GET", "/v1/gpus", None)?, gpus_table),
        ("slices", []) => (client.call("GET", "/v1/slices", None)?, slices_table),
        ("leases", []) => (client.call("GET", "/v1/leases", None)?, leases_table),
        ("lease", [id]) => (client.call("GET", &format!("/v1/leases/{id}"), None)?, lease_detail),
        ("tenants", []) => (client.call("GET", "/v1/tenants", None)?, tenants_table),
        ("quota", [set, tenant, opts @ ..]) if set == "set" => {
            let o = Options::parse(opts)?;
            let body = json!({
                "max_gpu_milli": o.gpus.map(|g| (g * 1000.0).round() as u64),
                "max_memory_mib": o.memory_mib,
            });
            let v = client.call("PUT", &format!("/v1/tenants/{tenant}/quota"), Some(&body))?;
            (Value::Array(vec![v]), tenants_table)
        }
        ("cordon" | "uncordon" | "drain", [server]) => {
            let v = client.call("POST", &format!("/v1/servers/{server}/{command}"), None)?;
            (Value::Array(vec![v]), servers_table)
        }
        ("request", opts) => {
            let body = Options::parse(opts)?.request()?;
            (client.call("POST", "/v1/leases", Some(&body))?, lease_detail)
        }
        ("renew", [id]) => (
            client.call("POST", &format!("/v1/leases/{id}/renew"), None)?,
            lease_detail,
        ),
        ("release", [id]) => (client.call("DELETE", &format!("/v1/leases/{id}"), None)?, lease_detail),
        ("explain", [id]) if id.parse::<u64>().is_ok() => (
            client.call("GET", &format!("/v1/leases/{id}/explain"), None)?,
            explanation_table,
        ),
        ("explain", opts) => {
            let body = Options::parse(opts)?.request()?;
            (client.call("POST", "/v1/explain", Some(&body))?, explain_table)
        }
        ("public-key", []) => (client.call("GET", "/v1/public-key", None)?, |v| {
            format!("{}\n", s(&v["public_key"]))
        }),
        _ => bail!("unknown command or wrong arguments: {}\n{USAGE}", rest.join(" ")),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", table(&value));
    }
    Ok(())
}

#[derive(Default)]
struct Options {
    gpus: Option<f64>,
    slice_memory_mib: Option<u64>,
    compute: Option<f64>,
    memory_mib: Option<u64>,
    model: Option<String>,
    min_memory_mib: Option<u64>,
    server: Option<String>,
    numa: Option<u16>,
    priority: Option<i32>,
    tenant: Option<String>,
    ttl_ms: Option<u64>,
    holder: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            let num = |what: &str| -> anyhow::Result<f64> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .with_context(|| format!("{what} {v:?} is not a number"))
            };
            let int = |what: &str| {
                v.parse::<u64>()
                    .with_context(|| format!("{what} {v:?} is not a whole number"))
            };
            match flag.as_str() {
                "--gpus" => o.gpus = Some(num("--gpus")?),
                "--slice-memory-mib" => o.slice_memory_mib = Some(int("--slice-memory-mib")?),
                "--compute" => o.compute = Some(num("--compute")?),
                "--memory-mib" => o.memory_mib = Some(int("--memory-mib")?),
                "--model" => o.model = Some(v.clone()),
                "--min-memory-mib" => o.min_memory_mib = Some(int("--min-memory-mib")?),
                "--server" => o.server = Some(v.clone()),
                "--numa" => o.numa = Some(v.parse().with_context(|| format!("--numa {v:?}"))?),
                "--priority" => o.priority = Some(v.parse().with_context(|| format!("--priority {v:?}"))?),
                "--tenant" => o.tenant = Some(v.clone()),
                "--ttl-ms" => o.ttl_ms = Some(int("--ttl-ms")?),
                "--holder" => o.holder = Some(v.clone()),
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        Ok(o)
    }

    fn request(&self) -> anyhow::Result<Value> {
        let mut body = json!({ "priority": self.priority.unwrap_or(0) });
        match (self.gpus, self.slice_memory_mib) {
            (Some(n), None) if n.fract() == 0.0 && (1.0..=255.0).contains(&n) => body["gpus"] = json!(n as u64),
            (None, Some(m)) => {
                let share = self.compute.unwrap_or(1.0);
                if !(share > 0.0 && share <= 1.0) {
                    bail!("--compute is a share of one GPU, above 0 and at most 1 (0.25 is a quarter)");
                }
                body["slice"] = json!({ "memory_mib": m, "compute_milli": (share * 1000.0).round() as u64 });
            }
            _ => bail!("give --gpus N (whole GPUs) or --slice-memory-mib M [--compute SHARE]"),
        }
        let mut set = |k: &str, v: Value| {
            if !v.is_null() {
                body[k] = v;
            }
        };
        set("model", json!(self.model));
        set("min_memory_mib", json!(self.min_memory_mib));
        set("tenant", json!(self.tenant));
        set("ttl_ms", json!(self.ttl_ms));
        set("holder", json!(self.holder));
        if self.server.is_some() || self.numa.is_some() {
            set("locality", json!({ "server": self.server, "numa_node": self.numa }));
        }
        Ok(body)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(t) => t.clone(),
        other => other.to_string(),
    }
}

fn gpus(milli: &Value) -> String {
    milli.as_u64().map_or("-".into(), |m| {
        if m.is_multiple_of(1000) {
            (m / 1000).to_string()
        } else {
            format!("{:.3}", m as f64 / 1000.0)
        }
    })
}

/// Renders rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn pool_table(v: &Value) -> String {
    let mut out = String::new();
    for p in rows(v) {
        out += &format!(
            "pool {}  policy {}  admission {}  preemption {}\nstore      {}\nservers    {}\nGPUs       {} ({} allocated of {})\nfragmentation {:.3}\nleases     {}\npublic key {}\n",
            s(&p["name"]),
            s(&p["policy"]),
            s(&p["admission"]),
            s(&p["preemption"]),
            s(&p["store"]),
            s(&p["servers"]),
            s(&p["gpus"]),
            gpus(&p["allocated_milli"]),
            gpus(&p["capacity_milli"]),
            p["fragmentation"].as_f64().unwrap_or(0.0),
            s(&p["leases"]),
            s(&p["public_key"]),
        );
    }
    out
}

fn servers_table(v: &Value) -> String {
    table(
        &[
            "SERVER",
            "STATE",
            "GPUS",
            "MODELS",
            "ALLOCATED",
            "LEASES",
            "HEARTBEAT",
            "ENDPOINT",
        ],
        rows(v)
            .iter()
            .map(|r| {
                vec![
                    s(&r["name"]),
                    s(&r["state"]).to_lowercase(),
                    s(&r["gpus"]),
                    r["models"]
                        .as_array()
                        .map(|m| m.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    format!("{}/{}", gpus(&r["allocated_milli"]), gpus(&r["capacity_milli"])),
                    s(&r["active_leases"]),
                    format!("{} ms ago", s(&r["last_heartbeat_ms_ago"])),
                    s(&r["endpoint"]),
                ]
            })
            .collect(),
    )
}

fn gpus_table(v: &Value) -> String {
    table(
        &[
            "SERVER", "IDX", "UUID", "MODEL", "MEMORY", "FREE", "FREE MEM", "NUMA", "LEASES",
        ],
        rows(v)
            .iter()
            .map(|r| {
                vec![
                    s(&r["server"]),
                    s(&r["index"]),
                    s(&r["uuid"]),
                    s(&r["model"]),
                    format!("{} MiB", s(&r["memory_mib"])),
                    gpus(&r["free_milli"]),
                    format!("{} MiB", s(&r["free_memory_mib"])),
                    s(&r["numa_node"]),
                    s(&r["leases"]),
                ]
            })
            .collect(),
    )
}

fn slices_table(v: &Value) -> String {
    table(
        &["LEASE", "TENANT", "SERVER", "GPU", "COMPUTE", "MEMORY"],
        rows(v)
            .iter()
            .map(|r| {
                vec![
                    s(&r["lease"]),
                    s(&r["tenant"]),
                    s(&r["server"]),
                    s(&r["gpu_uuid"]),
                    gpus(&r["compute_milli"]),
                    format!("{} MiB", s(&r["memory_mib"])),
                ]
            })
            .collect(),
    )
}

fn lease_row(r: &Value) -> Vec<String> {
    let granted = rows(&r["gpus"])
        .iter()
        .map(|g| format!("{}:{}", s(&g["index"]), gpus(&g["compute_milli"])))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        s(&r["id"]),
        s(&r["tenant"]),
        s(&r["state"]),
        s(&r["server"]),
        if granted.is_empty() { "-".into() } else { granted },
        s(&r["priority"]),
        s(&r["expires_at_ms"]),
        s(&r["reason"]),
    ]
}

const LEASE_HEADER: [&str; 8] = [
    "LEASE",
    "TENANT",
    "STATE",
    "SERVER",
    "GPUS(idx:share)",
    "PRIO",
    "EXPIRES(ms)",
    "REASON",
];

fn leases_table(v: &Value) -> String {
    table(&LEASE_HEADER, rows(v).iter().map(lease_row).collect())
}

fn lease_detail(v: &Value) -> String {
    let mut out = table(&LEASE_HEADER, vec![lease_row(v)]);
    if let Some(t) = v["token"].as_str() {
        out += &format!("endpoint: {}\ntoken: {t}\n", s(&v["endpoint"]));
    }
    out
}

fn tenants_table(v: &Value) -> String {
    table(
        &[
            "TENANT",
            "GPUS USED",
            "GPU QUOTA",
            "MEMORY USED",
            "MEMORY QUOTA",
            "ACTIVE",
            "QUEUED",
        ],
        rows(v)
            .iter()
            .map(|r| {
                vec![
                    s(&r["name"]),
                    gpus(&r["used_gpu_milli"]),
                    gpus(&r["quota"]["max_gpu_milli"]),
                    format!("{} MiB", s(&r["used_memory_mib"])),
                    s(&r["quota"]["max_memory_mib"]),
                    s(&r["active_leases"]),
                    s(&r["queued_leases"]),
                ]
            })
            .collect(),
    )
}

fn explanation_table(v: &Value) -> String {
    let chosen = v["chosen"].as_u64();
    let mut out = format!("policy {}\n", s(&v["policy"]));
    out += &table(
        &["", "SERVER", "GPUS", "TOPOLOGY", "SCORE", "TIE-BREAK"],
        rows(&v["candidates"])
            .iter()
            .enumerate()
            .map(|(i, c)| {
                vec![
                    if chosen == Some(i as u64) {
                        "*".into()
                    } else {
                        String::new()
                    },
                    s(&c["server_name"]),
                    s(&c["gpus"]),
                    s(&c["topology_rank"]),
                    format!("{:.4}", c["score"].as_f64().unwrap_or(f64::NAN)),
                    format!("{:.4}", c["tie_break"].as_f64().unwrap_or(f64::NAN)),
                ]
            })
            .collect(),
    );
    if let Some(note) = v["note"].as_str().filter(|n| !n.is_empty()) {
        out += &format!("note: {note}\n");
    }
    out
}

fn explain_table(v: &Value) -> String {
    format!("{}\n{}", s(&v["outcome"]), explanation_table(&v["explanation"]))
}
