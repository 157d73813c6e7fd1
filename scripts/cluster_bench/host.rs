//! A host of its own for an instance, on a machine that has one: a cgroup with a CPU quota.
//!
//! In a deployment every instance runs on a host of its own and only the database is shared.
//! On one machine the instances share its cores with each other, with PostgreSQL and with the
//! load generator, so a second and third instance add processes, not CPU. Confining each
//! instance to the same quota in the one-instance and the three-instance phase gives each a
//! fixed "host" and leaves the rest to the database and the load: then three instances against
//! one measures what the figure asks about (does the shared database let the instances' work add
//! up, or does it collapse under lock contention), not how three processes share two cores.
//!
//! cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`) are both handled; creating a cgroup needs
//! root, which is why this is an option of the bench and not how it runs by default.

use std::path::{Path, PathBuf};

use super::Result;

/// A cgroup limiting its processes to `cores` of CPU, removed when dropped (after its
/// processes have exited: see [`super::Process`]).
pub struct Host {
    path: PathBuf,
}

impl Host {
    /// A new cgroup named `name` with a quota of `cores` (e.g. 0.3 = 3 ms of every 10 ms).
    pub fn new(name: &str, cores: f64) -> Result<Host> {
        Self::create(name, cores).map_err(|e| {
            format!("--host-cores: could not create cgroup {name} (it needs root): {e}").into()
        })
    }

    fn create(name: &str, cores: f64) -> Result<Host> {
        // A short period: a host that runs out of quota stalls for at most the rest of 10 ms (the
        // default 100 ms would add stalls to the tail that no real host of that size has).
        const PERIOD_US: u64 = 10_000;
        let quota = ((cores * PERIOD_US as f64) as u64).max(1_000);
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let path = if unified {
            let path = PathBuf::from("/sys/fs/cgroup").join(name);
            // The root must hand the cpu controller down (a no-op when it already does).
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            std::fs::create_dir_all(&path)?;
            std::fs::write(path.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
            path
        } else {
            let path = PathBuf::from("/sys/fs/cgroup/cpu").join(name);
            std::fs::create_dir_all(&path)?;
            std::fs::write(path.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            std::fs::write(path.join("cpu.cfs_quota_us"), quota.to_string())?;
            path
        };
        Ok(Host { path })
    }

    /// Moves process `pid` (all its threads, and those it starts later) into the cgroup.
    pub fn adopt(&self, pid: u32) -> Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())?;
        Ok(())
    }

    /// How often the quota held a thread back so far (`nr_throttled` in `cpu.stat`).
    pub fn throttled(&self) -> u64 {
        std::fs::read_to_string(self.path.join("cpu.stat"))
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|line| line.strip_prefix("nr_throttled ")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}
