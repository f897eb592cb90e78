//! CPU time of the processes under test (and of the load generator itself)
//! over the measured window, from `/proc/<pid>/stat` (user + system time).

use std::collections::BTreeMap;

/// A process to account for: `name=pid` (the process alone) or
/// `name=tree:pid` (the process, every descendant alive at the sample, and
/// the children it has reaped: PostgreSQL's postmaster and its backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    pub pid: i32,
    pub tree: bool,
}

impl std::str::FromStr for Watch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--watch {s:?}: expected NAME=PID or NAME=tree:PID");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (tree, pid) = match rest.strip_prefix("tree:") {
            Some(pid) => (true, pid),
            None => (false, rest),
        };
        Ok(Self {
            name: name.to_owned(),
            pid: pid.parse().map_err(|_| bad())?,
            tree,
        })
    }
}

/// The name the load generator's own CPU time is reported under.
pub const SELF: &str = "loadgen";

/// CPU seconds used so far by each watched process and by this one.
pub fn sample(watch: &[Watch]) -> BTreeMap<String, f64> {
    let ticks = procfs::ticks_per_second() as f64;
    let stats: Vec<procfs::process::Stat> = if watch.iter().any(|w| w.tree) {
        procfs::process::all_processes()
            .map(|all| all.flatten().filter_map(|p| p.stat().ok()).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let own = |pid: i32| {
        procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .ok()
    };
    let mut out = BTreeMap::new();
    for w in watch {
        let Some(root) = own(w.pid) else {
            out.insert(w.name.clone(), f64::NAN);
            continue;
        };
        let mut t = (root.utime + root.stime) as f64;
        if w.tree {
            t += (root.cutime + root.cstime).max(0) as f64;
            t += descendants(&stats, w.pid)
                .map(|s| (s.utime + s.stime) as f64)
                .sum::<f64>();
        }
        out.insert(w.name.clone(), t / ticks);
    }
    if let Ok(me) = procfs::process::Process::myself().and_then(|p| p.stat()) {
        out.insert(SELF.to_owned(), (me.utime + me.stime) as f64 / ticks);
    }
    out
}

/// Every process below `root` in `stats`.
fn descendants(
    stats: &[procfs::process::Stat],
    root: i32,
) -> impl Iterator<Item = &procfs::process::Stat> {
    let mut inside = vec![root];
    let mut found = Vec::new();
    // Parents come before their children in pid order except after pid
    // wrap-around: repeat until nothing new is found.
    loop {
        let before = found.len();
        for s in stats {
            if inside.contains(&s.ppid) && !inside.contains(&s.pid) {
                inside.push(s.pid);
                found.push(s);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.into_iter()
}

/// Per-name difference `after − before` (names missing in either are dropped).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, a)| Some((k.clone(), a - before.get(k)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watch_specs() {
        let w: Watch = "postgres=tree:42".parse().unwrap();
        assert_eq!((w.name.as_str(), w.pid, w.tree), ("postgres", 42, true));
        let w: Watch = "api=7".parse().unwrap();
        assert_eq!((w.name.as_str(), w.pid, w.tree), ("api", 7, false));
        assert!("api".parse::<Watch>().is_err());
        assert!("api=x".parse::<Watch>().is_err());
    }

    #[test]
    fn samples_this_process_and_its_busy_work() {
        let me = std::process::id() as i32;
        let watch = [Watch {
            name: "me".into(),
            pid: me,
            tree: true,
        }];
        let before = sample(&watch);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let used = delta(&before, &sample(&watch));
        assert!(used["me"] >= 0.1, "{used:?}");
        assert!(used[SELF] >= 0.1, "{used:?}");
    }
}
