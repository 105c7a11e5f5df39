//! Reading the openb trace's CSV files (plain comma-separated, no quoting,
//! header first). Columns are found by name so that the shorter
//! `multigpu20` pod list, which stops at `gpu_milli`, reads the same way.

use std::path::Path;

use thiserror::Error;

use crate::inventory::{Inventory, Server};

/// A node of the traced cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpus: u32,
    /// Empty for CPU-only nodes.
    pub model: String,
}

/// A task (pod) of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub num_gpu: u8,
    /// Share of one GPU in thousandths (for whole-GPU tasks, 1000).
    pub gpu_milli: u16,
    /// Allowed GPU models; empty means any.
    pub gpu_spec: Vec<String>,
    /// Seconds; absent in pod lists without timestamps.
    pub creation_time: Option<u64>,
}

impl TaskRecord {
    /// GPU demand in thousandths of a GPU.
    pub fn gpu_demand_milli(&self) -> u64 {
        self.num_gpu as u64 * self.gpu_milli as u64
    }
}

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: header lacks column {column:?} (header: {header:?})")]
    MissingColumn {
        file: String,
        column: &'static str,
        header: String,
    },
    #[error("{file} line {line}: {what}")]
    BadField { file: String, line: usize, what: String },
    #[error("{file} has no rows")]
    Empty { file: String },
}

struct Table<'a> {
    file: &'a str,
    columns: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Table<'a> {
    fn parse(file: &'a str, text: &'a str) -> Result<Self, TraceError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| TraceError::Empty { file: file.to_string() })?;
        let columns = header.trim().split(',').map(str::trim).collect();
        let rows = lines
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r').split(',').collect()))
            .collect();
        Ok(Table { file, columns, rows })
    }

    fn column(&self, name: &'static str) -> Result<usize, TraceError> {
        self.columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| TraceError::MissingColumn {
                file: self.file.to_string(),
                column: name,
                header: self.columns.join(","),
            })
    }

    fn number<T: std::str::FromStr>(&self, line: usize, row: &[&str], col: usize, name: &str) -> Result<T, TraceError> {
        let field = row.get(col).map(|f| f.trim()).unwrap_or("");
        field.parse().map_err(|_| TraceError::BadField {
            file: self.file.to_string(),
            line,
            what: format!("{name} = {field:?} is not a number"),
        })
    }
}

/// Parses a node list (`sn,cpu_milli,memory_mib,gpu,model`).
pub fn parse_nodes(file: &str, text: &str) -> Result<Vec<NodeRecord>, TraceError> {
    let table = Table::parse(file, text)?;
    let (sn, cpu, memory, gpu, model) = (
        table.column("sn")?,
        table.column("cpu_milli")?,
        table.column("memory_mib")?,
        table.column("gpu")?,
        table.column("model")?,
    );
    table
        .rows
        .iter()
        .map(|(line, row)| {
            Ok(NodeRecord {
                name: row.get(sn).unwrap_or(&"").trim().to_string(),
                cpu_milli: table.number(*line, row, cpu, "cpu_milli")?,
                memory_mib: table.number(*line, row, memory, "memory_mib")?,
                gpus: table.number(*line, row, gpu, "gpu")?,
                model: row.get(model).unwrap_or(&"").trim().to_string(),
            })
        })
        .collect()
}

