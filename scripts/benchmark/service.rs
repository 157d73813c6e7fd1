//! The service under test as a child process, and what `/proc` says about it and the machine:
//! CPU time (per process and per thread group), memory, busy time, file-descriptor limits.

use super::*;

/// The running service. Dropping it kills the process, so no exit path (error, panic, Ctrl-C)
/// leaves it behind.
pub(super) struct Service {
    pub(super) child: Child,
    pub(super) base: String,
    pub(super) spawned_at: Instant,
}

impl Service {
    pub(super) fn spawn(
        binary: &Path,
        env: &BTreeMap<&str, String>,
        log: &Path,
        port: u16,
    ) -> Result<Self> {
        let stdout = File::create(log).map_err(|e| format!("log file {}: {e}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let spawned_at = Instant::now();
        let child = Command::new(binary)
            .arg("serve")
            // Only what we set: a stray RUST_LOG or APPROVAL_GATE__* would change the figures.
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned_at,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for this service with room for `connections` keep-alive connections.
    pub(super) fn api(&self, connections: usize) -> Api {
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections)
            // Longer than any long poll the bench opens, short enough to end a hung run.
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("the reqwest client configuration is valid");
        Api {
            base: self.base.clone(),
            http,
        }
    }

    pub(super) async fn wait_ready(&self, deadline: Duration) -> Result<Duration> {
        let api = self.api(1);
        poll_until(deadline, || async {
            api.ready().await.unwrap_or(false).then_some(())
        })
        .await
        .map(|(at, ())| at.duration_since(self.spawned_at))
        .ok_or_else(|| format!("service not ready within {deadline:?}").into())
    }

    pub(super) fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM, then wait for the exit (the graceful path flushes the store); returns how long
    /// the exit took.
    pub(super) async fn stop(mut self, deadline: Duration) -> Result<Duration> {
        let pid = libc::pid_t::try_from(self.pid())?;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (`self` owns it).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!("SIGTERM: {}", std::io::Error::last_os_error()).into());
        }
        let sent = Instant::now();
        while sent.elapsed() < deadline {
            if let Some(status) = self.exited()? {
                if !status.success() {
                    return Err(format!("service exited with {status} after SIGTERM").into());
                }
                return Ok(sent.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(format!("service still running {deadline:?} after SIGTERM").into())
    }

    pub(super) fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().strip_suffix(" kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("{name} missing from {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    pub(super) fn cpu_time(&self) -> Result<Duration> {
        cpu_time(&self.pid().to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time all processes together have used since boot (the busy columns of `/proc/stat`).
pub(super) fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let columns: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = columns[..] else {
        return Err("cannot parse /proc/stat".into());
    };
    Ok(ticks_to_duration(
        user + nice + system + irq + softirq + steal,
    ))
}

pub(super) fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// User plus system CPU time of `/proc/<pid>` (`self` for this process).
pub(super) fn cpu_time(pid: &str) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may contain spaces; fields are counted after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the `)`.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("cannot parse {path}").into());
    };
    Ok(ticks_to_duration(user + system))
}

/// CPU time per thread group of `pid`: threads named alike (`ag-http` ×2, `sled-io-0..6`)
/// are summed under one name, so the figures say which job the service's CPU went to.
pub(super) fn thread_cpu(pid: u32) -> BTreeMap<String, (usize, Duration)> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let name = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        if let Ok(cpu) = cpu_time(&format!("{pid}/task/{tid}")) {
            let entry = groups
                .entry(name.to_string())
                .or_insert((0, Duration::ZERO));
            entry.0 += 1;
            entry.1 += cpu;
        }
    }
    groups
}

pub(super) fn thread_cpu_since(
    pid: u32,
    before: &BTreeMap<String, (usize, Duration)>,
) -> Vec<(String, usize, Duration)> {
    let mut used: Vec<_> = thread_cpu(pid)
        .into_iter()
        .map(|(name, (threads, cpu))| {
            let earlier = before.get(&name).map_or(Duration::ZERO, |(_, cpu)| *cpu);
            (name, threads, cpu.saturating_sub(earlier))
        })
        .filter(|(_, _, cpu)| !cpu.is_zero())
        .collect();
    used.sort_by_key(|(_, _, cpu)| std::cmp::Reverse(*cpu));
    used
}

/// "sled-group-comm 38 µs, ag-http ×2 29 µs, …": CPU µs per create of each thread group.
pub(super) fn by_thread(threads: &[(String, usize, Duration)], creates: usize) -> String {
    threads
        .iter()
        .map(|(name, count, cpu)| {
            let per = cpu.as_secs_f64() * 1e6 / creates.max(1) as f64;
            if *count > 1 {
                format!("{name} ×{count} {per:.0} µs")
            } else {
                format!("{name} {per:.0} µs")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1,000 long polls need 1,000 sockets in both processes (the child inherits the limit).
pub(super) fn raise_fd_limit(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the local struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0
        || limit.rlim_cur >= wanted
    {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the local struct it is given.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } == 0;
    if !raised || limit.rlim_max < wanted {
        eprintln!(
            "warning: open-file limit {} is below the {wanted} sockets this run needs",
            limit.rlim_max
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The API client.
