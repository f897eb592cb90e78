//! A fixed CPU share for one process: a cgroup with a CPU quota (cgroup v1
//! `cpu` controller, `cpu.cfs_quota_us`, or cgroup v2 `cpu.max`), so that
//! on one machine each worker replica behaves like a replica on a machine
//! of its own, and adding replicas adds capacity until something shared
//! (PostgreSQL, NATS, the api) saturates.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A short period: a replica that used its share waits at most the rest of
/// it (8.75 ms at 1/8 core), like a slower machine, not a paused one.
const PERIOD_US: u64 = 10_000;
const V1_ROOT: &str = "/sys/fs/cgroup/cpu";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup holding one process, removed on drop.
pub struct CpuQuota {
    dir: PathBuf,
}

impl CpuQuota {
    /// Moves `pid` into a new cgroup `giftcard-bench-<name>` limited to
    /// `share` of one core (0.25 = 2.5 ms of every 10 ms).
    pub fn apply(name: &str, pid: u32, share: f64) -> anyhow::Result<Self> {
        let quota = ((share * PERIOD_US as f64).round() as u64).max(1000);
        let cg = format!("giftcard-bench-{name}-{}", std::process::id());
        let (dir, limit_file, limit) = if Path::new(V1_ROOT).join("cpu.cfs_quota_us").exists() {
            let dir = Path::new(V1_ROOT).join(&cg);
            (dir, "cpu.cfs_quota_us", quota.to_string())
        } else if Path::new(V2_ROOT).join("cgroup.controllers").exists() {
            let dir = Path::new(V2_ROOT).join(&cg);
            (dir, "cpu.max", format!("{quota} {PERIOD_US}"))
        } else {
            anyhow::bail!(
                "no cgroup cpu controller: neither {V1_ROOT}/cpu.cfs_quota_us (cgroup v1) nor \
                 {V2_ROOT}/cgroup.controllers (cgroup v2) exists; run the scale suite as root on a \
                 machine with the cpu controller mounted, or leave it out (--suites)"
            );
        };
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating cgroup {} (the scale suite needs root and a writable cpu controller)",
                dir.display()
            )
        })?;
        let this = Self { dir };
        if limit_file == "cpu.cfs_quota_us" {
            std::fs::write(this.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())
                .context("setting cpu.cfs_period_us")?;
        }
        std::fs::write(this.dir.join(limit_file), limit)
            .with_context(|| format!("setting {limit_file} in {}", this.dir.display()))?;
        std::fs::write(this.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving pid {pid} into {}", this.dir.display()))?;
        Ok(this)
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // The process is gone (or going) by now; a group still holding a
        // process cannot be removed, so give it a moment.
        for _ in 0..20 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
