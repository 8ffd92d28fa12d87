//! `/tasks/oom` events: the kernel's out-of-memory kills in the
//! container's cgroup. On cgroup v1 the memory controller signals an
//! eventfd registered through `cgroup.event_control`; on cgroup2 the
//! `oom_kill` count in `memory.events` grows.

use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::PathBuf;
use std::time::Duration;

use berth_api::containerd::events::TaskOom;
use berth_runtime::cgroups::OomSource;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;

use crate::events::Publisher;

/// Watches `source` for container `id` until the cgroup is gone.
pub fn watch(source: OomSource, id: String, publisher: Publisher) {
    match source {
        OomSource::V1(dir) => {
            if let Some(eventfd) = register_v1(&dir) {
                tokio::spawn(watch_v1(eventfd, dir, id, publisher));
            }
        }
        OomSource::V2(dir) => {
            tokio::spawn(watch_v2(dir, id, publisher));
        }
    }
}

fn register_v1(dir: &std::path::Path) -> Option<EventFd> {
    let control = std::fs::File::open(dir.join("memory.oom_control")).ok()?;
    let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok()?;
    let mut register = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))
        .ok()?;
    register
        .write_all(format!("{} {}", eventfd.as_fd().as_raw_fd(), control.as_raw_fd()).as_bytes())
        .ok()?;
    // The kernel holds its own reference to the control file now.
    Some(eventfd)
}

async fn watch_v1(eventfd: EventFd, dir: PathBuf, id: String, publisher: Publisher) {
    // SAFETY: the AsyncFd owns the eventfd, which stays open until it is dropped.
    let Ok(ready) = (unsafe { AsyncFd::register(eventfd) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = ready.readable().await else { return };
        let _ = guard.try_io(|fd| fd.get_ref().read().map_err(std::io::Error::from));
        guard.clear_ready();
        // The cgroup going away signals too: then the watch ends.
        if !dir.exists() {
            return;
        }
        publisher.publish(
            "/tasks/oom",
            &TaskOom {
                container_id: id.clone(),
            },
        );
    }
}

fn oom_kills(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

async fn watch_v2(dir: PathBuf, id: String, publisher: Publisher) {
    let mut seen = oom_kills(&dir).unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(now) = oom_kills(&dir) else { return };
        if now > seen {
            publisher.publish(
                "/tasks/oom",
                &TaskOom {
                    container_id: id.clone(),
                },
            );
            seen = now;
        }
    }
}
