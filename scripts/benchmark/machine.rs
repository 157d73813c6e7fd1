//! What the run happened on and left behind: the machine (CPUs, memory, kernel, load), the
//! service logs' summary, and the files on disk (tmpfs or not, line counts, sizes).

use super::*;

pub(super) struct Machine {
    pub(super) cpus: usize,
    pub(super) cpu_model: String,
    pub(super) mem_total_kib: u64,
    pub(super) kernel: String,
    pub(super) load_before: String,
}

impl Machine {
    pub(super) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map_or_else(|| "unknown model".into(), |(_, m)| m.trim().to_string()),
            mem_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix(" kB"))
                .and_then(|kib| kib.trim().parse().ok())
                .unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_before: read_trimmed("/proc/loadavg"),
        }
    }

    pub(super) fn print(&self) {
        println!(
            "machine: {} CPUs ({}), {} RAM, kernel {}",
            self.cpus,
            self.cpu_model,
            mib(self.mem_total_kib),
            self.kernel
        );
        println!("load average: {}", self.load_before);
    }
}

pub(super) fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Errors and warnings the services logged, apart from the console channel's one WARN line per
/// notification, which is its job.
pub(super) fn log_summary(dir: &Path) -> String {
    let mut errors = 0;
    let mut warnings = 0;
    let mut examples = Vec::new();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let level = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .map(|v| {
                    let level = v["level"].as_str().unwrap_or("").to_string();
                    let console = v["target"].as_str().unwrap_or("").contains("console");
                    (level, console)
                });
            match level {
                Some((level, _)) if level == "ERROR" => errors += 1,
                Some((level, false)) if level == "WARN" => warnings += 1,
                Some(_) => continue,
                // Not a JSON log line: a panic message or similar, always worth showing.
                None => errors += 1,
            }
            if examples.len() < 5 {
                examples.push(format!("    {line}"));
            }
        }
    }
    let mut summary = format!(
        "service logs: {errors} error and {warnings} warning lines (besides console notifications) in {} files",
        logs.len()
    );
    for example in examples {
        summary.push('\n');
        summary.push_str(&example);
    }
    summary
}

pub(super) fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs reads a valid C string and writes the zeroed local struct it is given.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &raw mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    }
}

/// Lines in a file, or `None` if it cannot be read (e.g. the file channel is off).
pub(super) fn count_lines(path: &Path) -> Option<usize> {
    let bytes = std::fs::read(path).ok()?;
    Some(bytes.iter().filter(|&&b| b == b'\n').count())
}

pub(super) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