/// Parses a pod list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`).
pub fn parse_tasks(file: &str, text: &str) -> Result<Vec<TaskRecord>, TraceError> {
    let table = Table::parse(file, text)?;
    let (name, cpu, memory, num_gpu, gpu_milli) = (
        table.column("name")?,
        table.column("cpu_milli")?,
        table.column("memory_mib")?,
        table.column("num_gpu")?,
        table.column("gpu_milli")?,
    );
    let spec = table.column("gpu_spec").ok();
    let created = table.column("creation_time").ok();
    table
        .rows
        .iter()
        .map(|(line, row)| {
            let num_gpu: u8 = table.number(*line, row, num_gpu, "num_gpu")?;
            let mut milli: u16 = table.number(*line, row, gpu_milli, "gpu_milli")?;
            if num_gpu > 1 && milli == 0 {
                // Multi-GPU tasks are whole GPUs even where the share is blank.
                milli = 1000;
            }
            if milli > 1000 || (num_gpu > 0 && milli == 0) {
                return Err(TraceError::BadField {
                    file: table.file.to_string(),
                    line: *line,
                    what: format!("gpu_milli {milli} with num_gpu {num_gpu}"),
                });
            }
            let gpu_spec = spec
                .and_then(|c| row.get(c))
                .map(|s| {
                    s.split('|')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Ok(TaskRecord {
                name: row.get(name).unwrap_or(&"").trim().to_string(),
                cpu_milli: table.number(*line, row, cpu, "cpu_milli")?,
                memory_mib: table.number(*line, row, memory, "memory_mib")?,
                num_gpu,
                gpu_milli: if num_gpu == 0 { 0 } else { milli },
                gpu_spec,
                creation_time: match created {
                    Some(c) => Some(table.number(*line, row, c, "creation_time")?),
                    None => None,
                },
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads `openb_node_list_all_node.csv` from a trace directory.
pub fn load_nodes(dir: &Path) -> Result<Vec<NodeRecord>, TraceError> {
    let path = dir.join("openb_node_list_all_node.csv");
    parse_nodes(&path.display().to_string(), &read(&path)?)
}

/// Reads `openb_pod_list_<name>.csv` from a trace directory, in creation
/// order (some pod lists are not stored that way; the sort is stable, so
/// lists without timestamps keep file order).
pub fn load_tasks(dir: &Path, name: &str) -> Result<Vec<TaskRecord>, TraceError> {
    let path = dir.join(format!("openb_pod_list_{name}.csv"));
    let mut tasks = parse_tasks(&path.display().to_string(), &read(&path)?)?;
    tasks.sort_by_key(|t| t.creation_time.unwrap_or(0));
    Ok(tasks)
}

/// GPU memory by model. The trace gives none and its tasks ask for no GPU
/// memory, so these only make the inventory realistic; G2/G3 are anonymised
/// models and get a nominal 32 GiB.
fn model_memory_mib(model: &str) -> u64 {
    match model {
        "P100" | "T4" | "V100M16" => 16_384,
        "A10" => 24_576,
        _ => 32_768,
    }
}

/// The traced cluster as an inventory: one server per node, CPU-only nodes
/// included (they take CPU-only tasks).
pub fn inventory(nodes: &[NodeRecord]) -> Inventory {
    Inventory::new(
        nodes
            .iter()
            .map(|n| {
                Server::uniform(
                    n.name.clone(),
                    &n.model,
                    n.gpus as usize,
                    model_memory_mib(&n.model),
                    n.cpu_milli,
                    n.memory_mib,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_pod_list_layouts() {
        let long = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
                    p0,12000,16384,1,460,T4|P100,LS,Running,0,1,0\n\
                    p1,6000,12288,0,0,,LS,Running,1,2,1\n";
        let tasks = parse_tasks("long", long).unwrap();
        assert_eq!(tasks[0].gpu_spec, vec!["T4", "P100"]);
        assert_eq!(tasks[0].gpu_demand_milli(), 460);
        assert_eq!(tasks[1].num_gpu, 0);
        let short = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,2,8,1000\n";
        let tasks = parse_tasks("short", short).unwrap();
        assert_eq!(tasks[0].gpu_demand_milli(), 8000);
        assert!(tasks[0].gpu_spec.is_empty());
        assert_eq!(tasks[0].creation_time, None);
    }

    #[test]
    fn rejects_missing_columns_and_bad_numbers() {
        assert!(matches!(
            parse_tasks("x", "name,cpu_milli\np,1\n"),
            Err(TraceError::MissingColumn {
                column: "memory_mib",
                ..
            })
        ));
        assert!(matches!(
            parse_nodes("x", "sn,cpu_milli,memory_mib,gpu,model\nn,lots,1,0,\n"),
            Err(TraceError::BadField { line: 2, .. })
        ));
        let nodes = parse_nodes("x", "sn,cpu_milli,memory_mib,gpu,model\nn,1,2,8,G2\nc,1,2,0,\n").unwrap();
        let inv = inventory(&nodes);
        assert_eq!(inv.gpu_count(), 8);
        assert_eq!(inv.servers[1].gpus.len(), 0);
    }
}
